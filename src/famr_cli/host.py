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


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model as the OS reports it, with its family, model and AVX-512 where the OS lists them
    (e.g. "AMD EPYC, family 26, model 2, AVX-512"). A bare "AMD EPYC" names several generations, whose
    kernels round differently: the same seeds train a different original on each."""
    try:
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text().splitlines():
            if not line.strip():
                break  # the first processor's block is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        fields = {}
    name = fields.get("model name")
    if not name:
        return platform.processor() or platform.machine()
    details = [f"family {fields['cpu family']}"] if fields.get("cpu family") else []
    details += [f"model {fields['model']}"] if fields.get("model") else []
    details += ["AVX-512"] if "avx512f" in fields.get("flags", "").split() else []
    return ", ".join([name, *details])
