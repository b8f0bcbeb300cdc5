"""Experiment loggers (``logger=none``, ``logger=wandb``). Logging problems never fail an experiment.

Adding a logger: write ``famr_cli/logger/<name>.py`` with one subclass of :class:`ExperimentLogger`
decorated by ``@LOGGERS.register("<name>")``, and ``conf/logger/<name>.yaml`` with ``name: <name>``
and the section's keys. It is built with the ``logger`` section (``self.cfg``) and overrides only
the calls it records: every method of the base does nothing. Every module in this package is
imported at start-up (:func:`famr_cli.registry.import_submodules`), so nothing else needs editing.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from famr_cli.registry import Registry, import_submodules


class ExperimentLogger:
    """What the pipeline reports to a logger; on its own it records nothing, and code that needs no
    logging passes a bare ``ExperimentLogger()``."""

    def __init__(self, cfg: DictConfig | None = None):
        self.cfg = cfg

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


LOGGERS: Registry[type[ExperimentLogger]] = Registry("logger", "logger=<name>", base=ExperimentLogger)


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


import_submodules(__name__, __path__)
