"""``bigdens clusters``: list the SLURM cluster profiles, or show one's job script."""

from __future__ import annotations

import argparse

HELP = "list SLURM cluster profiles (cluster_configs/*.yaml) or print one's job script"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="a profile name or path: validate it and print its job script")


def run(args: argparse.Namespace) -> int:
    from ..clusters import job_script, list_profiles, load_profile

    if args.name:
        profile = load_profile(args.name)
        print(f"# profile {profile.name} ({profile.path}): {profile.jobs} job(s), "
              f"{profile.threads_per_worker} thread(s) per worker")
        print(job_script(profile))
        return 0
    import yaml

    found = list_profiles()
    if not found:
        print("no cluster profiles found (cluster_configs/*.yaml)")
        return 0
    width = max(map(len, found))
    for name, path in found.items():
        try:
            desc = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        except yaml.YAMLError:
            desc = "(does not parse)"
        print(f"{name:<{width}}  {desc}  [{path}]")
    return 0
