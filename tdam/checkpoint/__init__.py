"""Checkpoint I/O: safe reading, the public TDAM layouts, mismatch diagnosis, loading into a model, atomic writing.

- :mod:`~tdam.checkpoint.read`: :func:`read_checkpoint` (``weights_only`` + :data:`SAFE_GLOBALS`: a pickle's code
  never runs; the content digest is verified) and the reading errors;
- :mod:`~tdam.checkpoint.pickle_scan`: the static scan that names the globals a refused pickle would import;
- :mod:`~tdam.checkpoint.digest`: the per-tensor content digest our files record (reserved key ``tdam_digest``);
- :mod:`~tdam.checkpoint.layouts`: the layouts of :data:`LAYOUTS` renamed to ours (:func:`extract_state_dict`,
  :func:`detect_layout`) and :func:`unwrap_model` (DDP / DataParallel / torch.compile);
- :mod:`~tdam.checkpoint.diagnose`: :func:`summarize_state_dict` and the :class:`CheckpointMismatchError` that names
  the checkpoint's configuration and the model's;
- :mod:`~tdam.checkpoint.load`: :func:`load_checkpoint` into a model, :func:`load_model` from the saved config;
- :mod:`~tdam.checkpoint.write`: atomic :func:`save_checkpoint` and :func:`export_safetensors`
  (:class:`CheckpointWriteError`), :func:`remove_stale_temps` for the temporaries of killed writers.
"""
from tdam.checkpoint.diagnose import (BlockTD, CheckpointDtypeError, CheckpointMismatchError, StateDictSummary,
                                      summarize_state_dict)
from tdam.checkpoint.digest import DIGEST_KEY
from tdam.checkpoint.layouts import LAYOUTS, detect_layout, extract_state_dict, unwrap_model
from tdam.checkpoint.load import LoadResult, load_checkpoint, load_model
from tdam.checkpoint.read import (SAFE_GLOBALS, CheckpointDigestError, CheckpointError, CorruptCheckpointError,
                                  UnsafeCheckpointError, read_checkpoint)
from tdam.checkpoint.write import CheckpointWriteError, export_safetensors, remove_stale_temps, save_checkpoint

__all__ = [
    "SAFE_GLOBALS", "LAYOUTS", "DIGEST_KEY", "CheckpointError", "UnsafeCheckpointError", "CorruptCheckpointError",
    "CheckpointDigestError", "CheckpointMismatchError", "CheckpointDtypeError", "CheckpointWriteError", "LoadResult",
    "BlockTD", "StateDictSummary", "read_checkpoint", "extract_state_dict", "detect_layout", "summarize_state_dict",
    "load_checkpoint", "save_checkpoint", "export_safetensors", "remove_stale_temps", "load_model", "unwrap_model",
]
