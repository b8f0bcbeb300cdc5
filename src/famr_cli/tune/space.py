"""Declared search spaces: each method's 1-3 decisive hyperparameters, per experiment (ours).

``spaces/default.yaml`` holds the spaces for CIFAR-sized experiments; ``spaces/<experiment>.yaml``
replaces a method's whole entry for that experiment (digits needs other epoch counts). Each entry
maps an override key to ``{low, high}`` (``log: true`` for a log-uniform float, ``int: true`` for an
integer) or to ``{choices: [...]}``. An integer may be bounded by one drawn before it: ``below: method.epochs``
caps it at that value minus one (SCRUB's max-step epochs must leave min-only epochs after them), and a
float may be capped by one drawn before it, ``at_most: method.alpha`` (SSD's λ: a selection threshold α
below λ selects weights the dampening then leaves alone, so (α, λ) with α < λ behaves exactly as (λ, λ)),
so no budget goes to settings the method cannot tell apart. A float weight just below 1 may be drawn
``log_from_one: true``: log-uniform in 1 - value (NegGrad+'s β in [0.9, 0.9999]: as many draws between
0.999 and 0.9999 as between 0.9 and 0.99, where a uniform draw would almost never reach the published 0.9999).

``forget_sets.yaml`` names the forget sets every trial is scored on (ours: at least two, none of them a
forget set the tables report), per experiment and forget spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from famr_cli.errors import FamrError

SPACES_DIR = Path(__file__).resolve().parent / "spaces"


@dataclass(frozen=True)
class Param:
    key: str  # a famr-run override key, e.g. method.lr
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None
    below: str | None = None  # an integer key drawn earlier: this one stays at most that value minus one
    at_most: str | None = None  # a float key drawn earlier: this one stays at most that value
    log_from_one: bool = False  # a float in (0, 1) drawn log-uniformly in 1 - value

    @classmethod
    def parse(cls, key: str, spec: Any) -> Param:
        if not isinstance(spec, dict):
            raise FamrError(f"The search space of {key} must be a mapping such as {{low: 1e-4, high: 1e-2, log: true}} (got {spec}).")
        unknown = set(spec) - {"low", "high", "log", "int", "choices", "below", "at_most", "log_from_one"}
        if unknown:
            raise FamrError(
                f"The search space of {key} has unknown fields {sorted(unknown)}; "
                "use low, high, log, int, choices, below, at_most or log_from_one."
            )
        if "below" in spec and not spec.get("int"):
            raise FamrError(f"The search space of {key} sets below: {spec['below']}, which bounds integers only; add int: true.")
        if "at_most" in spec and (spec.get("int") or "choices" in spec or spec.get("log_from_one")):
            raise FamrError(
                f"The search space of {key} sets at_most: {spec['at_most']}, which bounds plain floats only; "
                "use below for an integer, and drop choices and log_from_one."
            )
        if "choices" in spec:
            if "log_from_one" in spec:
                raise FamrError(f"The search space of {key} lists choices, which log_from_one cannot draw from; drop log_from_one.")
            return cls(key, choices=tuple(spec["choices"]))
        low, high = spec.get("low"), spec.get("high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not low < high:
            raise FamrError(f"The search space of {key} needs numbers low < high (got low={low}, high={high}).")
        if spec.get("log") and low <= 0:
            raise FamrError(f"The search space of {key} is log-uniform, so low must be positive (got {low}).")
        if spec.get("log_from_one") and (spec.get("log") or spec.get("int") or not 0 < low < high < 1):
            raise FamrError(
                f"The search space of {key} is log_from_one, which draws a float in (0, 1) log-uniformly in 1 - value: "
                f"drop log and int, and keep 0 < low < high < 1 (got low={low}, high={high})."
            )
        below = spec.get("below")
        integer, log, from_one = bool(spec.get("int", False)), bool(spec.get("log", False)), bool(spec.get("log_from_one", False))
        return cls(key, float(low), float(high), log, integer, None, below, spec.get("at_most"), from_one)

    def upper(self, drawn: dict[str, Any]) -> float:
        """This parameter's upper bound once the values ``drawn`` before it are known."""
        bound = self.below or self.at_most
        if bound is None:
            return self.high
        if bound not in drawn:
            raise FamrError(f"The search space of {self.key} is bounded by {bound}, which must be declared before it.")
        # below: an integer strictly under the bound; at_most: a float up to it.
        return min(self.high, int(drawn[bound]) - 1 if self.below else float(drawn[bound]))

    def suggest(self, trial, drawn: dict[str, Any] | None = None) -> Any:
        """The value an Optuna trial draws for this key (``drawn``: the values of the keys declared before it)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            high = max(int(self.low), int(self.upper(drawn or {})))
            return trial.suggest_int(self.key, int(self.low), high, log=self.log)
        if self.log_from_one:
            # Optuna sees 1 - value (its own parameter name says so); the run and the records get the value.
            gap = trial.suggest_float(f"1-{self.key}", 1.0 - self.high, 1.0 - self.low, log=True)
            return min(self.high, max(self.low, 1.0 - gap))  # 1 - (1 - x) may round past a bound
        return trial.suggest_float(self.key, self.low, max(self.low, self.upper(drawn or {})), log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this space can draw (ignoring ``below`` and ``at_most``, which depend on the draw)."""
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and int(value) != value:
            return False
        return self.low <= value <= self.high

    def as_dict(self) -> dict[str, Any]:
        """The declaration as written in a spaces file (what a tuned file records of its search)."""
        if self.choices is not None:
            return {"choices": list(self.choices)}
        spec: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            spec["log"] = True
        if self.integer:
            spec.update(low=int(self.low), high=int(self.high), int=True)
        if self.below is not None:
            spec["below"] = self.below
        if self.at_most is not None:
            spec["at_most"] = self.at_most
        if self.log_from_one:
            spec["log_from_one"] = True
        return spec


def draw(space: list[Param], trial) -> dict[str, Any]:
    """One trial's values, in declaration order (a ``below`` bound reads the values drawn before it)."""
    values: dict[str, Any] = {}
    for param in space:
        values[param.key] = param.suggest(trial, values)
    return values


def _read(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def declared_space(experiment: str, method: str) -> list[Param]:
    """The search space famr-tune uses for ``method`` in ``experiment``; an error when none is declared."""
    entry = _read(SPACES_DIR / f"{experiment}.yaml").get(method) or _read(SPACES_DIR / "default.yaml").get(method)
    if not entry:
        raise FamrError(f"No search space is declared for method={method}; add one to famr_cli/tune/spaces/default.yaml.")
    return [Param.parse(key, spec) for key, spec in entry.items()]


def parse_space(params: dict[str, Any]) -> list[Param]:
    return [Param.parse(str(key), spec) for key, spec in params.items()]


def declared_forget_sets(experiment: str, forget: str) -> list[str]:
    """The forget sets a trial is scored on: each a space-separated list of famr-run overrides."""
    table = _read(SPACES_DIR.parent / "forget_sets.yaml")
    sets = (table.get(experiment) or {}).get(forget) or (table.get("default") or {}).get(forget)
    if not sets:
        raise FamrError(
            f"No forget sets are declared for experiment={experiment} forget={forget}; add them to "
            "famr_cli/tune/forget_sets.yaml or pass --forget-sets."
        )
    return [str(s) for s in sets]


def tunable_methods() -> list[str]:
    """Methods with a declared default space (Retrain is the reference and has nothing to tune)."""
    return list(_read(SPACES_DIR / "default.yaml"))
