"""Which commit of famr's source is running: what results files, tuned files and privacy tables name as provenance."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def current_commit(repo: Path = PACKAGE_DIR) -> str:
    """The short hash of HEAD of the checkout ``repo`` lies in, or ``unknown`` outside one (an installed wheel)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"
