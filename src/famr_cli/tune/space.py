"""Declared search spaces: each method's 1-3 decisive hyperparameters, per experiment (ours).

``spaces/default.yaml`` holds the spaces for CIFAR-sized experiments; ``spaces/<experiment>.yaml``
replaces a method's whole entry for that experiment (digits needs other epoch counts). Each entry
maps an override key to ``{low, high}`` (``log: true`` for a log-uniform float, ``int: true`` for an
integer) or to ``{choices: [...]}``.
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

    @classmethod
    def parse(cls, key: str, spec: Any) -> Param:
        if not isinstance(spec, dict):
            raise FamrError(f"The search space of {key} must be a mapping such as {{low: 1e-4, high: 1e-2, log: true}} (got {spec}).")
        unknown = set(spec) - {"low", "high", "log", "int", "choices"}
        if unknown:
            raise FamrError(f"The search space of {key} has unknown fields {sorted(unknown)}; use low, high, log, int or choices.")
        if "choices" in spec:
            return cls(key, choices=tuple(spec["choices"]))
        low, high = spec.get("low"), spec.get("high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not low < high:
            raise FamrError(f"The search space of {key} needs numbers low < high (got low={low}, high={high}).")
        if spec.get("log") and low <= 0:
            raise FamrError(f"The search space of {key} is log-uniform, so low must be positive (got {low}).")
        return cls(key, float(low), float(high), bool(spec.get("log", False)), bool(spec.get("int", False)))

    def suggest(self, trial) -> Any:
        """The value an Optuna trial draws for this key."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)


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


def tunable_methods() -> list[str]:
    """Methods with a declared default space (Retrain is the reference and has nothing to tune)."""
    return list(_read(SPACES_DIR / "default.yaml"))
