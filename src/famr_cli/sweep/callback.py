"""The Hydra callback behind every multirun: at the end, the sweep dir gets its summary and plots.

Registered in conf/config.yaml (``hydra.callbacks.sweep_summary``), so it runs for every launcher
and sweeper (basic, joblib, SLURM, Optuna) in the process that launched the jobs. It reads what the
jobs wrote, which is also how failed jobs of parallel launchers are counted for famr-run's exit code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from famr_cli.sweep.files import write_summary
from famr_cli.sweep.summary import SweepSummary

log = logging.getLogger("famr")


def sweep_group(sweep_dir: str | Path) -> str:
    """The wandb group of every job of one sweep and of its summary run: the sweep dir's last two parts."""
    path = Path(sweep_dir).resolve()
    return f"{path.parent.name}/{path.name}"


@dataclass
class SweepOutcome:
    total: int
    failed: int
    worst_exit_code: int  # the highest exit code a failed job recorded (1 when it recorded none)


# Set at the end of each multirun of this process: famr-run's exit code covers jobs run elsewhere.
last_outcome: SweepOutcome | None = None


def _outcome(summary: SweepSummary) -> SweepOutcome:
    codes = [int((job.results or {}).get("exit_code") or 1) for job in summary.failed]
    return SweepOutcome(len(summary.jobs), len(summary.failed), max(codes, default=0))


def _log_to_wandb(logger_cfg: DictConfig, summary: SweepSummary, files: list[Path]) -> None:
    """One extra wandb run in the sweep's group holding the summary table and plots; never fatal."""
    try:
        import wandb

        run = wandb.init(
            project=logger_cfg.project,
            entity=logger_cfg.entity,
            group=logger_cfg.group or sweep_group(summary.sweep_dir),
            job_type="sweep-summary",
            name=f"summary {sweep_group(summary.sweep_dir)}",
            mode=logger_cfg.mode,
            dir=str(logger_cfg.dir or summary.sweep_dir),
            reinit="finish_previous",
        )
        rows = summary.rows()
        columns = list(rows[0]) if rows else ["job"]
        run.log({"sweep/summary": wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])})
        run.log({f"sweep/{path.stem}": wandb.Image(str(path)) for path in files if path.suffix == ".png"})
        run.finish()
    except Exception as err:  # the summary files are already on disk; wandb is a copy of them
        log.warning("Logging the sweep summary to wandb failed (%s); it is in %s.", err, summary.sweep_dir)


class SweepSummaryCallback(Callback):
    def __init__(self, plots: bool = True) -> None:
        self.plots = plots

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global last_outcome
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            summary, files = write_summary(sweep_dir, plots=self.plots)
        except Exception as err:  # a summary problem must not hide the jobs' own results
            reason = f"{type(err).__name__}: {err}"
            log.warning("Could not write the sweep summary (%s); summarise later with famr-summarize %s", reason, sweep_dir)
            return
        last_outcome = _outcome(summary)
        log.info("Sweep summary (%d jobs, %d not ok) written to %s", last_outcome.total, last_outcome.failed, sweep_dir / "summary.md")
        logger_cfg = config.get("logger")
        if logger_cfg is not None and logger_cfg.get("name") == "wandb" and summary.jobs:
            _log_to_wandb(logger_cfg, summary, files)
