"""The Hydra sweeper behind ``hydra/sweeper=optuna_gap``: Optuna trials run as famr-run jobs.

Each trial draws values from the method's declared space (or ``params``), runs one famr-run job per
forget set (``forget_sets``; none: the composed config's own) through the configured launcher, reads
each job's results.json and scores the trial by the mean ``objective`` over its forget sets (Avg. Gap
to Retrain by default). A job that failed, or whose retained accuracy fell more than
``max_retain_drop`` points below the original's (the collapse guard, applied to every forget set),
fails or rejects the whole trial.
The study lives in a journal file when ``storage`` is set, so ``n_trials`` is the study's total
budget: a resumed search runs only the trials still missing.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from famr_cli.errors import FamrError
from famr_cli.tune.space import Param, declared_space, draw, parse_space
from famr_cli.tune.study import (
    FAILED,
    OK,
    REJECTED,
    already_tried,
    append_trial,
    best_trial,
    finish_trial,
    open_study,
    read_trials,
    spent_trials,
)

log = logging.getLogger("famr")

# Draws in a row that repeat a finished trial before a study stops: its space has no new point left.
MAX_REPLAYS = 50


@dataclass(frozen=True)
class SweepSettings:
    direction: str = "minimize"
    study_name: str | None = None
    storage: str | None = None
    n_trials: int = 20
    seed: int = 0
    params: dict[str, Any] | None = None
    max_retain_drop: float = 10.0
    trials_file: str | None = None
    # Each a space-separated list of famr-run overrides naming one forget set; empty: the config's own.
    forget_sets: tuple[str, ...] = ()
    # Trials drawn before any of them is told, and launched together (k x forget sets jobs in one launcher call).
    parallel_trials: int = 1


def trial_outcome(results: dict[str, Any] | None, objective: str, max_retain_drop: float) -> tuple[str, float, str]:
    """(state, objective value, reason) of one finished job's results.json."""
    if results is None or results.get("status") != "ok":
        reason = "no results.json" if results is None else f"status {results.get('status')}: {results.get('error', '')}"
        return FAILED, math.inf, reason
    value: Any = results
    for part in objective.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return FAILED, math.inf, f"objective {objective} missing or not finite (is evaluate.reference=retrain?)"
    metrics = results["metrics"]
    drop = metrics["original"]["retain_test_acc"] - metrics["unlearned"]["retain_test_acc"]
    if drop > max_retain_drop:
        return REJECTED, float(value), f"retained accuracy fell {drop:.2f} points (> {max_retain_drop:g})"
    return OK, float(value), ""


def combined_outcome(outcomes: list[tuple[str, float, str]], labels: list[str]) -> tuple[str, float, str]:
    """One trial's (state, objective, reason) from its forget sets' outcomes: the mean objective, failed if
    any set failed, rejected if any set tripped the guard (the reason names which)."""
    for state in (FAILED, REJECTED):
        bad = [f"{label}: {reason}" for (s, _, reason), label in zip(outcomes, labels) if s == state]
        if bad:
            values = [v for _, v, _ in outcomes]
            mean = sum(values) / len(values) if all(math.isfinite(v) for v in values) else math.inf
            return state, mean, "; ".join(bad)
    return OK, sum(v for _, v, _ in outcomes) / len(outcomes), ""


def _portable(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it: a trials file stays valid in a copy
    of the search moved to another checkout or machine."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def trial_record(
    number: int,
    values: dict[str, Any],
    state: str,
    value: float,
    reason: str,
    results: dict | None,
    wall_s: float,
    run_dir: Path,
    per_set: list[dict[str, Any]] | None = None,
):
    """One line of the trials file: what was tried, what it scored, what it cost.

    With several forget sets, ``results`` and ``run_dir`` are the first set's (the flat fields older
    readers know), the objective and state are the trial's, and ``forget_sets`` holds every set's record.
    """
    record = _job_record(results, run_dir)
    record.update(number=number, params=values, state=state, objective=value if math.isfinite(value) else None, reason=reason)
    record["wall_s"] = wall_s
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if per_set is not None:
        record["forget_sets"] = per_set
    return record


def forget_set_record(forget_set: str, outcome: tuple[str, float, str], results: dict | None, run_dir: Path) -> dict[str, Any]:
    """What one forget set of a trial scored."""
    state, value, reason = outcome
    return {
        "forget_set": forget_set,
        "state": state,
        "objective": value if math.isfinite(value) else None,
        "reason": reason,
        **_job_record(results, run_dir),
    }


def _job_record(results: dict | None, run_dir: Path) -> dict[str, Any]:
    metrics = (results or {}).get("metrics", {})

    def core(name: str) -> dict[str, Any]:
        scores = metrics.get(name) or {}
        keys = ("UA", "RA", "TA", "mia_efficacy", "forget_test_acc", "retain_test_acc")
        return {k: scores.get(k) for k in keys if k in scores}

    return {
        "unlearned": core("unlearned"),
        "original": core("original"),
        "retrain": core("retrain"),
        "gaps": {k: v for k, v in ((results or {}).get("gaps") or {}).items() if isinstance(v, (int, float))},
        "unlearn_s": ((results or {}).get("timing") or {}).get("unlearn_s"),
        "eval_split": ((results or {}).get("dataset") or {}).get("eval_split"),
        "run_dir": _portable(run_dir),
    }


