"""What a finished search writes: ``conf/method/tuned/<experiment>/<forget>/<method>.yaml``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

HEADER = (
    "# Values for experiment={experiment} forget={forget}, merged into `method` (docs/tuning.md); method.<key>=... beats them.\n"
    "# Written by famr-tune: {trials} trials per method, selected by {objective} on the validation split\n"
    "# (collapse guard: retained accuracy within {guard:g} points of the original). Keys not searched keep the\n"
    "# values this file held before the search.\n"
)


def current_commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def write_tuned_file(
    path: Path,
    *,
    experiment: str,
    forget: str,
    best_params: dict[str, Any],
    provenance: dict[str, Any],
    objective: str,
    guard: float,
) -> Path:
    """Merge the best values (``method.<key>``) over the file's earlier values and record the search."""
    earlier = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    earlier.pop("tuned_by", None)
    values = {**earlier, **{k.removeprefix("method."): v for k, v in best_params.items()}}
    values["tuned_by"] = {"protocol": "famr-tune", **provenance, "date": time.strftime("%Y-%m-%d")}
    # One dump, block style throughout: a flow-style mapping (what PyYAML picks for a mapping of scalars
    # alone) followed by more keys is not valid YAML, and Hydra could not compose the file.
    body = yaml.safe_dump(values, sort_keys=False, default_flow_style=False)
    header = HEADER.format(experiment=experiment, forget=forget, trials=provenance["trials"], objective=objective, guard=guard)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + body)
    tmp.replace(path)
    return path
