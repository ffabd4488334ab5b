"""Evaluation: Table 1 accuracy columns (last / most-confident / unique-box), boxes, cost tables, paper comparison.

Modules: :mod:`~tdam.evaluation.classification` (top-k, TD metrics, accuracy against t, per-class tables),
:mod:`~tdam.evaluation.unique_box` (the supplement's multi-step protocol), :mod:`~tdam.evaluation.boxes` (CAM /
Grad-CAM maps and the 15 % box rule, shared with :mod:`tdam.analysis`), :mod:`~tdam.evaluation.complexity_report`
(params, FLOPs, memory, throughput tables), :mod:`~tdam.evaluation.tables` (our numbers beside the paper's, provenance).
"""
from .boxes import box_iou_inclusive, boxes_from_maps, cam_maps, gradcam_maps, upsample_normalise
from .classification import EvalResult, accuracy_vs_steps, batch_metrics, evaluate, is_td_model, step_outputs
from .unique_box import most_confident_correct, topk_correct, unique_box_correct, unique_box_sources

__all__ = [
    "box_iou_inclusive", "boxes_from_maps", "cam_maps", "gradcam_maps", "upsample_normalise",
    "EvalResult", "accuracy_vs_steps", "batch_metrics", "evaluate", "is_td_model", "step_outputs",
    "most_confident_correct", "topk_correct", "unique_box_correct", "unique_box_sources",
]
