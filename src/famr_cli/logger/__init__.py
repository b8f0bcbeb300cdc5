"""Experiment loggers: ``none`` and ``wandb``. Logging problems never fail an experiment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from famr_cli.registry import Registry


class ExperimentLogger:
    """The no-op logger (``logger=none``); also the interface the wandb logger fills in."""

    def start(self, config: dict[str, Any], run_dir: str) -> None:
        pass

    def log(self, metrics: dict[str, float]) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


LoggerFactory = Callable[[DictConfig], ExperimentLogger]
LOGGERS: Registry[LoggerFactory] = Registry("logger", "logger=<name>")
LOGGERS.register("none")(lambda cfg: ExperimentLogger())


def build_logger(cfg: DictConfig) -> ExperimentLogger:
    return LOGGERS.get(cfg.name)(cfg)


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a/b': 1}: wandb's summary shows nested keys poorly."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


from famr_cli.logger import wandb_logger  # noqa: E402,F401
