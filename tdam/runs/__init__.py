"""Runs: one home for what a run *is*: its identity and folder, its one lock, its state, its lineage, listing and
pruning.

- :mod:`~tdam.runs.layout`: the files of a run folder, the run record (``run.json``), atomic JSON and links;
- :mod:`~tdam.runs.identity`: the one hash naming a run (ImageNet and transfer runs alike) and its folder name;
- :mod:`~tdam.runs.lock`: the run's one lock, honoured by the trainer, cached-run requests and ``prune``;
- :mod:`~tdam.runs.state`: finished / incomplete / interrupted / empty / damaged, computed from the files;
- :mod:`~tdam.runs.catalog`: every run under ``runs/``, and pruning (the command is ``python -m tdam.cache``).

This package knows folders and files, not configs: what a config's request is (which fields change the weights)
and which run a resume continues are the trainer's (:mod:`tdam.train.config`, :mod:`tdam.train.lineage`). Nothing
here imports the trainer or the notebooks.
"""
from tdam.runs.identity import folder_name, run_identity
from tdam.runs.layout import (BEST_EMA_FILE, BEST_FILE, CONFIG_FILE, ENV_FILE, FINAL_OUTPUTS, IMAGENET_KIND, INPUTS_FILE,
                              KINDS, LAST_FILE, LOG_FILE, SAFETENSORS_FILE, SUMMARY_FILE, TRANSFER_KIND, file_digest,
                              link_file, plain_json, read_record, write_json_atomic, write_record, write_text_atomic)
from tdam.runs.lock import RunLock, lock_holder
from tdam.runs.state import STATES, RunState, run_state

__all__ = ["folder_name", "run_identity", "BEST_EMA_FILE", "BEST_FILE", "CONFIG_FILE", "ENV_FILE", "FINAL_OUTPUTS",
           "IMAGENET_KIND", "INPUTS_FILE", "KINDS", "LAST_FILE", "LOG_FILE", "SAFETENSORS_FILE", "SUMMARY_FILE",
           "TRANSFER_KIND", "file_digest", "link_file", "plain_json", "read_record", "write_json_atomic", "write_record",
           "write_text_atomic", "RunLock", "lock_holder", "STATES", "RunState", "run_state"]
