"""The frozen, validated settings objects: PredictConfig (bigdens.config) and TrainConfig (bigdens.train).

Each refuses a bad value before any work starts, with a one-line message that
names the field; each is frozen; the command line's defaults are the objects'.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bigdens.cli import build_parser
from bigdens.cli._common import config_default
from bigdens.config import DEFAULT_BLOCK, DEVICES, PredictConfig
from bigdens.errors import InputError, SetupError
from bigdens.train import TrainConfig


def _subparser(name):
    parser = build_parser()
    (sub,) = [a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
    return sub.choices[name]


def _cli_defaults(name, *required):
    return vars(_subparser(name).parse_args(list(required)))


@pytest.mark.parametrize("kw, field", [
    ({"mc_samples": -1}, "Monte Carlo samples"),
    ({"mc_samples": 0}, "Monte Carlo samples"),
    ({"mc_samples": 2.5}, "Monte Carlo samples"),
    ({"mc_samples": True}, "Monte Carlo samples"),
    ({"workers": -1}, "workers"),
    ({"workers": 1.0}, "workers"),
    ({"threads_per_worker": 0}, "threads_per_worker"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"batch": 0}, "batch"),
    ({"device": "gpu"}, "device"),
    ({"device": "CUDA"}, "device"),
    ({"block": 0}, "block"),
    ({"block": -8}, "block"),
    ({"block": (8, 8)}, "block"),
    ({"block": (8, 8, 0)}, "block"),
    ({"block": 8.5}, "block"),
    ({"block": "x"}, "block"),
    ({"chunk": 0}, "chunk"),
    ({"block": 16, "chunk": 6}, "chunk"),
    ({"spacing": 0.2, "grid": (10, 10, 10)}, "spacing"),
    ({"spacing": 0.0}, "spacing"),
    ({"spacing": -0.2}, "spacing"),
    ({"spacing": float("nan")}, "spacing"),
    ({"spacing": float("inf")}, "spacing"),
    ({"spacing": "0.2"}, "spacing"),
    ({"grid": (10, 10)}, "grid"),
    ({"grid": (10, 0, 10)}, "grid"),
    ({"cluster": "pbs:x"}, "cluster"),
    ({"cluster": "slurm:"}, "cluster"),
    ({"block_timeout": 0}, "block_timeout"),
    ({"block_timeout": -5.0}, "block_timeout"),
    ({"block_timeout": float("nan")}, "block_timeout"),
    ({"max_blocks": -1}, "max_blocks"),
    ({"resume": True, "overwrite": True}, "resume"),
    ({"workers": 0, "scheduler_file": "sched.json"}, "scheduler-file"),
    ({"workers": 0, "report": "r.html"}, "report"),
    ({"out": ""}, "output"),
    ({"out": None}, "output"),
])
def test_predict_config_refuses_a_bad_value_naming_it(kw, field):
    with pytest.raises(SetupError) as exc:
        PredictConfig(**{"out": "d.zarr", **kw})
    message = str(exc.value)
    assert field in message and "\n" not in message


def test_predict_config_normalises_what_it_accepts():
    c = PredictConfig(out="d.zarr", model="m.safetensors", spacing=1, block=16, chunk=8, scheduler_file="s.json",
                      report="r.html")
    assert c.out == Path("d.zarr") and c.model == Path("m.safetensors") and c.scheduler_file == Path("s.json")
    assert c.report == Path("r.html")
    assert c.spacing == 1.0 and isinstance(c.spacing, float)
    assert c.block == (16, 16, 16) and c.chunk == (8, 8, 8)  # an int is the edge along every axis
    assert PredictConfig(out="d.zarr", grid=[10, 12, 14]).grid == (10, 12, 14)
    # Without block or chunk: the default block, and the chunk is the block.
    plain = PredictConfig(out="d.zarr")
    assert plain.block == (DEFAULT_BLOCK,) * 3 and plain.chunk == plain.block and plain.threads_per_worker == 1
    assert PredictConfig(out="d.zarr", block=(16, 8, 4), chunk=(8, 8, 2)).chunk == (8, 8, 2)


def test_predict_config_uses_dask_only_with_workers_or_a_cluster():
    assert not PredictConfig(out="d.zarr", workers=0).uses_dask
    assert PredictConfig(out="d.zarr", workers=1).uses_dask
    assert PredictConfig(out="d.zarr", scheduler_file="s.json").uses_dask


@pytest.mark.parametrize("field, value", [("mc_samples", 3), ("out", "other.zarr"), ("device", "cpu"),
                                          ("block", (8, 8, 8)), ("profile", None)])
def test_predict_config_is_frozen(field, value):
    c = PredictConfig(out="d.zarr")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(c, field, value)
    assert c == PredictConfig(out="d.zarr")  # unchanged


def test_a_changed_predict_config_is_validated_again():
    c = PredictConfig(out="d.zarr", mc_samples=5)
    assert dataclasses.replace(c, mc_samples=7).mc_samples == 7 and c.mc_samples == 5
    with pytest.raises(SetupError, match="Monte Carlo samples"):
        dataclasses.replace(c, mc_samples=0)


def test_predict_defaults_are_what_the_command_line_shows(tmp_path):
    args = _cli_defaults("predict", "al.xyz", "-o", "d.zarr")
    # The options whose name matches the field: the parser's default is the config's.
    for field in ("mc_samples", "workers", "seed", "device", "cluster", "threads_per_worker", "block", "chunk",
                  "spacing", "grid", "model", "scheduler_file", "resume", "renormalize", "overwrite", "report",
                  "max_blocks", "block_timeout", "allow_out_of_domain", "skip_size_check"):
        assert args[field] == config_default(PredictConfig, field), field
    help_text = _subparser("predict").format_help()
    assert f"default {config_default(PredictConfig, 'device')}" in help_text
    assert f"else {DEFAULT_BLOCK}" in help_text


def test_config_default_reads_the_dataclass_field():
    assert config_default(PredictConfig, "device") == "auto" and "auto" in DEVICES
    assert config_default(TrainConfig, "device") == "cpu"
    with pytest.raises(StopIteration):
        config_default(PredictConfig, "no_such_field")


@pytest.mark.parametrize("kw, field", [
    ({"device": "tpu"}, "device"),
    ({"epochs": 0}, "epochs"),
    ({"points_per_epoch": -1}, "points_per_epoch"),
    ({"batch_size": 0}, "batch_size"),
    ({"patience": 0}, "patience"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1e-3}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"train_layers": 0}, "train_layers"),
    ({"frozen_lr_scale": -0.1}, "frozen_lr_scale"),
    ({"frozen_lr_scale": 1.5}, "frozen_lr_scale"),
    ({"nll_beta": 2.0}, "nll_beta"),
    ({"nll_beta": float("nan")}, "nll_beta"),
    ({"time_limit": 0}, "time_limit"),
    ({"time_limit": -60.0}, "time_limit"),
    ({"schedule": "linear"}, "schedule"),
    ({"min_lr_factor": 0.0}, "min_lr_factor"),
    ({"min_lr_factor": 1.5}, "min_lr_factor"),
])
def test_train_config_refuses_a_bad_value_naming_it(kw, field):
    with pytest.raises(InputError) as exc:
        TrainConfig(**kw)
    message = str(exc.value)
    assert field in message and "\n" not in message


def test_train_config_is_frozen():
    c = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.epochs = 1
    assert c.epochs == config_default(TrainConfig, "epochs")


#: Options of `bigdens train` and `finetune` that are no setting of the Python functions: the data, the files
#: and the process.  Every other option must be a field with a default on the API's side (the walks below).
NOT_SETTINGS = {"command", "debug", "model", "data", "val", "allow_mixed_protocols", "species", "keep_variance",
                "threads", "output"}
#: Option (argparse dest) -> the API's field, where the names differ.
FIELD_OF = {"layers": "train_layers"}


def _api_default(function, name):
    import inspect

    return inspect.signature(function).parameters[name].default


def _walk(command, required, api: dict) -> dict:
    """Each setting option of ``command`` with its default, next to the API's default of that field."""
    args = _cli_defaults(command, *required)
    settings = {FIELD_OF.get(k, k): v for k, v in args.items() if k not in NOT_SETTINGS and not k.startswith("_")}
    assert settings.keys() - api.keys() == set(), "options without a default in the Python API"
    return {name: (tuple(value) if isinstance(value, list) else value, api[name]) for name, value in settings.items()}


