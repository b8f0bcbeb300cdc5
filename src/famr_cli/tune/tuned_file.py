"""What a finished search writes: ``conf/method/tuned/<experiment>/<forget>/<method>.yaml``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

HEADER = (
    "# Values for experiment={experiment} forget={forget}, merged into `method` (docs/tuning.md); method.<key>=... beats them.\n"
    "# Written by famr-tune: {trials} trials per method, selected by the mean {objective} over the forget sets in\n"
    "# tuned_by, on the validation split (collapse guard: retained accuracy within {guard:g} points of the original\n"
    "# on each). The file holds only what the search chose; every other key is the method's own default.\n"
)


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
    """Write the best values (``method.<key>``) and the search's provenance, replacing any earlier file whole:
    nothing of an earlier search or hand choice is carried over."""
    values: dict[str, Any] = {k.removeprefix("method."): v for k, v in best_params.items()}
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


def tuned_file_problems(path: Path, tuned_root: Path) -> list[str]:
    """Why the tuned file ``path`` (``<tuned_root>/<experiment>/<forget>/<method>.yaml``) is not what its
    search chose, one sentence each; [] for a file that holds exactly what a famr-tune search on the
    validation split chose, over the space that method has today, and the search's provenance."""
    from famr_cli.tune.space import declared_space

    experiment, forget, method = path.relative_to(tuned_root).with_suffix("").parts
    values = yaml.safe_load(path.read_text()) or {}
    tuned_by = values.pop("tuned_by", None) or {}
    problems = []
    if tuned_by.get("protocol") != "famr-tune":
        problems.append(f"{path.name}: tuned_by.protocol is {tuned_by.get('protocol')!r}, not famr-tune: only a search's choice ships.")
    if tuned_by.get("split") != "val":
        problems.append(f"{path.name}: its search did not select on the validation split (tuned_by.split={tuned_by.get('split')!r}).")
    if len(tuned_by.get("forget_sets") or []) < 2:
        problems.append(f"{path.name}: its search scored fewer than two forget sets ({tuned_by.get('forget_sets')}).")
    space = {p.key.removeprefix("method."): p for p in declared_space(experiment, method)}
    recorded = {k.removeprefix("method."): v for k, v in (tuned_by.get("space") or {}).items()}
    if recorded != {k: p.as_dict() for k, p in space.items()}:
        problems.append(f"{path.name}: the space its search ran over ({recorded}) is not {method}'s declared space today.")
    for key, value in values.items():
        if key not in space:
            problems.append(
                f"{path.name}: {key} is outside the search's space ({', '.join(space)}): a tuned file holds only searched keys."
            )
        elif not space[key].contains(value):
            problems.append(f"{path.name}: {key}={value} lies outside its searched range {space[key].as_dict()}.")
        elif (space[key].below or space[key].at_most) and value > space[key].upper({f"method.{k}": v for k, v in values.items()}):
            bound = f"below {space[key].below}" if space[key].below else f"at most {space[key].at_most}"
            problems.append(f"{path.name}: {key}={value} breaks its bound {bound}.")
    missing = sorted(set(space) - set(values))
    if missing:
        problems.append(f"{path.name}: the search's keys {missing} are missing: a tuned file holds every value its search chose.")
    return problems
