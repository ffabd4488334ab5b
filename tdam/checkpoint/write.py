"""Writing checkpoints atomically: ``torch.save`` files that :func:`~tdam.checkpoint.read_checkpoint` reads back, and
weights-only ``.safetensors`` exports. A crash or kill at any moment leaves either the previous file or the complete
new one."""
from __future__ import annotations

import json
import os
import uuid
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import torch
import torch.nn as nn

from tdam.checkpoint.layouts import extract_state_dict, unwrap_model
from tdam.checkpoint.read import SAFE_GLOBALS, _qualname

__all__ = ["save_checkpoint", "export_safetensors"]

_PLAIN = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.device, torch.dtype, torch.Size)


def _check_loadable(obj: Any, where: str = "obj") -> None:
    """Raise ``ValueError`` naming the first value that ``read_checkpoint`` would refuse (not plain / tensor)."""
    kind = type(obj)
    if kind in _PLAIN or kind in (torch.Tensor, nn.Parameter):
        return
    if kind in (dict, OrderedDict, Counter):
        for k, v in obj.items():
            _check_loadable(k, f"{where} key {k!r}")
            _check_loadable(v, f"{where}[{k!r}]")
        return
    if kind in (list, tuple, set):
        for i, v in enumerate(obj):
            _check_loadable(v, f"{where}[{i}]")
        return
    if kind in SAFE_GLOBALS:
        _check_loadable(vars(obj), f"{where}.__dict__")
        return
    raise ValueError(f"cannot save {where}: a {_qualname(kind)}, which read_checkpoint would refuse as unsafe; "
                     "checkpoints hold only tensors and plain python values (dict, list, tuple, str, numbers, None) "
                     "- convert it first (e.g. numpy array -> torch.from_numpy / .tolist())")


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through a temp file in the same folder (flush, fsync, os.replace, fsync the folder): a crash or
    kill at any moment leaves either the previous file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(obj: Mapping[str, Any] | nn.Module, path: str | os.PathLike) -> Path:
    """Save a checkpoint dict, or a model, with ``torch.save``, atomically (see :func:`_atomic_write`); returns the
    path.

    A model is saved as ``{'model': state_dict, 'model_config': model.model_config, 'tdam_version': ...}``, which
    ``tdam.load_model(path)`` rebuilds; it needs the ``model_config`` that ``tdam.create_model`` sets (and
    ``tdam.add_td`` keeps when create_model can rebuild the converted model), otherwise ``ValueError`` says so.
    A dict may hold only what :func:`read_checkpoint` reads back (tensors, plain python values and containers,
    ``argparse.Namespace``); anything else raises ``ValueError`` naming where it is, before the file is touched."""
    if isinstance(obj, nn.Module):
        obj = _model_checkpoint(obj)
    path = Path(path)
    if path.suffix == ".safetensors":
        raise ValueError(f"{str(path)!r}: save_checkpoint writes torch.save files; use export_safetensors for "
                         "weights-only .safetensors files")
    if not isinstance(obj, Mapping):
        raise ValueError(f"save_checkpoint expects a checkpoint dict or a model, got {type(obj).__name__}")
    _check_loadable(obj)
    _atomic_write(path, lambda f: torch.save(obj, f))
    return path


def _tensors_for_export(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(model_or_state_dict, nn.Module):
        sd = unwrap_model(model_or_state_dict).state_dict()
    else:
        sd, _layout = extract_state_dict(model_or_state_dict)
    out, seen = {}, set()
    for k, v in sd.items():
        v = v.detach().to("cpu").contiguous()
        if v.numel():
            ptr = v.untyped_storage().data_ptr()
            if ptr in seen:  # safetensors refuses tensors that share memory (tied weights, views)
                v = v.clone()
            seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


def export_safetensors(model_or_state_dict: nn.Module | Mapping[str, Any], path: str | os.PathLike,
                       metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the weights (only) to a ``.safetensors`` file, atomically; returns the path.

    Metadata (string -> string in the file): ``format='pt'``, ``tdam_version``, ``model_config`` (JSON; taken from
    ``model.model_config`` for a model, overridable in ``metadata``) and the entries of ``metadata`` (non-strings are
    JSON-encoded). Accepts a model, a state dict, or a checkpoint dict (its weights are found as in
    :func:`extract_state_dict`). ``load_checkpoint`` / ``load_model`` read the file back (by its suffix)."""
    from safetensors.torch import save as st_save

    from tdam import __version__

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{str(path)!r}: a safetensors export must end in '.safetensors'")
    meta: dict[str, Any] = {"format": "pt", "tdam_version": __version__}
    config = getattr(model_or_state_dict, "model_config", None)
    if config is None and isinstance(model_or_state_dict, Mapping):
        config = model_or_state_dict.get("model_config")
    if isinstance(config, Mapping):
        meta["model_config"] = dict(config)
    meta.update(metadata or {})
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in meta.items()}
    data = st_save(_tensors_for_export(model_or_state_dict), metadata=meta)
    _atomic_write(path, lambda f: f.write(data))
    return path


def _model_checkpoint(model: nn.Module) -> dict[str, Any]:
    """A model's checkpoint dict for :func:`save_checkpoint`: its weights and the ``model_config`` that
    ``tdam.load_model`` rebuilds it from (``tdam.create_model(**model_config)``)."""
    from tdam import __version__

    model = unwrap_model(model)
    config = getattr(model, "model_config", None)
    if not isinstance(config, Mapping):
        raise ValueError(
            f"save_checkpoint(model, path): this {type(model).__name__} has no model_config, which tdam.load_model "
            "needs to rebuild it (tdam.create_model sets it; tdam.add_td keeps it only on a create_model model that "
            "create_model can rebuild). Save the weights alone with save_checkpoint({'model': model.state_dict()}, "
            "path), then build the model the same way in your code (e.g. torchvision's resnet50 + tdam.add_td) and "
            "call tdam.load_checkpoint(model, path)")
    return {"model": model.state_dict(), "model_config": dict(config), "tdam_version": __version__}
