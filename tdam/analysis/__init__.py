"""Analyses of trained models: Grad-CAM over computation steps (attention shift, supplement Fig. 1), weakly-supervised
localisation (supplement §1.2) and feature selectivity (supplement §3, Table 3, Figs. 3-4).

Modules: :mod:`~tdam.analysis.gradcam` (batched Grad-CAM on the last feature map, per computation step),
:mod:`~tdam.analysis.localization` (Top-1 / Top-5 / GT-known Loc, also under the unique-box rule),
:mod:`~tdam.analysis.selectivity` (ρ(X, Y), H(X, Y^j), H(Y) and Table 3), :mod:`~tdam.analysis.attention_shift`
(per-step predictions and where the boxes land on two-object images), :mod:`~tdam.analysis.plots` (figures),
:mod:`~tdam.analysis.loading` (checkpoint -> model + evaluation data), :mod:`~tdam.analysis.params` (notebook
parameters). Box extraction and IoU come from :mod:`tdam.evaluation.boxes`, the unique-box rule from
:mod:`tdam.evaluation.unique_box`.
"""
from .attention_shift import object_rates, steps_table, two_object_targets
from .gradcam import CamResult, capture_output, grad_cam, grad_cam_maps, grad_cam_steps, head_grad_cam, step_features
from .loading import (AnalysisRun, choose_images, crop_boxes, crop_objects, image_batches, load_images, load_run,
                      localization_batches, model_label, resolve_checkpoint, sample_indices, spread,
                      two_object_indices)
from .localization import (LOC_METRICS, LocalizationResult, StepLocalization, evaluate_localization,
                           localization_hits, localize_batch, max_iou, pad_boxes, unique_box_localization_hits)
from .params import AttentionShiftParams, LocalizationParams, SelectivityParams
from .plots import attention_shift_figure, boxes_figure, entropy_histograms, localization_figure, to_display
from .selectivity import (BlockSelectivity, collect_selectivity, default_selectivity_blocks, input_entropy,
                          output_entropy, pairwise_rho, paper_table3_column, rho_mean, selectivity_table,
                          table3_beside_paper)

__all__ = [
    "object_rates", "steps_table", "two_object_targets",
    "CamResult", "capture_output", "grad_cam", "grad_cam_maps", "grad_cam_steps", "head_grad_cam", "step_features",
    "AnalysisRun", "choose_images", "crop_boxes", "crop_objects", "image_batches", "load_images", "load_run",
    "localization_batches", "sample_indices", "spread", "model_label", "resolve_checkpoint", "two_object_indices",
    "LOC_METRICS", "LocalizationResult", "StepLocalization", "evaluate_localization", "localization_hits",
    "localize_batch", "max_iou", "pad_boxes", "unique_box_localization_hits",
    "AttentionShiftParams", "LocalizationParams", "SelectivityParams",
    "attention_shift_figure", "boxes_figure", "entropy_histograms", "localization_figure", "to_display",
    "BlockSelectivity", "collect_selectivity", "default_selectivity_blocks", "input_entropy", "output_entropy",
    "pairwise_rho", "paper_table3_column", "rho_mean", "selectivity_table", "table3_beside_paper",
]
