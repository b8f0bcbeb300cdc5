"""``famr-tune``: the same Optuna budget for every method, selected on validation, written as tuned config.

    famr-tune experiment=cifar10_cpu forget=class dataset.root=DATA --trials 20
    famr-tune experiment=cifar10_cpu forget=sample --methods famr,ssd --trials 20

For each method it runs ``famr-run -m hydra/sweeper=optuna_gap`` with ``evaluate.split=val``, every
trial scored on the same forget sets (``famr_cli/tune/forget_sets.yaml`` or ``--forget-sets``), and a
journal file per study under ``--dir`` (run it again to resume: finished trials are kept, an
interrupted one is retried), prints one line per method, and writes the best values, and only
them, into ``conf/method/tuned/<experiment>/<forget>/<method>.yaml`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir

# The configs' folder from the light module, not famr_cli.cli: famr-tune only starts famr-run, so it need
# not import torch and the pipeline (its own start took 8.3 s with them, 0.3 s without, on 2 Intel Xeon cores).
from famr_cli.config_schema import CONFIG_DIR
from famr_cli.errors import FamrError
from famr_cli.host import famr_run_command
from famr_cli.method_reads import option_section, reads_of_option
from famr_cli.source_commit import current_commit
from famr_cli.statistic_memo import ENV_SWITCH
from famr_cli.tune.space import declared_forget_sets, declared_space, tunable_methods
from famr_cli.tune.study import OK, distinct_settings, read_trials
from famr_cli.tune.tuned_file import write_tuned_file

log = logging.getLogger("famr")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="famr-tune", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="all", help="comma-separated methods, or all (every method with a declared space)")
    parser.add_argument("--trials", type=int, default=20, help="Optuna trials per method: the same budget for every method (default 20)")
    parser.add_argument("--dir", default="outputs/tuning", help="where studies (journal files), trials files and trial runs go")
    parser.add_argument("--max-retain-drop", type=float, default=10.0, help="reject trials whose retained accuracy falls more points")
    parser.add_argument("--seed", type=int, default=0, help="the TPE sampler's seed")
    parser.add_argument("--no-write", action="store_true", help="search only; leave conf/method/tuned/ as it is")
    parser.add_argument(
        "--parallel-trials",
        type=int,
        default=1,
        help="trials drawn and launched at once through the configured launcher (e.g. hydra/launcher=parallel or slurm; default 1)",
    )
    parser.add_argument(
        "--forget-sets",
        default=None,
        help="';'-separated forget sets every trial is scored on, each a space-separated override list "
        "(default: famr_cli/tune/forget_sets.yaml; 'none': the config's own forget set alone)",
    )
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        parser.error(f"unknown options {unknown}; famr-run overrides take the form key=value")
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    if args.parallel_trials < 1:
        parser.error("--parallel-trials must be at least 1")
    return args, overrides


def resolve_target(overrides: list[str]) -> tuple[str, str, int]:
    """The experiment and forget spec the overrides select, and the validation rows per class they hold out."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    return str(choices.get("experiment")), str(choices.get("forget")), int(cfg.dataset.get("val_per_class") or 0)


def forget_sets_of(args: argparse.Namespace, experiment: str, forget: str) -> list[str]:
    """The forget sets every trial of this run is scored on ([] for the composed config's own)."""
    if args.forget_sets is None:
        return declared_forget_sets(experiment, forget)
    if args.forget_sets.strip() == "none":
        return []
    sets = [s.strip() for s in args.forget_sets.split(";") if s.strip()]
    if not sets:
        raise FamrError("--forget-sets names no forget set; give e.g. 'forget.classes=[3];forget.classes=[8]', or none.")
    return sets


def _hydra_list(items: list[str]) -> str:
    """A Hydra override value holding ``items`` as quoted strings."""
    return "[" + ",".join("'" + item.replace("\\", "\\\\").replace("'", "\\'") + "'" for item in items) + "]"