def test_train_defaults_are_what_the_command_line_shows():
    from bigdens.bnn import KINDS
    from bigdens.descriptors import default_params
    from bigdens.train import train

    arch, config = _api_default(train, "arch"), _api_default(train, "config")
    descriptor = default_params([13])  # what no model fixes: one species' M, K, r_cut, cross block
    api = {**dataclasses.asdict(config), **dataclasses.asdict(arch),
           **{k: v for k, v in dataclasses.asdict(descriptor).items() if k != "species"}}
    pairs = _walk("train", ["data", "-o", "m.safetensors"], api)
    assert {"epochs", "lr", "patience", "seed", "device", "schedule", "time_limit", "hidden", "kind", "r_cut", "m",
            "k", "cross"} <= pairs.keys()
    for name, (cli, python) in pairs.items():
        assert cli == python, (name, cli, python)
    assert (arch.kind, arch.hidden) == ("last-layer", (128, 128)) and config == TrainConfig()
    (kind,) = [a for a in _subparser("train")._actions if a.dest == "kind"]
    assert tuple(kind.choices) == KINDS


def test_finetune_defaults_are_what_the_command_line_shows():
    from bigdens.train import finetune

    pairs = _walk("finetune", ["m.safetensors", "data", "-o", "n.safetensors"],
                  dataclasses.asdict(_api_default(finetune, "config")))
    assert {"epochs", "lr", "train_layers", "frozen_lr_scale", "patience", "seed", "device"} <= pairs.keys()
    for name, (cli, python) in pairs.items():
        assert cli == python, (name, cli, python)


def test_learn_defaults_are_the_apis():
    from bigdens.active.loop import LEARN_FINETUNE, LearnConfig

    args = _cli_defaults("learn", "m.safetensors", "--candidates", "c.xyz", "--budget", "10", "--holdout", "h",
                         "--val", "v", "-o", "n.safetensors")
    cli = {FIELD_OF.get(k, k): args[k] for k in ("layers", "epochs", "points_per_epoch", "lr", "patience")}
    assert cli == LEARN_FINETUNE == LearnConfig(budget=1.0).finetune
    for name in ("rounds", "calibration_share", "seed", "strategy"):
        assert args[name] == config_default(LearnConfig, name), name
