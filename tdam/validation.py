"""The checks behind every "wrong configuration" error, in one place.

Each raises ``ValueError`` with a message that names the parameter, the value given and what is valid, so a wrong
notebook parameter, params-file entry or CLI flag fails before any model or data is touched.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch

__all__ = ["check_choice", "check_int", "check_number", "check_bool", "resolve_device", "DEVICE_CHOICES"]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def check_choice(name: str, value: Any, choices: Iterable) -> None:
    """Raise ``ValueError("<name>=<value> is not valid; valid choices are [...]")`` unless ``value`` is a choice."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; valid choices are {choices}")


def check_int(name: str, value: Any, lo: int, hi: int | None = None, *, optional: bool = False) -> None:
    """An integer (not a bool) in ``lo..hi`` (``hi=None``: no upper bound); ``None`` passes when ``optional``."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name}={value!r}: expected an integer {rng}{' or None' if optional else ''}")


def check_number(name: str, value: Any, lo: float, hi: float | None = None, *, optional: bool = False) -> None:
    """A finite real number (not a bool) in ``[lo, hi]``; NaN and infinities are refused."""
    if optional and value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name}={value!r}: expected a finite number {rng}{' or None' if optional else ''}")


def check_bool(name: str, value: Any, *, optional: bool = False) -> None:
    """``True`` or ``False`` (``None`` too when ``optional``, meaning "automatic")."""
    if not (isinstance(value, bool) or (optional and value is None)):
        raise ValueError(f"{name}={value!r}: expected true or false{' or null (automatic)' if optional else ''}")


def resolve_device(device: str | torch.device, local_rank: int = 0) -> torch.device:
    """``'auto'`` -> this process's CUDA device when there is one, else the CPU; ``'cpu'``, ``'cuda'`` (this
    process's GPU, ``local_rank`` under torchrun) and ``'cuda:N'`` as given. Asking for CUDA where there is none is an
    error, never a silent fall back to the CPU."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or (isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: no CUDA device is available here; use 'cpu' or 'auto'")
        return torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)
    raise ValueError(f"device={device!r} is not valid; valid choices are {list(DEVICE_CHOICES)}")
