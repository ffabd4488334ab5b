"""Evaluating trained models over data (no training: models come as checkpoints, see :mod:`tdam.notebook`).

Modules: :mod:`~tdam.evaluation.data` (evaluation datasets, a checkpoint's model with its data, batches with boxes),
:mod:`~tdam.evaluation.classes` (the model's class count must be the data's: :class:`ClassCountError`),
:mod:`~tdam.evaluation.classification` (Table 1 accuracy: last / most-confident / unique-box, accuracy against t,
per-class), :mod:`~tdam.evaluation.localization` (Top-1 / Top-5 / GT-known Loc), :mod:`~tdam.evaluation.selectivity`
(Table 3, Figs. 3-4), :mod:`~tdam.evaluation.attention_shift` (Fig. 1 as tables), :mod:`~tdam.evaluation.cost`
(params, FLOPs, memory, throughput), :mod:`~tdam.evaluation.ablations` (Table 2 rows),
:mod:`~tdam.evaluation.anytime` (anytime prediction: accuracy against compute over a confidence-threshold sweep),
:mod:`~tdam.evaluation.figures` (the figures), :mod:`~tdam.evaluation.provenance` (the facts every results row
carries: run, epochs, train_on, t evaluated, images, data, size, and the paper-setting decision read from them). Maps
and boxes come from :mod:`tdam.cam`, per-image metrics from :mod:`tdam.metrics`, the paper's numbers from
:mod:`tdam.reference`.
"""
from .anytime import anytime_curve
from .classes import ClassCountError
from .classification import EvalResult, accuracy_vs_steps, batch_metrics, evaluate
from .data import EvalRun, eval_dataset, eval_loader, load_run, v2_root

__all__ = ["anytime_curve", "ClassCountError", "EvalResult", "accuracy_vs_steps", "batch_metrics", "evaluate", "EvalRun",
           "eval_dataset", "eval_loader", "load_run", "v2_root"]
