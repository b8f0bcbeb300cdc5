"""The host machine, without importing torch (the reproduce runner and table writers stay light)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset / cgroup CPU pinning
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU model as the OS reports it (e.g. "AMD EPYC"), for result files and tables."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
