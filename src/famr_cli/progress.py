"""Progress bars that stay silent when output is not a terminal (logs, CI, multirun files)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_enabled(setting: str | bool) -> bool:
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)


def progress_bar(total: int, desc: str, enabled: bool, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
