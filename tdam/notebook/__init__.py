"""Support for the nine notebooks, so that each stays a few library calls: validated parameters
(:mod:`~tdam.notebook.params`), the trained models they evaluate (:mod:`~tdam.notebook.runs`, the only caller of
the trainer) and their result files and provenance (:mod:`~tdam.notebook.outputs`).

Typical cells: ``p = nb.parameters("06_weak_localization", globals())``, ``td, base = nb.load_pair(p)``,
``nb.write_table(table, RUN, "localization")``.
"""
from .outputs import (data_label, figure_name, file_digest, provenance, run_dir, run_figure_name, save_figure,
                      write_json, write_table)
from .params import NOTEBOOKS, VALIDATORS, Params, ParameterError, UnknownParameterError, notebook_defaults, parameters
from .runs import (ablation_config, ablation_run, at_steps, checkpoint, evaluated_checkpoints, load_pair,
                   resolve_checkpoint, trained_steps)
from tdam.evaluation.data import model_label

__all__ = [
    "data_label", "figure_name", "file_digest", "provenance", "run_dir", "run_figure_name", "save_figure",
    "write_json", "write_table",
    "NOTEBOOKS", "VALIDATORS", "Params", "ParameterError", "UnknownParameterError", "notebook_defaults", "parameters",
    "ablation_config", "ablation_run", "at_steps", "checkpoint", "evaluated_checkpoints", "load_pair",
    "resolve_checkpoint", "trained_steps", "model_label",
]
