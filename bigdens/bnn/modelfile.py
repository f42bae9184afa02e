"""Reading a model file (:func:`load`; :meth:`DensityModel.save <bigdens.bnn.model.DensityModel.save>` writes
one) and the epistemic threshold stored in a model."""

from __future__ import annotations

import json
from pathlib import Path

from .._version import __version__
from ..descriptors import DescriptorParams
from ..errors import InputError
from .model import DensityModel, tensor_digest
from .sampling import _make_net, _torch
from .settings import FORMAT_VERSION, METADATA_KEY, Architecture, Scaling

#: Quantile of the validation data's epistemic σ above which a predicted point counts as
#: unlike anything the model was checked on (stored in the model by :func:`bigdens.train.calibrate`).
EPISTEMIC_QUANTILE = 0.999


def epistemic_threshold(model: DensityModel) -> float | None:
    """The epistemic σ (e/Å³) above which a point is unlike the model's validation data, or None."""
    ref = model.info.get("epistemic_reference")
    if not isinstance(ref, dict) or EPISTEMIC_QUANTILE not in ref.get("quantiles", ()):
        return None
    return float(ref["std"][ref["quantiles"].index(EPISTEMIC_QUANTILE)])


#: A file of ``sha256sum`` lines beside model files (the shipped models' folder has one): a model named
#: in it must have that hash, so a damaged or swapped file is refused instead of predicting wrong densities.
RECORDED_HASHES = "SHA256SUMS"


def recorded_hashes(folder: str | Path) -> dict[str, str]:
    """File name -> sha256 hex of the :data:`RECORDED_HASHES` file in ``folder`` ({} if it has none)."""
    record = Path(folder) / RECORDED_HASHES
    if not record.is_file():
        return {}
    out = {}
    for line in record.read_text().splitlines():
        parts = line.split(maxsplit=1)  # sha256sum: "<hex>  name", or "<hex> *name" in binary mode
        if len(parts) == 2:
            out[parts[1].strip().lstrip("*")] = parts[0].lower()
    return out


def _check_recorded_hash(path: Path) -> None:
    """Refuse a model file whose folder records another sha256 for it (:data:`RECORDED_HASHES`)."""
    from .._files import file_hash

    real = path.resolve()
    want = recorded_hashes(real.parent).get(real.name)
    if want is None:
        return
    got = file_hash(real)
    if got != want:
        raise InputError(
            f"model file {str(path)!r} is damaged or was replaced: its sha256 is {got[:16]}…, but "
            f"{str(real.parent / RECORDED_HASHES)!r} records {want[:16]}… for it; reinstall bigdens "
            "(pip install --force-reinstall bigdens) for a shipped model, or give another --model"
        )


