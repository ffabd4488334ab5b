"""When one of our runs is in the setting of a paper table, so that the paper's number may stand beside ours.

A run is in the paper's setting when all of these hold:

- the model is a row of the table: same architecture, attention, TD mode, steps t, distance m and TD stages, and no
  option that changes the model away from what the paper's rows use (TD order, feedback, pooling, blocks; the
  stages of a baseline attention);
- the data is the paper's: a real ImageNet folder (not the embedded tdam-shapes stand-in) with the paper's class count
  (1000; the 200-class subset for Table 2's ``steps_200cls`` set);
- the images are evaluated at the paper's 224 px;
- the model is evaluated at the paper row's computation steps ``t`` (a t=2 checkpoint evaluated at ``t=1`` is not
  the paper's model; a model without TD runs one step);
- the whole validation split is evaluated: :data:`VAL_IMAGES_PER_CLASS` images per class, i.e. all 50,000 images of
  ImageNet-V1 val and all 10,000 of an ImageNet-V2 test set for 1000 classes (10,000 for the 200-class subset); an
  evenly strided or sampled subset (``max_images``) is not.

These are facts of what was evaluated, not of the model's config: the caller passes the steps and the image counts
it actually ran (:class:`tdam.evaluation.provenance.EvalFacts` records them). Anything else gets no paper number
beside it, and the one-line reason says which of these failed (every one that failed).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from tdam.models.factory import TD_DEFAULTS, TD_OPTION_DEFAULTS

from .paper import KEY_COLUMNS, flat_config, model_key, norm_key, paper_table, stages_str

__all__ = ["PAPER_SETTING", "PAPER_IMG_SIZE", "IMAGENET_CLASSES", "VAL_IMAGES_PER_CLASS", "SPLIT_NAMES",
           "SETTING_TABLES", "Setting", "paper_setting", "full_split_images", "model_name", "off_paper_options",
           "table3_columns"]

PAPER_SETTING = "paper setting"  # the reason of a run in the paper's setting
PAPER_IMG_SIZE = 224             # the test resolution of Tables 1-3
IMAGENET_CLASSES = 1000
#: Images per class of the splits the paper evaluates: ILSVRC-12 val has 50 per class (50,000 for 1000 classes), each
#: ImageNetV2 test set 10 per class (10,000). The 200-class subset of Table 2 keeps its classes' 50 val images each.
VAL_IMAGES_PER_CLASS = {"v1": 50, "v2": 10}
SPLIT_NAMES = {"v1": "ImageNet-V1 val", "v2": "ImageNet-V2"}
SETTING_TABLES = ("table1", "table2", "table3")
_SUBSET_CLASSES = {"steps_200cls": 200}  # Table 2 sets trained on an ImageNet subset
_TABLE_NAMES = {"table1": "Table 1", "table2": "Table 2", "table3": "Table 3"}
_TD_SHAPE_OPTIONS = ("td_order", "td_feedback", "td_pool")  # TD options every paper row keeps at their defaults
_TABLE3_BACKBONE = "resnet50"


@dataclass(frozen=True)
class Setting:
    """Whether a run is in the setting of a paper table.

    ``model_row``: the paper row of the same model whatever the data (a dict of the table's columns; for Table 3
    ``{'backbone', 'column'}``), None when the model is no row of the table. ``reasons``: every way the run differs from
    the paper's setting, empty when it does not.
    """

    table: str
    model_row: dict | None
    reasons: tuple[str, ...]

    @property
    def matches(self) -> bool:
        return not self.reasons

    @property
    def row(self) -> dict | None:
        """The paper row whose numbers may stand beside ours: the model's row when the whole setting matches."""
        return self.model_row if self.matches else None

    @property
    def reason(self) -> str:
        """One line: 'paper setting', or why not (the failed criteria joined by '; ')."""
        return PAPER_SETTING if self.matches else "; ".join(self.reasons)


def full_split_images(split: str, num_classes: int = IMAGENET_CLASSES) -> int:
    """Images in the whole ``split`` ('v1': ImageNet-V1 val, 'v2': an ImageNet-V2 test set) of ``num_classes``
    classes: 50,000 and 10,000 for ImageNet's 1000."""
    if split not in VAL_IMAGES_PER_CLASS:
        raise ValueError(f"unknown split {split!r}; valid: {list(VAL_IMAGES_PER_CLASS)}")
    return VAL_IMAGES_PER_CLASS[split] * int(num_classes)


