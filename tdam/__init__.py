"""tdam: Top-Down Attention Module (Jaiswal, Fernando, Tan, ECCV 2022), a reference reproduction.

Paper: https://arxiv.org/abs/2111.13470

``import tdam`` is light: the public names below, and the subpackages (``tdam.models``, ``tdam.data``, ...), load
torch and timm on first use, so command lines that only read a configuration (``python -m tdam.train --help``)
start in a fraction of a second. The TD models are registered in timm's registry (``timm.create_model(
"td_resnet50")``) as soon as both tdam and timm are imported, in either order: at once if timm is already loaded,
else right after timm's own import finishes (:class:`_RegisterWhenTimmLoads`).
"""
from __future__ import annotations

__version__ = "0.1.0"

import importlib
import importlib.abc
import importlib.util
import sys
import warnings as _warnings

from tdam._lazy import lazy_attributes

# timm -> huggingface_hub imports tqdm.auto, which warns inside Jupyter kernels without ipywidgets; tdam never shows
# widget progress bars (progress is plain text, and quiet when not interactive), so the warning is noise.
_warnings.filterwarnings("ignore", message="IProgress not found")

_EXPORTS = {   # public name -> the submodule that defines it
    "create_model": "models", "add_td": "models", "is_td_model": "models",
    "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "load_model": "checkpoint",
    "read_checkpoint": "checkpoint", "export_safetensors": "checkpoint",
}
__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)


class _RegisterWhenTimmLoads(importlib.abc.MetaPathFinder):
    """Import hook: when ``timm`` is imported, import :mod:`tdam.models` right after timm's module has run, which
    registers the ``td_*`` and baseline names in timm's registry. It acts once and then leaves ``sys.meta_path``."""

    def find_spec(self, name, path=None, target=None):
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        run_timm = spec.loader.exec_module

        def exec_module(module):
            run_timm(module)
            importlib.import_module("tdam.models")

        spec.loader.exec_module = exec_module
        return spec


if "timm" in sys.modules:
    importlib.import_module("tdam.models")
elif not any(isinstance(finder, _RegisterWhenTimmLoads) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenTimmLoads())
