"""The paper's tables as transcribed (the CSV files beside this module) and the key that names a model's row in them.

Tables 1 and 2 name a model by (backbone, attention, td_mode, t, m, td_stages); :func:`model_key` turns a
``create_model`` config into that key, with create_model's own defaults for what the config leaves out.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tdam.models.factory import TD_DEFAULTS, TD_OPTION_DEFAULTS

__all__ = ["TABLES", "PAPER_TABLES", "KEY_COLUMNS", "paper_table", "model_key", "flat_config"]

_DIR = Path(__file__).resolve().parent
TABLES = {1: "paper_table1_imagenet.csv", 2: "paper_table2_ablations.csv", 3: "paper_table3_selectivity.csv"}
PAPER_TABLES = {"table1": 1, "table2": 2, "table3": 3}
KEY_COLUMNS = ["backbone", "attention", "td_mode", "t", "m", "td_stages"]


def paper_table(table: int | str) -> pd.DataFrame:
    """Supplement Table 1 (ImageNet), 2 (ablations) or 3 (selectivity) as a DataFrame.

    ``table`` 1/2/3: the CSV as transcribed (empty cells NaN). ``'table1'``/``'table2'``/``'table3'``: keyed for
    comparisons: ``t``/``m`` nullable integers, ``td_stages`` and the text columns strings ('' where empty, e.g. the
    ``attention`` of a plain ResNet).
    """
    if table in TABLES:
        return pd.read_csv(_DIR / TABLES[table])
    if table not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {table!r}; valid: {sorted(PAPER_TABLES)} or {sorted(TABLES)}")
    df = pd.read_csv(_DIR / TABLES[PAPER_TABLES[table]])
    df = df.astype({c: "Int64" for c in ("m", "t") if c in df})
    if "td_stages" in df:
        df["td_stages"] = df["td_stages"].astype("string")
    for col in ("attention", "td_mode", "td_stages", "variant", "note", "method", "row", "set"):
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    return df


def stages_str(stages) -> str:
    """TD stages as the paper tables write them: (3, 4) -> '3+4'; a string as it is; None -> ''."""
    if stages is None or stages == "":
        return ""
    if isinstance(stages, str):
        return stages
    if isinstance(stages, int):
        return str(stages)
    return "+".join(str(int(s)) for s in stages)


def flat_config(model_config: Mapping) -> dict:
    """A ``create_model`` config with its ``options`` sub-dict (if any) merged in."""
    cfg = dict(model_config)
    cfg.update(cfg.pop("options", None) or {})
    return cfg


def model_key(model_config: Mapping) -> dict:
    """The paper-table key (backbone, attention, td_mode, t, m, td_stages) of a ``create_model`` config.

    Accepts a flat config (``{'arch': ..., 'attention': ..., 't': 2, ...}``, ``backbone`` for ``arch``) or one with an
    ``options`` sub-dict. A TD model's unset options take create_model's defaults (joint, t=2, m=1, the
    architecture's default stages: layers 3 + 4 for the paper's ResNets and ConvNeXt).
    """
    cfg = flat_config(model_config)
    attention = cfg.get("attention") or ""
    arch = cfg.get("arch", cfg.get("backbone"))
    key = {"backbone": arch, "attention": attention, "td_mode": "", "t": None, "m": None, "td_stages": ""}
    if attention == "td":
        def given(name):
            return cfg[name] if cfg.get(name) is not None else TD_OPTION_DEFAULTS[name]

        stages = cfg.get("td_stages")
        if stages is None or stages == "":
            stages = TD_DEFAULTS.get(arch, {}).get("td_stages")
        key.update(td_mode=given("td_mode"), t=int(given("t")), m=int(given("m")), td_stages=stages_str(stages))
    return key


def norm_key(v) -> str:
    """A key cell as a string, so '3+4' / (3, 4), 2 / 2.0 and NaN / None / '' compare equal across CSV and computed
    tables."""
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (tuple, list)):
        return stages_str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
