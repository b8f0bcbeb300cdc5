"""Weights & Biases logging: offline unless the user chose online, and never fatal."""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig

from famr_cli.logger import LOGGERS, ExperimentLogger, flatten

log = logging.getLogger(__name__)

# Curves share one chart axis per phase instead of wandb's global step.
STEP_METRICS = {"train/*": "train/epoch", "unlearn/*": "unlearn/epoch"}


@LOGGERS.register("wandb")
class WandbLogger(ExperimentLogger):
    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.run = None

    def _guard(self, what: str, fn, *args, **kwargs):
        if self.run is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # a logging failure must not cost the user their results
            log.warning("wandb %s failed (%s); results are still written locally.", what, err)
            return None

    def start(self, config: dict[str, Any], run_dir: str) -> None:
        import wandb

        mode = self.cfg.mode
        # wandb never prompts for a login when it is not interactive; offline needs no login.
        os.environ.setdefault("WANDB_SILENT", "true")
        save_dir = self.cfg.dir or run_dir
        os.makedirs(save_dir, exist_ok=True)
        try:
            self.run = wandb.init(
                project=self.cfg.project,
                entity=self.cfg.entity,
                group=self.cfg.group,
                tags=list(self.cfg.tags or []),
                name=self.cfg.name_run,
                job_type=self.cfg.job_type,
                mode=mode,
                dir=save_dir,
                config=config,
                reinit="finish_previous",
            )
        except Exception as err:
            log.warning(
                "wandb could not start in mode '%s' (%s); continuing without it. Results are in %s; "
                "use logger.mode=offline and `wandb sync` to upload later.",
                mode,
                err,
                run_dir,
            )
            self.run = None
            return
        for pattern, step in STEP_METRICS.items():
            self._guard("define_metric", self.run.define_metric, pattern, step_metric=step)
        if mode == "offline":
            log.info("wandb is offline; upload later with: wandb sync %s", self.run.dir.rsplit("/files", 1)[0])

    def log(self, metrics: dict[str, float]) -> None:
        self._guard("log", self.run.log if self.run else None, metrics)

    def summary(self, metrics: dict[str, Any]) -> None:
        scalars = {k: v for k, v in flatten(metrics).items() if not isinstance(v, list)}
        self._guard("summary", lambda: self.run.summary.update(scalars))

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        import wandb

        self._guard("table", lambda: self.run.log({name: wandb.Table(columns=columns, data=rows)}))

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        self._guard("finish", self.run.finish, exit_code=exit_code)
        self.run = None
