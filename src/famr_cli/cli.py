"""``famr-run``: the Hydra entrypoint. Composes the config, runs the pipeline, always closes logging."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from famr_cli.errors import DivergedError, FamrError
from famr_cli.logger import build_logger
from famr_cli.pipeline import run_experiment
from famr_cli.results import summary_table, write_results

# The configs ship inside the package (src/famr_cli/conf is the repository's conf/), so the
# installed command finds them from any working directory.
CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_DIVERGED = 3

log = logging.getLogger("famr")


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _log_results(logger, results: dict) -> None:
    logger.summary({k: results[k] for k in ("metrics", "gaps", "timing", "certificate")})
    names = results["dataset"]["class_names"]
    before = results["metrics"]["original"]["per_class_test_acc"]
    after = results["metrics"]["unlearned"]["per_class_test_acc"]
    # Retrain's column shows what "forgotten" should look like, class by class (empty without a reference).
    retrain = results["metrics"].get("retrain", {}).get("per_class_test_acc") or [None] * len(names)
    forgotten = set(results["forget"]["classes"])
    rows = [[cls, names[cls], cls in forgotten, before[cls], after[cls], retrain[cls]] for cls in range(len(names))]
    logger.table("per_class_test_acc", ["class", "name", "forgotten", "original", "unlearned", "retrain"], rows)


def execute(cfg: DictConfig) -> int:
    """Run one experiment; returns the process exit code. results.json is written on every path."""
    run_dir = _run_dir()
    logger = build_logger(cfg.logger)
    exit_code = 0
    logger.start(OmegaConf.to_container(cfg, resolve=True), str(run_dir))
    try:
        results = run_experiment(cfg, logger, run_dir)
        path = write_results(run_dir, results)
        _log_results(logger, results)
        print(summary_table(results))
        log.info("Results written to %s", path)
    except FamrError as err:
        diverged = isinstance(err, DivergedError)
        exit_code = EXIT_DIVERGED if diverged else EXIT_BAD_INPUT
        log.error("%s", err)
        write_results(run_dir, {"status": "diverged" if diverged else "failed", "method": cfg.method.name, "error": str(err)})
    except Exception as err:
        exit_code = EXIT_FAILED
        write_results(run_dir, {"status": "failed", "method": cfg.method.name, "error": f"{type(err).__name__}: {err}"})
        if not _in_multirun():
            raise
        # One broken job must not cost the rest of an overnight sweep: keep its traceback in its log, go on.
        log.exception("Job failed unexpectedly; the sweep goes on and famr-run will exit non-zero at the end.")
    finally:
        # Always finish, so the next multirun job never appends to this wandb run.
        logger.finish(exit_code)
    return exit_code


def _in_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


# The worst exit code of the jobs of this process (a multirun runs many in one process).
_exit_codes: list[int] = []


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    code = execute(cfg)
    if code and not _in_multirun():
        sys.exit(code)
    # In a multirun, exiting here would abort every later job (one diverged λ would end the sweep);
    # the code is kept and reported once all jobs are done.
    _exit_codes.append(code)


def main() -> None:
    """The famr-run console script: one run, or a Hydra multirun whose failed jobs make it exit non-zero."""
    _hydra_main()
    failed = [code for code in _exit_codes if code]
    if failed:
        log.error("%d of %d sweep jobs did not finish ok (see their results.json 'status' and 'error').", len(failed), len(_exit_codes))
        sys.exit(max(failed))
