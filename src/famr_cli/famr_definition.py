"""What makes a FAMR run FAMR as famr defines it (docs/theory.md), checked on a config alone (no torch).

FAMR is the forget loss KL(u || p) on D_f, every parameter moving and anchored, BatchNorm statistics
frozen, no retained data. A run of ``method=famr`` that changes one of these is not FAMR: tables and
summaries name what it changed instead of labelling it FAMR, and the named variants
(conf/method/famr_*.yaml) carry their own names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The structural options and the value each takes in FAMR as defined.
DEFINITION: dict[str, Any] = {
    "loss": "kl_uniform",
    "anchor": "all",
    "bn": "eval",
    "head_only": False,
    "trainable": None,
    "retain_kd": 0.0,
}


def departures(method: Mapping[str, Any]) -> list[str]:
    """``key=value`` for each structural option of a FAMR method section that differs from the definition."""
    if method.get("name") != "famr":
        return []
    out = []
    for key, defined in DEFINITION.items():
        value = method.get(key, defined)
        if key == "trainable" and not value:
            value = None  # [] moves every parameter, like null
        if key == "retain_kd" and value is not None:
            value = float(value)
        if value != defined:
            listed = isinstance(value, Sequence) and not isinstance(value, str)
            shown = f"[{','.join(map(str, value))}]" if listed else value
            out.append(f"{key}={shown}")
    return out


def row_key(method: Mapping[str, Any], fallback: str) -> str:
    """The row a run belongs in: a named variant's name, ``famr`` for FAMR as defined, and for a FAMR run
    that changed the definition without a variant name, ``famr[<what it changed>]``."""
    if method.get("variant"):
        return str(method["variant"])
    changed = departures(method)
    return f"famr[{', '.join(changed)}]" if changed else fallback


def row_label(key: str, names: Mapping[str, str]) -> str:
    """The display name of :func:`row_key`'s key: ``FAMR (loss=entropy)`` for a changed FAMR."""
    if key.startswith("famr[") and key.endswith("]"):
        return f"{names.get('famr', 'FAMR')} ({key[5:-1]})"
    return names.get(key, key)