def paper_setting(model_config: Mapping, *, num_classes: int | None, img_size: int, imagenet: bool, t: int | None,
                  images: Mapping[str, int | None], table: str = "table1",
                  ablation: tuple[str, str] | None = None) -> Setting:
    """Whether a run of ``model_config`` (a ``create_model`` config: the model as TRAINED) evaluated on data with
    ``num_classes`` classes at ``img_size`` px, at ``t`` computation steps, on ``images`` is in the setting of paper
    ``table`` ('table1', 'table2' or 'table3').

    ``imagenet``: True when the data is a real ImageNet folder the user gave, False for the embedded tdam-shapes
    stand-in. ``num_classes`` None: not recorded, so the class count cannot be confirmed (never in the paper's
    setting). ``t``: the steps the last TD stage ran at evaluation (1 for a model without TD; None: not recorded);
    it must be the paper row's t. ``images``: {split: images evaluated} for the splits compared ('v1', and 'v2' for
    Table 1's V2 columns; another split, e.g. 'train', is never the paper's); each must be the whole split
    (:func:`full_split_images` of the paper's class count); None: not recorded. Table 2 rows are named, not looked
    up by model: ``ablation`` = (set, row name), and only the backbone of ``model_config`` is compared with the
    paper row's.
    """
    if table not in SETTING_TABLES:
        raise ValueError(f"unknown paper table {table!r}; valid: {list(SETTING_TABLES)}")
    if (table == "table2") != (ablation is not None):
        raise ValueError("ablation=(set, row) is needed for table='table2' and only for it")
    if not images:
        raise ValueError("images: give {split: images evaluated} for at least one of "
                         f"{list(VAL_IMAGES_PER_CLASS)}")
    if table == "table2":
        row, model_reason = _table2_row(model_config, *ablation)
        classes = _SUBSET_CLASSES.get(ablation[0], IMAGENET_CLASSES)
    else:
        row, model_reason = (_table1_row if table == "table1" else _table3_row)(model_config)
        classes = IMAGENET_CLASSES
    reasons = [model_reason] if model_reason else []
    if not imagenet:
        reasons.append("embedded tdam-shapes data, not ImageNet")
    if num_classes is None:
        reasons.append("class count not recorded")
    elif int(num_classes) != classes:
        reasons.append(f"{num_classes} classes, not " + ("ImageNet's 1000" if classes == IMAGENET_CLASSES
                                                          else f"the paper's {classes}-class ImageNet subset"))
    if int(img_size) != PAPER_IMG_SIZE:
        reasons.append(f"evaluated at {img_size} px, not the paper's {PAPER_IMG_SIZE} px")
    reasons += _steps_reasons(t, _row_steps(table, row))
    for split, n in images.items():
        if split not in VAL_IMAGES_PER_CLASS:
            reasons.append(f"evaluated on the {split!r} split, not a validation split")
            continue
        full = full_split_images(split, classes)
        if n is None:
            reasons.append(f"{SPLIT_NAMES[split]} images evaluated not recorded")
        elif int(n) != full:
            reasons.append(f"{int(n):,} {SPLIT_NAMES[split]} images evaluated, not the whole split's {full:,}")
    return Setting(table=table, model_row=row, reasons=tuple(reasons))


def _row_steps(table: str, row: Mapping | None) -> int | None:
    """The computation steps of a paper row's model (1 without TD); None when there is no row to compare with."""
    if row is None:
        return None
    if table == "table3":
        return int(table3_columns()[row["column"]]["t"] or 1)
    t = row.get("t")
    return 1 if pd.isna(t) else int(t)           # an empty t: a row without TD


def _steps_reasons(t: int | None, row_t: int | None) -> list[str]:
    if t is None:
        return ["steps t at evaluation not recorded"]
    if row_t is not None and int(t) != row_t:
        return [f"evaluated at t={int(t)}, the paper row's t is {row_t}"]
    return []