def study_command(method: str, overrides: list[str], study_dir: Path, args: argparse.Namespace, forget_sets: list[str]) -> list[str]:
    return [
        *famr_run_command(),
        "-m",
        "hydra/sweeper=optuna_gap",
        *overrides,
        f"method={method}",
        "evaluate.split=val",
        "evaluate.reference=retrain",
        # Selection reads Avg. Gap only: the robustness checks and the certificate (FAMR's gradient pass over D_f,
        # every method's drift figures) would add to every trial's cost and change no trial's score.
        "evaluate.robustness.enabled=false",
        "evaluate.certificate=false",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.seed={args.seed}",
        f"hydra.sweeper.parallel_trials={args.parallel_trials}",
        f"hydra.sweeper.max_retain_drop={args.max_retain_drop}",
        f"hydra.sweeper.storage={study_dir / 'study.journal'}",
        f"hydra.sweeper.trials_file={study_dir / 'trials.jsonl'}",
        f"hydra.sweeper.forget_sets={_hydra_list(forget_sets)}",
        f"hydra.sweep.dir={study_dir / 'runs'}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]


def budget_spent(study_dir: Path, results_file: Path, trials: int) -> bool:
    """Whether this study already holds ``trials`` distinct finished trials and its summary for that budget:
    famr-run would run no trial and write the same summary, so it is not started (a 5 s start saved)."""
    if not results_file.is_file():
        return False
    summary = yaml.safe_load(results_file.read_text()) or {}
    return summary.get("n_trials") == trials and len(distinct_settings(read_trials(study_dir / "trials.jsonl"))) >= trials


def written_by(path: Path, trials_file: Path) -> bool:
    """Whether the tuned file ``path`` was written from the study whose trials are in ``trials_file``."""
    if not path.is_file():
        return False
    tuned_by = (yaml.safe_load(path.read_text()) or {}).get("tuned_by") or {}
    return str(tuned_by.get("study")) == str(trials_file)


def defined_for(methods: list[str], forget: str, named: bool) -> list[str]:
    """``methods`` less those not defined for ``forget=<forget>`` (class-only methods on samples): skipped with a
    line when they came from ``--methods all``, refused in one sentence when named."""
    kept = []
    for method in methods:
        reason = reads_of_option(method).refusal(forget) if option_section(method) is not None else None
        if reason is None:
            kept.append(method)
        elif named:
            raise FamrError(f"method={method} is {reason}, so it has no forget={forget} search; drop it from --methods.")
        else:
            print(f"famr-tune: {method} skipped ({reason}).")
    return kept


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[famr-tune] %(message)s")
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        experiment, forget, val_per_class = resolve_target(overrides)
        if val_per_class < 1:
            raise FamrError(
                f"famr-tune selects on a validation split, and experiment={experiment} holds none: "
                "add dataset.val_per_class=N (it changes the original model, so tables must use the same value)."
            )
        methods = tunable_methods() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
        methods = defined_for(methods, forget, named=args.methods != "all")
        spaces = {method: declared_space(experiment, method) for method in methods}  # a missing space fails before any trial
        forget_sets = forget_sets_of(args, experiment, forget)
        famr_run_command()  # so does a FAMR_RUN_COMMAND that does not split
    except FamrError as err:
        print(f"[famr-tune][ERROR] {err}", file=sys.stderr)
        return 2
    root = Path(args.dir) / experiment / forget
    commit = current_commit()
    worst = 0
    scored_on = ", ".join(forget_sets) or "the config's own forget set"
    print(
        f"famr-tune: experiment={experiment} forget={forget}, {args.trials} trials per method, "
        f"selection on validation, scored on {scored_on}"
    )
    for method in methods:
        study_dir = root / method
        results_file = study_dir / "runs" / "optimization_results.yaml"
        start = time.perf_counter()
        searched = not budget_spent(study_dir, results_file, args.trials)
        if searched:
            results_file.unlink(missing_ok=True)  # written anew when this study's budget is spent
            # famr-run exits non-zero when any trial failed; rejected and failed trials are part of a search,
            # so the study counts as done once its summary exists.
            # The study's trials share the statistics their searched values do not change (famr_cli.statistic_memo).
            env = {**os.environ, ENV_SWITCH: "1"}
            proc = subprocess.run(study_command(method, overrides, study_dir, args, forget_sets), env=env)
            if not results_file.is_file():
                print(f"  {method:13s} search failed (exit {proc.returncode}); rerun to resume: {study_dir}")
                worst = max(worst, proc.returncode or 1)
                continue
        seconds = time.perf_counter() - start
        summary = yaml.safe_load(results_file.read_text())
        trials = read_trials(study_dir / "trials.jsonl")
        tried = distinct_settings(trials)
        accepted = sum(1 for t in tried if t["state"] == OK)
        trial_s = sum(t["wall_s"] for t in trials)  # every run's seconds, replays included: what the search cost
        best = summary.get("best_params")
        print(
            f"  {method:13s} {len(tried)} trials ({accepted} accepted, {trial_s:.0f} s of trials, {seconds:.0f} s now): "
            f"best {summary['objective']}={summary['best_value']:.3f} at {best}"
        )
        path = CONFIG_DIR / "method" / "tuned" / experiment / forget / f"{method}.yaml"
        if best and not args.no_write and not searched and written_by(path, study_dir / "trials.jsonl"):
            # Nothing ran: the file already holds this study's choice, with the commit the search ran at.
            print(f"  {'':13s} kept {path}")
        elif best and not args.no_write:
            provenance = {
                "search": f"{args.trials} Optuna TPE trials (seed {args.seed}) over {sorted(best)}",
                # What the study drew from (its summary); a summary written before it recorded one: today's space.
                "space": summary.get("space") or {p.key: p.as_dict() for p in spaces[method]},
                "split": "val",
                "forget_sets": forget_sets,
                "trials": args.trials,
                "accepted": accepted,
                "budget_s": round(trial_s),
                "selection": (
                    f"lowest mean {summary['objective']} over the forget sets on the validation split "
                    f"(dataset.val_per_class={val_per_class}), retained accuracy within {args.max_retain_drop:g} points on each"
                ),
                "study": str(study_dir / "trials.jsonl"),
                "commit": commit,
            }
            write_tuned_file(
                path,
                experiment=experiment,
                forget=forget,
                best_params=best,
                provenance=provenance,
                objective=summary["objective"],
                guard=args.max_retain_drop,
            )
            print(f"  {'':13s} wrote {path}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
