"""Which commit of famr's source is running: what results files, tuned files and privacy tables name as provenance."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path


def checkout_commit(path: Path) -> str:
    """The short hash of HEAD of the git checkout that tracks the file ``path``, or ``unknown`` when none does: an
    installed wheel is not tracked, even in a virtual environment that lies inside some other repository."""
    git = ["git", "-C", str(path.parent)]
    try:
        tracked = subprocess.run([*git, "ls-files", "--error-unmatch", "--", path.name], capture_output=True, text=True, timeout=10)
        if tracked.returncode != 0:
            return "unknown"
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() or "unknown"


@cache
def current_commit() -> str:
    """The commit of the famr source this process imported, looked up once."""
    return checkout_commit(Path(__file__).resolve())
