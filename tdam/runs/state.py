"""The state of a run, computed from its files (never stored beside them, so it cannot disagree with them).

==============  ====================================================================================================
``finished``    ``last.pth`` holds the final epoch and every output is there: ``summary.json``, the curves, the
                metrics and, when the run validated, ``best.pth`` and ``best.safetensors``
``incomplete``  ``last.pth`` holds the final epoch but an output is missing (the process died after its last save):
                the next request for the run writes the missing outputs without training
``interrupted`` ``last.pth`` holds an earlier epoch (or a mid-epoch state): the next request resumes it
``empty``       no ``last.pth`` yet (a run that never saved, or one being started)
``damaged``     ``last.pth`` or ``summary.json`` cannot be read; ``detail`` says why
==============  ====================================================================================================

Reading the state costs one small JSON read for a finished run; only a run without ``summary.json`` has its
``last.pth`` opened.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tdam.runs.layout import BEST_FILE, FINAL_OUTPUTS, LAST_FILE, SAFETENSORS_FILE, SUMMARY_FILE

__all__ = ["RunState", "run_state", "STATES"]

STATES = ("finished", "incomplete", "interrupted", "empty", "damaged")


@dataclass(frozen=True)
class RunState:
    """What the files of a run folder say: ``state`` (one of :data:`STATES`), ``epoch`` the epochs ``last.pth``
    holds, ``epochs`` the epochs planned, ``missing`` the outputs a run trained to the end still lacks, ``detail``
    why a run is damaged."""

    folder: Path
    state: str
    epoch: int | None = None
    epochs: int | None = None
    missing: tuple[str, ...] = ()
    detail: str = ""

    @property
    def trained(self) -> bool:
        """``last.pth`` holds the final epoch (finished, or incomplete: outputs to write, nothing to train)."""
        return self.state in ("finished", "incomplete")

    @property
    def progress(self) -> str:
        """``3/3``, ``2/5``, ``-`` (epochs trained / planned)."""
        if self.epochs is None:
            return "-"
        return f"{self.epoch if self.epoch is not None else 0}/{self.epochs}"


def _missing(folder: Path, validated: bool) -> tuple[str, ...]:
    wanted = (*FINAL_OUTPUTS, *((BEST_FILE, SAFETENSORS_FILE) if validated else ()))
    return tuple(name for name in wanted if not (folder / name).is_file())


def run_state(folder: str | os.PathLike) -> RunState:
    """The :class:`RunState` of the run in ``folder`` (see the module table)."""
    folder = Path(folder)
    summary = folder / SUMMARY_FILE
    if summary.is_file():
        try:
            s = json.loads(summary.read_text())
            epoch, epochs = int(s["final"]["epoch"]), int(s["config"]["epochs"])
            validated = s.get("best") is not None
        except (ValueError, KeyError, TypeError) as e:
            return RunState(folder, "damaged", detail=f"{summary}: unreadable summary ({type(e).__name__}: {e})")
        if not (folder / LAST_FILE).is_file():
            return RunState(folder, "damaged", epoch, epochs, detail=f"{folder / LAST_FILE} is missing beside {summary}")
        if epoch >= epochs:
            missing = _missing(folder, validated)
            return RunState(folder, "incomplete" if missing else "finished", epoch, epochs, missing)
    last = folder / LAST_FILE
    if not last.is_file():
        return RunState(folder, "empty")
    from tdam.checkpoint import CheckpointError, read_checkpoint   # torch: only for a run without summary.json

    try:
        ck = read_checkpoint(last)
        epoch, epochs = int(ck["epoch"]), int(ck["config"]["epochs"])
        mid_epoch = int(ck.get("epoch_step") or 0) > 0
        validated = (ck.get("metrics") or {}).get("best") is not None
    except (CheckpointError, KeyError, TypeError, ValueError) as e:
        return RunState(folder, "damaged", detail=f"{last}: {e}")
    if epoch < epochs or mid_epoch:
        return RunState(folder, "interrupted", epoch, epochs)
    return RunState(folder, "incomplete", epoch, epochs, _missing(folder, validated))
