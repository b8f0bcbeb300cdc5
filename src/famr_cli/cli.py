"""``famr-run``: the Hydra entrypoint. Composes the config, runs the pipeline, always closes logging."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import famr_cli.method_reads  # noqa: F401  (registers the ${famr_methods:} resolver of --help's method list)
from famr_cli.config_schema import CONFIG_DIR as CONFIG_PATH
from famr_cli.errors import DivergedError, FamrError, RunInterrupted
from famr_cli.host import available_cores, describe_run_host, run_host
from famr_cli.interrupts import catch_interrupts
from famr_cli.logger import build_logger
from famr_cli.pipeline import run_experiment, train_models_only
from famr_cli.results import finished_results, summary_table, write_results
from famr_cli.results_document import method_row_name
from famr_cli.runtime import keep_freed_memory, limit_threads, resolve_device, set_deterministic, skip_collection_at_exit, threads_per_job
from famr_cli.sweep import callback as sweep_callback
from famr_cli.sweep.callback import sweep_group
from famr_cli.train.distributed import init_distributed, launched_by_torchrun, process_rank
from famr_cli.train.distributed import shutdown as shutdown_distributed

# The configs ship inside the package (src/famr_cli/conf is the repository's conf/), so the
# installed command finds them from any working directory.
CONFIG_DIR = str(CONFIG_PATH)  # Hydra's config_path and initialize_config_dir take a str
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_DIVERGED = 3
# Interrupted runs exit like a shell reports a signal: 128 + its number.
EXIT_INTERRUPTED = {signal.SIGINT: 128 + signal.SIGINT, signal.SIGTERM: 128 + signal.SIGTERM}

log = logging.getLogger("famr")


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _log_results(logger, results: dict) -> None:
    logger.summary({k: results[k] for k in ("metrics", "gaps", "timing", "certificate", "robustness") if k in results})
    names = results["dataset"]["class_names"]
    before = results["metrics"]["original"]["per_class_test_acc"]
    after = results["metrics"]["unlearned"]["per_class_test_acc"]
    # Retrain's column shows what "forgotten" should look like, class by class (empty without a reference).
    retrain = results["metrics"].get("retrain", {}).get("per_class_test_acc") or [None] * len(names)
    forgotten = set(results["forget"]["classes"])
    rows = [[cls, names[cls], cls in forgotten, before[cls], after[cls], retrain[cls]] for cls in range(len(names))]
    logger.table("per_class_test_acc", ["class", "name", "forgotten", "original", "unlearned", "retrain"], rows)


def execute(cfg: DictConfig) -> tuple[int, dict | None]:
    """Run one experiment; returns the process exit code and the results. results.json is written on every path."""
    if launched_by_torchrun() and process_rank() > 0:
        return _train_as_ddp_follower(cfg), None
    run_dir = _run_dir()
    if cfg.get("skip_finished") is True:  # any other value is left to validation's error
        earlier = finished_results(run_dir, OmegaConf.to_container(cfg, resolve=True))
        if earlier is not None:
            log.info("This job already finished ok in %s (skip_finished=true): its results are kept, nothing runs.", run_dir)
            return 0, earlier
    host = run_host()
    log.info("Running on %s.", describe_run_host(host))
    logger = build_logger(_with_sweep_group(cfg.logger))
    exit_code = 0
    results = None
    logger.start(OmegaConf.to_container(cfg, resolve=True), str(run_dir))
    restore_signals = catch_interrupts()
    try:
        limit_threads(threads_per_job(cfg.threads, _parallel_jobs()))
        set_deterministic(cfg.deterministic)
        init_distributed(resolve_device(str(cfg.device)))
        results = run_experiment(cfg, logger, run_dir)
        path = write_results(run_dir, results)
        _log_results(logger, results)
        print(summary_table(results))
        log.info("Results written to %s", path)
    except FamrError as err:
        diverged = isinstance(err, DivergedError)
        exit_code = EXIT_DIVERGED if diverged else EXIT_BAD_INPUT
        log.error("%s", err)
        status = "diverged" if diverged else "failed"
        write_results(
            run_dir, {"status": status, "method": method_row_name(cfg.method), "error": str(err), "exit_code": exit_code, "host": host}
        )
    except (KeyboardInterrupt, RunInterrupted) as err:
        signum = err.signum if isinstance(err, RunInterrupted) else signal.SIGINT
        exit_code = EXIT_INTERRUPTED[signum]
        message = (
            f"Interrupted by {signal.Signals(signum).name}: trained models stay cached and an unfinished training resumes "
            "from its last saved epoch, so run the same command again to continue."
        )
        log.error("%s", message)
        write_results(
            run_dir,
            {"status": "interrupted", "method": method_row_name(cfg.method), "error": message, "exit_code": exit_code, "host": host},
        )
    except Exception as err:
        exit_code = EXIT_FAILED
        error = f"{type(err).__name__}: {err}"
        write_results(
            run_dir, {"status": "failed", "method": method_row_name(cfg.method), "error": error, "exit_code": exit_code, "host": host}
        )
        if not _in_multirun():
            raise
        # One broken job must not cost the rest of an overnight sweep: keep its traceback in its log, go on.
        log.exception("Job failed unexpectedly; the sweep goes on and famr-run will exit non-zero at the end.")
    finally:
        # Always finish, so the next multirun job never appends to this wandb run.
        logger.finish(exit_code)
        restore_signals()
        shutdown_distributed()
    return exit_code, results


def _train_as_ddp_follower(cfg: DictConfig) -> int:
    """torchrun's processes 1..N-1: train beside rank 0, write nothing, leave reporting to rank 0."""
    try:
        limit_threads(threads_per_job(cfg.threads, 1))
        set_deterministic(cfg.deterministic)
        init_distributed(resolve_device(str(cfg.device)))
        train_models_only(cfg)
        return 0
    except FamrError as err:
        log.error("%s", err)  # rank 0 reports the same error in results.json
        return EXIT_DIVERGED if isinstance(err, DivergedError) else EXIT_BAD_INPUT
    finally:
        shutdown_distributed()


