"""One vocabulary across the sub-commands (issue 20 item 4), checked by walking the parser.

``-o/--output`` wherever a command writes a file or folder, ``--threads`` and
``--device`` alike everywhere with the config objects' defaults, ``--split``
a split name, one name for keeping the variance factor, ``--debug`` after the
sub-command, no empty help, warnings captured without replacing the global
hook, and a sub-command that does not import is an error.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bigdens.cli import COMMANDS, CommandImportError, build_parser, main
from bigdens.config import DEVICES, PredictConfig
from bigdens.data import SPLITS
from bigdens.train import TrainConfig

#: Sub-commands (space-separated for nested ones) that write one file or folder, and their old spellings.
WRITERS = {"build": (), "predict": ("--out",), "export": ("--cube",), "charges": (), "plot": (), "calibrate": (), "dft": (),
           "train": (), "finetune": (), "learn": (), "suggest": (), "data import": (), "data relabel": (), "datagen": ()}
#: Sub-commands that write no file of their own (they print, or change a store in place).
READERS = {"describe", "evaluate", "verify", "clusters", "data info"}
#: Sub-commands with ``--threads`` (threads of this process); predict and suggest have ``--threads-per-worker``.
THREADS = {"train", "finetune", "evaluate", "calibrate", "learn"}
#: Sub-commands with ``--device`` -> the config object whose default they show.
DEVICE = {"predict": PredictConfig, "suggest": PredictConfig, "learn": PredictConfig, "train": TrainConfig,
          "finetune": TrainConfig}


def _children(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action, action.choices


def _leaves(parser=None, prefix=""):
    """(name, parser) of every command that runs: ``"predict"``, ``"data import"``, ..."""
    parser = parser or build_parser()
    nested = False
    for _, choices in _children(parser):
        nested = True
        for name, p in choices.items():
            yield from _leaves(p, f"{prefix} {name}".strip())
    if not nested and prefix:
        yield prefix, parser


def _all_parsers(parser=None, name="bigdens"):
    parser = parser or build_parser()
    yield name, parser
    for _, choices in _children(parser):
        for sub, p in choices.items():
            yield from _all_parsers(p, f"{name} {sub}")


def _option(parser: argparse.ArgumentParser, string: str) -> argparse.Action | None:
    return parser._option_string_actions.get(string)


LEAVES = dict(_leaves())


def test_every_command_is_classified():
    assert set(LEAVES) == set(WRITERS) | READERS, "classify a new sub-command in WRITERS or READERS"
    assert {name.split()[0] for name in LEAVES} == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_writers_take_dash_o_output(name):
    parser = LEAVES[name]
    short, long = _option(parser, "-o"), _option(parser, "--output")
    assert short is not None and short is long and long.dest == "output"
    assert long.option_strings == ["-o", "--output"], "old spellings stay out of --help and the messages"
    for old in WRITERS[name]:  # old spellings still parse, into the same destination
        assert _option(parser, old) is long
        assert not re.search(re.escape(old) + r"(?![-\w])", parser.format_help()), old


@pytest.mark.parametrize("name", sorted(READERS))
def test_readers_have_no_output(name):
    assert _option(LEAVES[name], "--output") is None


def test_old_spellings_parse_as_before():
    p = build_parser()
    assert p.parse_args(["predict", "x.xyz", "--out", "a.zarr"]).output == "a.zarr"
    assert p.parse_args(["predict", "x.xyz", "-o", "a.zarr"]).output == "a.zarr"
    assert p.parse_args(["export", "s.zarr", "--cube", "d.cube"]).output == "d.cube"
    assert p.parse_args(["finetune", "m", "d", "--keep-calibration", "-o", "x"]).keep_variance is True
    assert p.parse_args(["finetune", "m", "d", "--keep-variance", "-o", "x"]).keep_variance is True


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_threads_and_device_are_one_vocabulary(name):
    parser = LEAVES[name]
    threads, device = _option(parser, "--threads"), _option(parser, "--device")
    assert (threads is not None) == (name in THREADS)
    if threads is not None:
        assert threads.type is int and threads.default is None and threads.dest == "threads"
        assert threads.help == _option(LEAVES["train"], "--threads").help
    assert (device is not None) == (name in DEVICE)
    if device is not None:
        assert tuple(device.choices) == DEVICES
        config = DEVICE[name]
        assert device.default == next(f.default for f in __import__("dataclasses").fields(config)
                                      if f.name == "device")
        assert f"(default {device.default})" in device.help


def test_split_is_a_split_name_everywhere():
    # Where --split is a visible option it takes a split name; an old spelling kept as a hidden alias is not one.
    with_split = {name: a for name, p in LEAVES.items()
                  if (a := _option(p, "--split")) is not None and "--split" in a.option_strings}
    assert {"evaluate", "calibrate", "data import"} <= set(with_split)
    assert "datagen" not in with_split  # its fractions are --split-fractions (old --split: a hidden alias)
    for name, action in with_split.items():
        assert tuple(action.choices) == SPLITS and action.nargs is None, name


def test_one_name_for_keeping_the_variance_factor():
    for name in ("calibrate", "finetune"):
        action = _option(LEAVES[name], "--keep-variance")
        assert action is not None and action.dest == "keep_variance" and action.option_strings == ["--keep-variance"]
    for name, p in LEAVES.items():
        assert not re.search(r"--keep-calibration(?![-\w])", p.format_help()), name


def test_no_empty_help():
    for name, parser in _all_parsers():
        for action in parser._actions:
            assert action.help and action.help is not argparse.SUPPRESS and action.help.strip(), \
                f"{name}: {action.option_strings or action.dest} has no help"
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help and choice.help.strip(), f"{name} {choice.dest} has no help"
                assert len(action._choices_actions) == len(set(map(id, action.choices.values())))


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_debug_after_the_sub_command(name):
    parser = LEAVES[name]
    assert _option(parser, "--debug") is not None
    # Before or after: the same flag; left out: False (a sub-command's --debug does not reset the top-level one).
    p = build_parser()
    base = {"predict": ["x.xyz", "-o", "a.zarr"], "export": ["s", "-o", "d.cube"]}.get(name)
    if base is not None:
        assert p.parse_args([name, *base, "--debug"]).debug is True
        assert p.parse_args(["--debug", name, *base]).debug is True
        assert p.parse_args([name, *base]).debug is False


def test_debug_after_the_sub_command_shows_the_traceback(tmp_path, monkeypatch, capsys):
    from bigdens.errors import BigdensError

    monkeypatch.chdir(tmp_path)
    assert main(["describe", "missing.xyz"]) == 2
    assert "does not exist" in capsys.readouterr().err
    for argv in (["describe", "missing.xyz", "--debug"], ["--debug", "describe", "missing.xyz"],
                 ["data", "info", "missing", "--debug"]):
        with pytest.raises(BigdensError):
            main(argv)


def test_usage_errors_are_one_line(capsys):
    for argv, prog, text in [
        (["predict", "x.xyz"], "bigdens predict", "the following arguments are required: -o/--output"),
        (["train", "d", "-o", "m", "--device", "tpu"], "bigdens train",
         "argument --device: invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda')"),
        (["export", "s", "-o", "d.cube", "--bogus"], "bigdens export", "unrecognized arguments: --bogus"),
        (["data", "import", "f"], "bigdens data import", "the following arguments are required: -o/--output"),
    ]:
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"{prog}: error: {text}; see `{prog} --help`\n"


def test_warnings_are_shown_live_and_the_hook_is_restored(monkeypatch, capsys):
    # predict shows each warning as one line as soon as it is raised (a long run's worker restart must not
    # wait for the summary), through catch_warnings(), and leaves the process's hook as it found it.
    from bigdens.cli import predict

    seen = []

    def fake_run(args):
        warnings.warn("something to know", UserWarning)
        seen.append(capsys.readouterr().err)  # already printed, before the command returns
        return 0

    monkeypatch.setattr(predict, "_run", fake_run)
    hook = warnings.showwarning
    assert main(["predict", "x.xyz", "-o", "a.zarr"]) == 0
    assert warnings.showwarning is hook
    assert seen == ["bigdens predict: warning: something to know\n"]
    # No other command module touches the hook at all.
    cli = Path(__import__("bigdens.cli").cli.__file__).parent
    for path in cli.glob("*.py"):
        if path.name != "predict.py":
            assert not re.search(r"showwarning\s*=", path.read_text()), path


def test_a_broken_sub_command_is_an_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bigdens.cli.plot", None)  # `import bigdens.cli.plot` raises ImportError
    for argv in (["--help"], ["plot", "s.zarr", "-o", "p.png"], ["predict", "x.xyz", "-o", "a.zarr"]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1, err
        assert err.startswith("bigdens: error: the sub-command 'plot' cannot be loaded") and "reinstall" in err
    with pytest.raises(CommandImportError):
        main(["--debug", "--help"])


def test_a_broken_sub_command_fails_the_program():
    code = ("import sys; sys.modules['bigdens.cli.export'] = None; from bigdens.cli import main; "
            "sys.exit(main(['--help']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("bigdens: error: the sub-command 'export' cannot be loaded") and \
        len(r.stderr.splitlines()) == 1, r.stderr
