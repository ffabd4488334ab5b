"""tdam: Top-Down Attention Module (Jaiswal, Fernando, Tan, ECCV 2022), a reference reproduction.

Paper: https://arxiv.org/abs/2111.13470
"""
__version__ = "0.1.0"

import warnings as _warnings

# timm -> huggingface_hub imports tqdm.auto, which warns inside Jupyter kernels without ipywidgets; tdam never shows
# widget progress bars (progress is plain text, and quiet when not interactive), so the warning is noise.
_warnings.filterwarnings("ignore", message="IProgress not found")

from .checkpoint import export_safetensors, load_checkpoint, load_model, read_checkpoint, save_checkpoint  # noqa: E402
from .models import add_td, create_model, is_td_model  # noqa: E402  (registers the models in timm's registry)

__all__ = ["__version__", "create_model", "add_td", "is_td_model", "load_checkpoint", "save_checkpoint", "load_model",
           "read_checkpoint", "export_safetensors"]