def objective_value(cfg: DictConfig, results: dict | None, warn: bool = True) -> float:
    """The number a sweeper minimises (``objective``, a dotted path into results.json); +inf when the job failed.

    +inf rather than NaN: Optuna records an inf trial as the worst one and goes on, while a NaN
    return makes hydra-optuna-sweeper 1.3 / optuna 2.10 abort the whole study.
    """
    value: object = results
    for part in str(cfg.objective).split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if warn and results is not None and value is None:
        log.warning("objective=%s is not in this job's results (is evaluate.reference=retrain?); the sweeper gets +inf.", cfg.objective)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.inf


def _with_sweep_group(logger_cfg: DictConfig) -> DictConfig:
    """Jobs of one multirun share a wandb group (named after the sweep dir) unless logger.group is set."""
    if not _in_multirun() or logger_cfg.get("group", "unset") is not None:
        return logger_cfg
    return OmegaConf.merge(logger_cfg, {"group": sweep_group(HydraConfig.get().sweep.dir)})


def _parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine (joblib's n_jobs; 1 for other launchers)."""
    hydra_cfg = HydraConfig.get()
    launcher = hydra_cfg.get("launcher") or {}
    if hydra_cfg.mode != RunMode.MULTIRUN or "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    return available_cores() if n_jobs < 0 else n_jobs


def _in_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


# The worst exit code of the jobs of this process (a multirun runs many in one process).
_exit_codes: list[int] = []


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    code, results = execute(cfg)
    if code and (not _in_multirun() or code in EXIT_INTERRUPTED.values()):
        # An interrupt stops the whole sweep: the user (or the scheduler) asked everything to stop.
        sys.exit(code)
    # In a multirun, exiting here would abort every later job (one diverged λ would end the sweep);
    # the code is kept and reported once all jobs are done.
    _exit_codes.append(code)
    # Only an optimising sweeper (e.g. Optuna) reads the value; the basic sweeper's jobs need no warning.
    sweeper = str(HydraConfig.get().sweeper.get("_target_", ""))
    return objective_value(cfg, results, warn="BasicSweeper" not in sweeper)


def _quiet_ddp_follower() -> None:
    """Under torchrun, processes other than rank 0 get no run dir and no log file of their own."""
    if launched_by_torchrun() and process_rank() > 0:
        scratch = Path(tempfile.gettempdir()) / f"famr-ddp-rank{process_rank()}-{os.getpid()}"
        sys.argv += ["hydra.output_subdir=null", f"hydra.run.dir={scratch}", "hydra/job_logging=stdout"]


def main() -> None:
    """The famr-run console script: one run, or a Hydra multirun whose failed jobs make it exit non-zero."""
    _quiet_ddp_follower()
    keep_freed_memory()
    try:
        _hydra_main()
    finally:
        skip_collection_at_exit()
    # Jobs run here report their codes in-process; jobs of a joblib or SLURM launcher ran elsewhere and
    # are counted from the results.json files they wrote (the sweep summary callback reads them).
    failed = [code for code in _exit_codes if code]
    total, worst = len(_exit_codes), max(failed, default=0)
    outcome = sweep_callback.last_outcome
    if outcome is not None and outcome.failed > len(failed):
        failed, total, worst = [outcome.worst_exit_code] * outcome.failed, max(total, outcome.total), max(worst, outcome.worst_exit_code)
    if failed:
        log.error("%d of %d sweep jobs did not finish ok (see their results.json 'status' and 'error').", len(failed), total)
        sys.exit(worst)
