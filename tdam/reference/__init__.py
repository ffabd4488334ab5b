"""The paper's published numbers (supplement Tables 1-3), transcribed as CSV: targets to compare against.

See README.md beside this file for the known inconsistencies in the published numbers. Never write these into an
output as if measured: tables built from them label the columns ``paper_*``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["paper_table", "TABLES"]

_DIR = Path(__file__).resolve().parent
TABLES = {1: "paper_table1_imagenet.csv", 2: "paper_table2_ablations.csv", 3: "paper_table3_selectivity.csv"}


def paper_table(number: int) -> pd.DataFrame:
    """Supplement Table 1 (ImageNet), 2 (ablations) or 3 (selectivity) as a DataFrame."""
    if number not in TABLES:
        raise ValueError(f"table {number!r} is not valid; choose one of {sorted(TABLES)}")
    return pd.read_csv(_DIR / TABLES[number])