def load(path: str | Path, *, expected_hash: str | None = None) -> DensityModel:
    """Read a model file written by :meth:`DensityModel.save`.

    Nothing is unpickled: the file is safetensors, whose header is JSON.

    Parameters
    ----------
    path
        The model file.
    expected_hash
        The sha256 (hex) the file must have: a run's ``model_hash``, recorded when the run started.
        Workers and the commands that read a store's model pass it, so that a file replaced
        meanwhile is refused rather than used under the original's name.

    Raises
    ------
    InputError
        If the file is missing, not a bigdens model, truncated or corrupt, or
        written by a newer incompatible bigdens.
    RunError
        If ``expected_hash`` is given and the file's hash differs.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():
        raise InputError(f"model {str(path)!r} is a folder; give the model file (.safetensors) written by "
                         "`bigdens train`")
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist")
    _check_recorded_hash(path)
    if expected_hash is not None:
        from .._files import file_hash
        from ..errors import RunError

        if file_hash(path) != expected_hash:
            raise RunError(f"the model file {str(path)!r} changed since the run started (its sha256 is not the "
                           "run's model_hash): restore that file, or start again with the new one")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta_raw = (f.metadata() or {}).get(METADATA_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        with open(path, "rb") as fh:
            head = fh.read(2)
        # A pickle (torch.save) starts with the protocol opcode 0x80; a zip (torch.save) with PK.
        kind = " (it looks like a pickle/torch.save file, which bigdens never loads)" if head[:1] == b"\x80" or head == b"PK" else ""
        raise InputError(f"{str(path)!r} is not a readable bigdens model file{kind}: bigdens models are "
                         f".safetensors files written by `bigdens train` (safetensors: {exc})") from None
    if meta_raw is None:
        raise InputError(f"{str(path)!r} is a safetensors file but not a bigdens model (no {METADATA_KEY!r} metadata)")
    try:
        meta = json.loads(meta_raw)
        version = int(meta["format_version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{str(path)!r} has corrupt bigdens metadata ({exc})") from None
    if version > FORMAT_VERSION:
        raise InputError(
            f"{str(path)!r} was written by bigdens {meta.get('bigdens_version', '?')} in model format "
            f"{version}; this bigdens ({__version__}) reads format {FORMAT_VERSION} at most: upgrade bigdens"
        )
    try:
        params = DescriptorParams.from_dict(meta["descriptor"])
        # A file without a kind predates it (format 1): its network is mean-field, whatever Architecture's default.
        arch = Architecture(**{"kind": "mean-field",
                               **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["architecture"].items()}})
        if version < 2 and (arch.kind != "mean-field" or params.cross):
            raise ValueError("a format-1 file can hold only a mean-field network without the cross-species block")
        sc = meta["scaling"]
        scaling = Scaling(feature_mean=tuple(sc["feature_mean"]), feature_std=tuple(sc["feature_std"]),
                          target_mean=float(sc["target_mean"]), target_std=float(sc["target_std"]),
                          variance_scale=float(sc.get("variance_scale", 1.0)),
                          region_edges=tuple(sc.get("region_edges", ())),
                          region_scales=tuple(sc.get("region_scales", ())),
                          disorder_reference=float(sc.get("disorder_reference", 0.0)),
                          disorder_slope=float(sc.get("disorder_slope", 0.0)),
                          disorder_floor=float(sc.get("disorder_floor", 0.0)),
                          sigma_knots=tuple(sc.get("sigma_knots", ())),
                          sigma_log_ratios=tuple(sc.get("sigma_log_ratios", ())))
        if len(scaling.feature_mean) != params.n_features or len(scaling.feature_std) != params.n_features:
            raise ValueError("feature scaling does not match the descriptor size")
        model = DensityModel(params=params, arch=arch, scaling=scaling,
                             net=_make_net(params.n_features, arch), info=meta.get("info", {}))
        _load_weights(path, model, tensors)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{str(path)!r} has inconsistent bigdens metadata or weights ({type(exc).__name__}: {exc})") from None
    for k, v in tensors.items():
        if not _torch().isfinite(v).all():
            raise InputError(f"{str(path)!r} holds non-finite weights in {k!r}")
    want = meta.get("tensor_digest")
    if want is not None and tensor_digest(tensors) != want:
        raise InputError(f"{str(path)!r} is damaged: its weights do not match the digest written with them "
                         "(a changed bit); train or copy the model again")
    return model


def _load_weights(path: Path, model: DensityModel, tensors: dict) -> None:
    """Put ``tensors`` into ``model``'s network; a missing, extra or misshapen tensor is one line naming it."""
    want = {k: tuple(v.shape) for k, v in model.net.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    shaped = [f"{k} {have[k]} (expected {want[k]})" for k in sorted(set(want) & set(have)) if have[k] != want[k]]
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
        ([f"unexpected {', '.join(extra)}"] if extra else []) + ([f"misshapen {', '.join(shaped)}"] if shaped else [])
    if parts:
        raise InputError(f"{str(path)!r} does not hold the weights its metadata describes ({'; '.join(parts)}); "
                         "train or copy the model again")
    model.net.load_state_dict(tensors, strict=True)
