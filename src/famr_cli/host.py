"""The host machine and the famr-run it has, without importing torch (the reproduce runner, famr-tune and
the table writers stay light)."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from famr_cli.errors import FamrError


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset / cgroup CPU pinning
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _first_cpu_fields(cpuinfo: Path) -> dict[str, str]:
    """The fields of the first processor's block of ``cpuinfo`` (empty when it cannot be read)."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text().splitlines():
            if not line.strip():
                break  # the first processor's block is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return {}
    return fields


def _flags(fields: dict[str, str]) -> set[str]:
    return set(fields.get("flags", "").split())


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags the OS lists for the CPU (empty where it lists none)."""
    return _flags(_first_cpu_fields(cpuinfo))


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model as the OS reports it, with its family, model and AVX-512 where the OS lists them
    (e.g. "AMD EPYC, family 26, model 2, AVX-512"). A bare "AMD EPYC" names several generations, whose
    kernels round differently: the same seeds train a different original on each."""
    fields = _first_cpu_fields(cpuinfo)
    name = fields.get("model name")
    if not name:
        return platform.processor() or platform.machine()
    details = [f"family {fields['cpu family']}"] if fields.get("cpu family") else []
    details += [f"model {fields['model']}"] if fields.get("model") else []
    details += ["AVX-512"] if "avx512f" in _flags(fields) else []
    return ", ".join([name, *details])


def famr_run_command() -> list[str]:
    """What famr-reproduce and famr-tune start as famr-run: ``$FAMR_RUN_COMMAND`` split as a shell would
    (a wrapper, say), else the famr-run next to this interpreter (the project's venv), else the one on
    PATH, else ``python -m famr_cli``."""
    chosen = os.environ.get("FAMR_RUN_COMMAND", "").strip()
    if chosen:
        try:
            return shlex.split(chosen)
        except ValueError as err:
            raise FamrError(f"FAMR_RUN_COMMAND={chosen!r} does not split as a shell line ({err}); fix its quoting or unset it.") from None
    exe = Path(sys.executable).with_name("famr-run")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("famr-run")
    return [found] if found else [sys.executable, "-m", "famr_cli"]


def famr_privacy_command() -> list[str]:
    """What famr-reproduce --privacy starts as famr-privacy: the one next to this interpreter, else on PATH, else
    ``python -m famr_cli.privacy.cli`` (its famr-run jobs follow :func:`famr_run_command`)."""
    exe = Path(sys.executable).with_name("famr-privacy")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("famr-privacy")
    return [found] if found else [sys.executable, "-m", "famr_cli.privacy.cli"]


# SLURM's environment in a job (sbatch, srun, submitit): what sacct and squeue call the job.
SLURM_KEYS = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "restart_count": "SLURM_RESTART_COUNT",
    "partition": "SLURM_JOB_PARTITION",
    "node": "SLURMD_NODENAME",
}


def run_host() -> dict:
    """Where this process runs: the node's name, and under SLURM the job as ``sacct`` lists it (``sacct_id``: the
    array form ``<array job>_<task>`` for an array task, which submitit's sweeps are, else the job id)."""
    host: dict = {"node": os.environ.get("SLURMD_NODENAME") or socket.gethostname()}
    slurm = {key: os.environ[name] for key, name in SLURM_KEYS.items() if os.environ.get(name)}
    if slurm.get("job_id"):
        array = slurm.get("array_job_id") and slurm.get("array_task_id")
        slurm["sacct_id"] = f"{slurm['array_job_id']}_{slurm['array_task_id']}" if array else slurm["job_id"]
        host["slurm"] = slurm
    return host


def describe_run_host(host: dict) -> str:
    """One log line's worth: ``node n1, SLURM job 12_3 (id 15, restart 1)``, or the node alone outside SLURM."""
    slurm = host.get("slurm")
    if not slurm:
        return f"node {host['node']}"
    extra = [f"id {slurm['job_id']}"] if slurm["sacct_id"] != slurm["job_id"] else []
    extra += [f"restart {slurm['restart_count']}"] if slurm.get("restart_count", "0") != "0" else []
    return f"node {host['node']}, SLURM job {slurm['sacct_id']}" + (f" ({', '.join(extra)})" if extra else "")


def describe_machine() -> str:
    """This host: GPU name(s) when nvidia-smi lists any, the CPU model and the usable cores."""
    cpu = cpu_name()
    cores = available_cores()
    parts = [f"{cpu}, {cores} cores"]
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            names = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
            gpus = [n.strip() for n in names.splitlines() if n.strip()]
            if gpus:
                parts.insert(0, ", ".join(sorted(set(gpus))) + (f" x{len(gpus)}" if len(gpus) > 1 else ""))
        except (OSError, subprocess.SubprocessError):
            pass
    return "; ".join(parts)