def run_study(settings: SweepSettings, config: DictConfig, arguments: list[str], launch) -> dict[str, Any]:
    """The search itself; ``launch(jobs, first_index)`` runs famr-run jobs (a list of override lists, one per
    forget set, which a launcher may run side by side) and returns their run dirs in order."""
    choices = config.hydra.runtime.choices
    experiment, forget, method = (str(choices.get(k)) for k in ("experiment", "forget", "method"))
    space: list[Param] = parse_space(settings.params) if settings.params else declared_space(experiment, method)
    name = settings.study_name or f"{experiment}-{forget}-{method}"
    searched = {p.key for p in space}
    fixed = [a for a in arguments if a.split("=", 1)[0].lstrip("+~") in searched]
    if fixed:
        log.warning("Study %s searches %s, so the overrides %s are ignored.", name, sorted(searched), fixed)
        arguments = [a for a in arguments if a not in fixed]
    sweep_dir = Path(config.hydra.sweep.dir)
    trials_path = (
        Path(settings.trials_file) if settings.trials_file else _beside(settings.storage, ".trials.jsonl") or sweep_dir / "trials.jsonl"
    )
    study = open_study(name, settings.storage, settings.seed, settings.direction)
    done = spent_trials(study)
    if done:
        log.info("Study %s resumed: %d of %d trials already done (%s).", name, done, settings.n_trials, settings.storage)
    objective = str(config.get("objective", "gaps.avg_gap"))
    from optuna.trial import TrialState

    forget_sets = list(settings.forget_sets) or [""]
    replays = 0
    while spent_trials(study) < settings.n_trials:
        # At most k trials at once, and never more than the budget has left (each batch holds distinct settings).
        batch: list[tuple[Any, dict[str, Any]]] = []
        wanted = min(settings.parallel_trials, settings.n_trials - spent_trials(study))
        while len(batch) < wanted:
            trial = study.ask()
            values = draw(space, trial)
            if already_tried(study, trial.params) or any(trial.params == other.params for other, _ in batch):
                # Not run and not counted: a discrete space can run out of new points, hence the cap.
                study.tell(trial, state=TrialState.FAIL)
                replays += 1
                if replays >= MAX_REPLAYS:
                    break
                continue
            replays = 0
            batch.append((trial, values))
        if batch:  # empty only when every draw repeated a finished trial: the check below ends the study
            run_batch(batch, launch, study, arguments, forget_sets, objective, settings, trials_path, name)
        if replays >= MAX_REPLAYS:
            log.warning("Study %s: %d draws in a row repeated finished trials; the space is exhausted.", name, replays)
            break
    best = best_trial([r for r in read_trials(trials_path)])
    summary = {
        "study": name,
        "storage": settings.storage,
        "trials_file": str(trials_path),
        "n_trials": settings.n_trials,
        "objective": objective,
        "best_params": best["params"] if best else None,
        "best_value": best["objective"] if best else math.inf,
        "best_trial": best["number"] if best else None,
        # The space this study drew from, as written in a tuned file's provenance (famr-tune reads it here,
        # so a spaces file edited while a search runs cannot make the two disagree).
        "space": {p.key: p.as_dict() for p in space},
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "optimization_results.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(summary)))
    return summary


def run_batch(batch, launch, study, arguments: list[str], forget_sets: list[str], objective: str, settings, trials_path: Path, name: str):
    """Launch a batch of trials' jobs in one launcher call, then score, tell and record each trial."""
    start = time.perf_counter()
    jobs = [[*arguments, *(f"{k}={v}" for k, v in values.items()), *fs.split()] for _, values in batch for fs in forget_sets]
    # Job dirs are numbered from the batch's first trial: trial numbers only grow, so no batch reuses a dir.
    run_dirs = launch(jobs, batch[0][0].number * len(forget_sets))
    seconds = (time.perf_counter() - start) / len(batch)  # each trial's share of the batch's wall time
    for position, (trial, values) in enumerate(batch):
        dirs = run_dirs[position * len(forget_sets) : (position + 1) * len(forget_sets)]
        results = [_read_results(d) for d in dirs]
        outcomes = [trial_outcome(r, objective, settings.max_retain_drop) for r in results]
        state, value, reason = combined_outcome(outcomes, forget_sets)
        finish_trial(study, trial, value, state)
        per_set = None
        if settings.forget_sets:
            per_set = [forget_set_record(*args) for args in zip(forget_sets, outcomes, results, dirs)]
        record = trial_record(trial.number, values, state, value, reason, results[0], seconds, dirs[0], per_set)
        append_trial(trials_path, record)
        log.info("Study %s trial %d: %s %s=%.4g %s", name, trial.number, state, objective, value, reason)


def _beside(storage: str | None, suffix: str) -> Path | None:
    return None if not storage else Path(storage).with_suffix(suffix)


def _read_results(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "results.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def settings_from(kwargs: dict[str, Any]) -> SweepSettings:
    known = set(SweepSettings.__dataclass_fields__)
    unknown = set(kwargs) - known
    if unknown:
        raise FamrError(f"hydra.sweeper has unknown keys {sorted(unknown)}; valid keys: {', '.join(sorted(known))}.")
    if int(kwargs.get("n_trials", 20)) < 1:
        raise FamrError(f"hydra.sweeper.n_trials must be at least 1 (got {kwargs.get('n_trials')}).")
    parallel = kwargs.get("parallel_trials", 1)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise FamrError(
            f"hydra.sweeper.parallel_trials must be a whole number >= 1 (got {parallel}); e.g. hydra.sweeper.parallel_trials=2."
        )
    params = kwargs.get("params")
    if params is not None and not isinstance(params, dict):
        params = OmegaConf.to_container(params, resolve=True)
    forget_sets = kwargs.get("forget_sets") or ()
    if isinstance(forget_sets, str) or not all(isinstance(f, str) and f.strip() for f in forget_sets):
        raise FamrError(
            "hydra.sweeper.forget_sets must be a list of override strings, "
            f"e.g. ['forget.classes=[3]','forget.classes=[8]'] (got {forget_sets})."
        )
    return SweepSettings(**{**kwargs, "params": params, "forget_sets": tuple(forget_sets)})
