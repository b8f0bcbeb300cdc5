"""A resumable Optuna study in a journal file, and the trials file beside it.

Optuna's journal storage appends one line per event to a plain file, so a study survives a killed
process and moves to another machine with a copy of that file. A trial that was running when its
process died is marked failed on resume and does not count against the budget: a killed search loses
that one trial and nothing else. Every finished trial is also appended to a JSON-lines trials file
(values, metrics, seconds) that people and tables read without Optuna.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("famr")

# Trial outcomes in the trials file. Rejected and failed trials spend budget like completed ones.
OK, REJECTED, FAILED = "ok", "rejected", "failed"


def open_study(name: str, storage: str | None, seed: int, direction: str = "minimize"):
    """Create or resume the study ``name``; ``storage`` is a journal file path, or None for memory only."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = None
    if storage:
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        backend = JournalStorage(JournalFileBackend(str(storage)))
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(study_name=name, storage=backend, sampler=sampler, direction=direction, load_if_exists=True)
    if study.trials:
        # The sampler's random state is not in the journal: reseeded with `seed` alone, a resumed study
        # would draw its first points again (TPE's start-up trials are random) and spend budget on replays.
        study.sampler = optuna.samplers.TPESampler(seed=resume_seed(seed, len(study.trials)))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # Left running by a process that died: it never finished, so it is retried, not counted.
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        log.info("Study %s: trial %d was interrupted; it is marked failed and does not count.", name, trial.number)
    return study


def resume_seed(seed: int, trials_so_far: int) -> int:
    """A sampler seed for a study resumed after ``trials_so_far`` trials: reproducible, and new each time."""
    import numpy as np

    return int(np.random.SeedSequence([seed, trials_so_far]).generate_state(1)[0])


def _finished(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def spent_trials(study) -> int:
    """Distinct settings tried so far: finished trials, rejected (pruned) ones included, a replayed setting once."""
    return len({tuple(sorted(t.params.items())) or ("trial", t.number) for t in _finished(study)})


def already_tried(study, params: dict[str, Any]) -> bool:
    """Whether a finished trial ran exactly these values (runs are deterministic: a replay teaches nothing)."""
    wanted = tuple(sorted(params.items()))
    return any(tuple(sorted(t.params.items())) == wanted for t in _finished(study))


def finish_trial(study, trial, value: float, state: str) -> None:
    from optuna.trial import TrialState

    if state == OK and math.isfinite(value):
        study.tell(trial, value)
    else:
        # Rejected or failed: Optuna learns the region is bad, and the trial still spends budget.
        study.tell(trial, state=TrialState.PRUNED)


def append_trial(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def read_trials(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def distinct_settings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first record of each setting tried: the trials and acceptances a study counts (``spent_trials``);
    a study resumed before replays were skipped holds some settings twice."""
    seen: set[tuple] = set()
    kept = []
    for record in records:
        key = tuple(sorted(record["params"].items()))
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept


def best_trial(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The accepted trial with the lowest objective (ties: the earlier one)."""
    accepted = [r for r in records if r["state"] == OK and r["objective"] is not None and math.isfinite(r["objective"])]
    return min(accepted, key=lambda r: (r["objective"], r["number"])) if accepted else None
