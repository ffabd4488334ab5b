"""The one check behind every "wrong configuration" error: a ``ValueError`` that names the valid choices."""
from __future__ import annotations

from typing import Any, Iterable

__all__ = ["check_choice"]


def check_choice(name: str, value: Any, choices: Iterable) -> None:
    """Raise ``ValueError("<name>=<value> is not valid; valid choices are [...]")`` unless ``value`` is a choice."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; valid choices are {choices}")