def off_paper_options(model_config: Mapping) -> dict:
    """The options of ``model_config`` that make its model differ from every paper row of its kind: TD order,
    feedback or pooling other than the defaults, TD blocks other than the architecture's default, TD keeping the SE of
    MobileNetV3 blocks, a baseline attention restricted to some stages. Empty for the paper's models."""
    cfg = flat_config(model_config)
    off = {}
    if cfg.get("attention") == "td":
        for name in _TD_SHAPE_OPTIONS:
            if cfg.get(name) is not None and cfg[name] != TD_OPTION_DEFAULTS[name]:
                off[name] = cfg[name]
        blocks = cfg.get("td_blocks")
        default = TD_DEFAULTS.get(cfg.get("arch"), {}).get("td_blocks")
        if blocks is not None and _blocks(blocks) != _blocks(default or {}):
            off["td_blocks"] = blocks
        if cfg.get("td_keep_se"):
            off["td_keep_se"] = True
    if cfg.get("attn_stages") is not None:
        off["attn_stages"] = cfg["attn_stages"]
    return off


def _blocks(blocks: Mapping) -> dict:
    return {int(k): sorted(int(i) for i in v) for k, v in dict(blocks).items()}


def model_name(model_config: Mapping) -> str:
    """Short name of a model, e.g. ``resnet18 TD-joint t2 m1``, ``resnet101 TD-joint t2 m1 L4`` (TD stages other
    than the default), ``resnet18 SE`` or ``resnet18 plain``; options off the paper's rows follow in parentheses."""
    key = model_key(model_config)
    if key["attention"] == "td":
        name = f"{key['backbone']} TD-{key['td_mode']} t{key['t']} m{key['m']}"
        if key["td_stages"] != _default_stages(key["backbone"]):
            name += f" L{key['td_stages']}"
    else:
        name = f"{key['backbone']} {key['attention'].upper() or 'plain'}"
    off = off_paper_options(model_config)
    if off:
        name += " (" + ", ".join(f"{k}={v!r}" for k, v in off.items()) + ")"
    return name


def _default_stages(arch: str) -> str:
    """The TD stages of ``arch`` when none are given, as the paper tables write them ('3+4')."""
    return stages_str(TD_DEFAULTS.get(arch, {}).get("td_stages", ""))


def _table1_row(model_config: Mapping) -> tuple[dict | None, str | None]:
    reason = f"{model_name(model_config)} is not a row of Table 1"
    if off_paper_options(model_config):
        return None, reason
    key = {c: norm_key(v) for c, v in model_key(model_config).items()}
    paper = paper_table("table1")
    hit = paper[[all(norm_key(r[c]) == key[c] for c in KEY_COLUMNS) for _, r in paper.iterrows()]]
    if len(hit) != 1:
        return None, reason
    return hit.iloc[0].to_dict(), None


def table3_columns() -> dict[str, dict]:
    """The paper's Table 3 model columns with the :func:`tdam.reference.model_key` of each (all ResNet-50, TD in
    stages 3+4): ``original`` the plain model, ``td<mode>_t<t>_m<m>`` the TD ones."""
    out = {}
    for col in paper_table("table3").columns[2:]:
        if col == "original":
            out[col] = model_key({"arch": _TABLE3_BACKBONE, "attention": None})
        else:
            mode, t, m = col[2:].split("_")
            out[col] = model_key({"arch": _TABLE3_BACKBONE, "attention": "td", "td_mode": mode, "t": int(t[1:]),
                                  "m": int(m[1:])})
    return out


def _table3_row(model_config: Mapping) -> tuple[dict | None, str | None]:
    key = model_key(model_config)
    if not off_paper_options(model_config):
        for col, k in table3_columns().items():
            if k == key:
                return {"backbone": _TABLE3_BACKBONE, "column": col}, None
    names = ", ".join(model_name(k) for k in table3_columns().values())
    return None, f"{model_name(model_config)} is not a model of Table 3 ({names})"


def _table2_row(model_config: Mapping, set_name: str, row_name: str) -> tuple[dict | None, str | None]:
    paper = paper_table("table2")
    hit = paper[(paper.set.map(norm_key) == norm_key(set_name)) & (paper.row.map(norm_key) == norm_key(row_name))]
    if hit.empty:
        return None, "not a paper row"
    row = hit.iloc[0].to_dict()
    backbone = flat_config(model_config).get("arch")
    if backbone != row["backbone"]:
        return None, f"{backbone}, the paper's row is {row['backbone']}"
    return row, None
