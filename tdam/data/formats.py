"""The converted ImageNet formats' shared names: what :mod:`tdam.data.convert` writes and :mod:`tdam.data.wds` /
:mod:`tdam.data.parquet` read, and the import of their optional dependencies (``pip install 'tdam[shards]'``)."""
from __future__ import annotations

import importlib

from tdam.errors import MissingDependencyError

__all__ = ["FORMATS", "SPLIT_NAMES", "WDS_DIR", "PARQUET_DIR", "require"]

FORMATS = ("wds", "parquet")
#: tdam split -> the split name in the shard / parquet file names (the Hub's 'validation')
SPLIT_NAMES = {"train": "train", "val": "validation"}
WDS_DIR, PARQUET_DIR = "imagenet_wds", "imagenet_parquet"


def require(module: str):
    """Import an optional dependency of the shard formats, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(f"{module} is needed for ImageNet shards / parquet files: "
                                     f"pip install 'tdam[shards]'") from e
