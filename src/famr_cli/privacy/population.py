"""Populations of models for the per-example privacy metrics: which famr-run sweeps build them, and reading them back.

Every member is an ordinary famr-run job with ``evaluate.forget_scores=true`` (its models' true-class log-odds on
D_f go into ``forget_scores.safetensors``), so members go through the keyed model cache (a Retrain or an original
is trained once, whichever job asks first, and a killed training resumes), run under any Hydra launcher, and a
sweep run again with ``skip_finished=true`` keeps every member that finished. Sweeps, under ``<dir>/populations/``:

* ``retrain``: ``method=retrain`` with one original (``train.seed`` pinned) and ``retrain_seed=0..2N-1``. Members
  0..N-1 are the Retrain population every row is compared with; members N..2N-1 are a disjoint population of
  Retrains, the reference row that shows the best score a method can get at this N.
* ``competition/<method>``: one original (``train.seed`` pinned), the unlearning seed ``seed=0..N-1`` varied: the
  setting of the NeurIPS 2023 competition.
* ``full/<method>``: ``seed=0..N-1`` with ``train.seed`` following it, so the original and the unlearning both vary.
  Member i unlearns original i and is compared with the same Retrain population (Retrain i has ``train.seed=i``, the
  cache entry member i of ``retrain`` trained). The originals of these jobs form the full protocol's Original row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from famr_cli.errors import FamrError
from famr_cli.sweep.jobs import Job, load_jobs

COMPETITION = "competition"
FULL = "full"
PROTOCOLS = (COMPETITION, FULL)
RETRAIN = "retrain"

# Every member skips what the privacy metrics do not read: the MIA fits, the robustness checks and the certificate.
MEMBER_OVERRIDES = (
    "evaluate.forget_scores=true",
    "evaluate.mia=false",
    "evaluate.robustness.enabled=false",
    "evaluate.certificate=false",
    "skip_finished=true",
    "progress=false",
)


def _seeds(first: int, count: int) -> str:
    return ",".join(str(s) for s in range(first, first + count))


@dataclass(frozen=True)
class PopulationSweep:
    """One famr-run sweep that builds a population: its name (``retrain``, ``competition/famr``...), dir and overrides."""

    name: str
    dir: Path
    overrides: tuple[str, ...]

    @property
    def protocol(self) -> str | None:
        return None if self.name == RETRAIN else self.name.split("/", 1)[0]

    @property
    def method(self) -> str | None:
        return None if self.name == RETRAIN else self.name.split("/", 1)[1]


def plan_populations(
    out_dir: Path, methods: list[str], models: int, protocols: list[str], train_seed: int, overrides: list[str], forget_seed: bool = False
) -> list[PopulationSweep]:
    """The sweeps of one privacy study, Retrains first (every row needs them).

    ``forget_seed``: the forget spec draws its samples with ``forget.seed``, which follows ``seed`` by default; it is
    pinned to ``train_seed`` (unless the overrides set it) so that every member forgets the same examples.
    """
    base = out_dir / "populations"
    pinned = forget_seed and not any(o.split("=", 1)[0] == "forget.seed" for o in overrides)
    user = (*overrides, *([f"forget.seed={train_seed}"] if pinned else []))
    sweeps = [
        PopulationSweep(
            RETRAIN,
            base / RETRAIN,
            (*user, "method=retrain", f"seed={train_seed}", f"train.seed={train_seed}", f"retrain_seed={_seeds(0, 2 * models)}"),
        )
    ]
    for protocol in protocols:
        for method in methods:
            seeds = (f"train.seed={train_seed}",) if protocol == COMPETITION else ("train.seed=${seed}",)
            sweeps.append(
                PopulationSweep(
                    f"{protocol}/{method}", base / protocol / method, (*user, f"method={method}", *seeds, f"seed={_seeds(0, models)}")
                )
            )
    return sweeps


@dataclass
class Population:
    """N members' scores on the same forget examples, and their accuracies (fractions) for the final score."""

    scores: np.ndarray  # (N, E) true-class log-odds
    ra: np.ndarray  # (N,) retained training accuracy
    ta: np.ndarray  # (N,) test accuracy on the retained classes (all classes when none is forgotten)
    seeds: list[int]


@dataclass
class SweepMembers:
    """What a population sweep holds: per member (keyed by its seed) the scores of each of its models."""

    sweep: PopulationSweep
    indices: np.ndarray | None  # D_f's training indices, the same for every member
    scores: dict[int, dict[str, np.ndarray]]  # seed -> {"unlearned" | "original" | "retrain": (E,)}
    accuracies: dict[int, dict[str, tuple[float, float]]]  # seed -> model -> (RA, TA) as fractions
    problems: list[str]  # members that did not finish ok, one line each
    seconds: dict[str, float] = field(default_factory=dict)  # results.json timing keys summed over the finished members

    def population(self, seeds: list[int], model: str = "unlearned") -> Population | None:
        """The members ``seeds``' ``model`` scores, or None when any of them is missing."""
        if any(s not in self.scores or model not in self.scores[s] for s in seeds):
            return None
        acc = [self.accuracies[s][model] for s in seeds]
        return Population(
            np.stack([self.scores[s][model] for s in seeds]), np.array([a[0] for a in acc]), np.array([a[1] for a in acc]), list(seeds)
        )


# What a member's model cost when it was made: its unlearning, and the Retrain or original it trained (results.json timing).
TIMED = ("unlearn_s", "retrain_s", "original_train_s")


def _member_seed(job: Job, sweep: PopulationSweep) -> int | None:
    key = "retrain_seed" if sweep.name == RETRAIN else "seed"
    value = job.overrides.get(key)
    return int(value) if value is not None and value.isdigit() else None


def _accuracies(results: dict, model: str) -> tuple[float, float]:
    metrics = results["metrics"][model]
    return float(metrics["RA"]) / 100.0, float(metrics["TA"]) / 100.0


def read_members(sweep: PopulationSweep) -> SweepMembers:
    """Every finished member of ``sweep`` (a job without ok results or without its scores file is a problem line)."""
    from famr_cli.privacy.scores import FORGET_SCORES_FILE, read_forget_scores  # torch, only once there is something to read

    members = SweepMembers(sweep, None, {}, {}, [])
    for job in load_jobs(sweep.dir):
        seed = _member_seed(job, sweep)
        if seed is None:
            continue
        if not job.ok:
            error = (job.results or {}).get("error", "no results.json: killed before it finished")
            members.problems.append(f"{sweep.name} seed {seed}: {job.status} ({error}) in {job.dir}")
            continue
        if not (job.dir / FORGET_SCORES_FILE).is_file():
            members.problems.append(f"{sweep.name} seed {seed}: no {FORGET_SCORES_FILE} in {job.dir}")
            continue
        tensors = read_forget_scores(job.dir)
        indices = tensors.pop("indices").numpy()
        if members.indices is None:
            members.indices = indices
        elif not np.array_equal(members.indices, indices):
            raise FamrError(
                f"{job.dir} scored another forget set than the rest of {sweep.dir}; run every member with the same forget spec."
            )
        members.scores[seed] = {name: t.numpy() for name, t in tensors.items()}
        members.accuracies[seed] = {name: _accuracies(job.results, name) for name in tensors if name in job.results["metrics"]}
        for key in TIMED:
            members.seconds[key] = members.seconds.get(key, 0.0) + float(job.results.get("timing", {}).get(key) or 0.0)
    return members
