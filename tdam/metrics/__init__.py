"""Per-image metrics as pure, batched tensor maths (no models, no I/O): classification (top-k, most-confident step,
unique-box rule), box overlap, weakly-supervised localisation and feature selectivity.

Modules: :mod:`~tdam.metrics.classification`, :mod:`~tdam.metrics.boxes`, :mod:`~tdam.metrics.localization`,
:mod:`~tdam.metrics.selectivity`.
"""
from .boxes import box_iou_inclusive, max_iou, pad_boxes
from .classification import (IOU_THRESHOLD, most_confident_correct, topk_correct, unique_box_correct,
                             unique_box_sources)
from .localization import (LOC_IOU_THRESHOLD, LOC_METRICS, StepLocalization, localization_hits, step_cls_hits,
                           unique_box_localization_hits)
from .selectivity import input_entropy, minmax_spatial, output_entropy, pairwise_rho, rho_mean

__all__ = [
    "box_iou_inclusive", "max_iou", "pad_boxes",
    "IOU_THRESHOLD", "most_confident_correct", "topk_correct", "unique_box_correct", "unique_box_sources",
    "LOC_IOU_THRESHOLD", "LOC_METRICS", "StepLocalization", "localization_hits", "step_cls_hits",
    "unique_box_localization_hits",
    "input_entropy", "minmax_spatial", "output_entropy", "pairwise_rho", "rho_mean",
]
