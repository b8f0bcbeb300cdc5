"""Type and range checks for single config values; each failure is one sentence that names the fix.

Hydra hands every override over as YAML-typed data, so ``method.lr=fast`` arrives as the string
'fast' and would otherwise fail deep inside training with a TypeError. These helpers turn that into
a :class:`FamrError` before any work starts. Stage modules keep their own range messages; these add
the type checks they need and the uniform wording of the new ones.
"""

from __future__ import annotations

import math
from typing import Any

from famr_cli.errors import FamrError


def is_number(value: Any) -> bool:
    """A finite int or float (never a bool, which YAML also reads from true/false)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: Any) -> bool:
    """An int, or a float with no fractional part (2.0), never a bool."""
    return is_number(value) and float(value).is_integer()


def number(value: Any, key: str, example: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    """``value`` as a float, or FamrError naming ``key``; ``positive`` requires > 0, ``minimum`` >= it."""
    if not is_number(value):
        raise FamrError(f"{key} must be a number (got {value}); use e.g. {key}={example}.")
    if positive and value <= 0:
        raise FamrError(f"{key} must be positive (got {value}); use e.g. {key}={example}.")
    if minimum is not None and value < minimum:
        raise FamrError(f"{key} must be >= {minimum:g} (got {value}); use e.g. {key}={example}.")
    return float(value)


def whole(value: Any, key: str, example: Any, *, minimum: int | None = None) -> int:
    """``value`` as an int (2.0 counts as 2), or FamrError naming ``key``; ``minimum`` is inclusive."""
    if not is_whole(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise FamrError(f"{key} must be a whole number{bound} (got {value}); use e.g. {key}={example}.")
    return int(value)


def flag(value: Any, key: str) -> bool:
    """A YAML boolean; strings such as 'maybe' or 'yes' are refused rather than read as True."""
    if not isinstance(value, bool):
        raise FamrError(f"{key} must be true or false (got {value}); use {key}=true or {key}=false.")
    return value
