"""``famr-privacy``: per-example privacy over populations of models (the NeurIPS 2023 competition score and U-LiRA).

    famr-privacy experiment=quickstart forget=class --methods famr,ssd --models 32
    famr-privacy experiment=cifar10_cpu forget=class dataset.root=DATA --methods famr --models 16 --protocols competition

It runs one ``famr-run -m`` sweep per population (docs/privacy.md): 2N Retrains beside one original, then N unlearned
models per method and protocol, each member a famr-run job that writes its models' per-example scores on D_f. Run
the same command again to continue a killed study: finished members are kept and cached models are not trained
again. Then it writes ``privacy.json``, ``privacy.md`` and ``epsilon_hist.png`` into ``<dir>/<experiment>/<forget>/``.
Any other ``key=value`` argument goes to every famr-run job (``hydra/launcher=joblib`` runs members side by side).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from famr_cli.config_schema import CONFIG_DIR
from famr_cli.errors import FamrError
from famr_cli.host import describe_machine, famr_run_command
from famr_cli.method_reads import METHOD_NAMES, method_options, option_section, reads_of_option
from famr_cli.privacy.outputs import PRIVACY_MD, log_to_wandb, write_report
from famr_cli.privacy.population import COMPETITION, FULL, PROTOCOLS, RETRAIN, PopulationSweep, SweepMembers, plan_populations
from famr_cli.source_commit import current_commit

log = logging.getLogger("famr")

MIN_MODELS = 4  # U-LiRA fits on half of each population and scores the other half: two members per half at least


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="famr-privacy",
        usage="famr-privacy [options] [key=value ...]",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog="Every key=value argument goes to every famr-run job, e.g. experiment=cifar10_cpu or hydra/launcher=parallel. "
        "Run the same command again to continue a study. docs/privacy.md",
    )
    parser.add_argument(
        "--methods", default="famr", help="comma-separated methods (default famr); Retrain and the original are always rows"
    )
    parser.add_argument(
        "--models", type=int, default=32, help="N, the models per population (default 32; epsilon resolves error rates in steps of 1/N)"
    )
    parser.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help="competition (one original), full (original seed varied too), or both"
    )
    parser.add_argument(
        "--train-seed", type=int, default=0, help="train.seed of the one original every competition member unlearns (default 0)"
    )
    parser.add_argument("--dir", default="outputs/privacy", help="where the populations and the tables go (default outputs/privacy)")
    parser.add_argument("--tables-only", action="store_true", help="run nothing: build the tables from the members already there")
    parser.add_argument("--dry-run", action="store_true", help="print the famr-run sweeps and exit")
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        parser.error(f"unknown options {unknown}; famr-run overrides take the form key=value")
    return args, overrides


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise FamrError(f"--{what} names nothing; give e.g. --{what} famr,ssd.")
    return list(dict.fromkeys(names))


def check_request(args: argparse.Namespace, forget: str) -> tuple[list[str], list[str]]:
    """The methods and protocols asked for, or the first problem as a FamrError."""
    if args.models < MIN_MODELS:
        raise FamrError(
            f"--models must be at least {MIN_MODELS} (got {args.models}): U-LiRA fits on half of each population; try --models 16."
        )
    if args.train_seed < 0:
        raise FamrError(f"--train-seed must be a whole number >= 0 (got {args.train_seed}).")
    protocols = _names(args.protocols, "protocols")
    if bad := [p for p in protocols if p not in PROTOCOLS]:
        raise FamrError(f"Unknown protocol {bad[0]}: use competition, full or competition,full.")
    methods = method_options() if args.methods == "all" else _names(args.methods, "methods")
    methods = [m for m in methods if m != RETRAIN]
    for method in methods:
        if option_section(method) is None:
            raise FamrError(f"Unknown method {method}: pick from {', '.join(method_options())}.")
        reason = reads_of_option(method).refusal(forget)
        if reason is not None and args.methods != "all":
            raise FamrError(f"method={method} is {reason}, so it has no forget={forget} population; drop it from --methods.")
    methods = [m for m in methods if reads_of_option(m).refusal(forget) is None]
    return methods, [p for p in PROTOCOLS if p in protocols]


def compose_target(overrides: list[str]) -> tuple[str, str, dict[str, Any], bool]:
    """The experiment and forget spec the overrides select, the logger section (for wandb), and whether the
    forget spec draws its examples with a seed."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    logger = OmegaConf.to_container(cfg.logger, resolve=True)
    return str(choices.get("experiment")), str(choices.get("forget")), logger, "seed" in cfg.forget


def sweep_argv(sweep: PopulationSweep) -> list[str]:
    from famr_cli.privacy.population import MEMBER_OVERRIDES

    return [
        *famr_run_command(),
        "-m",
        *sweep.overrides,
        *MEMBER_OVERRIDES,
        f"hydra.sweep.dir={sweep.dir}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]


def run_populations(sweeps: list[PopulationSweep]) -> dict[str, dict[str, Any]]:
    """Each sweep in turn; its exit code and this run's seconds."""
    runs = {}
    for sweep in sweeps:
        sweep.dir.mkdir(parents=True, exist_ok=True)
        argv = sweep_argv(sweep)
        print(f"[famr-privacy] {sweep.name}: {' '.join(argv)}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(argv).returncode
        runs[sweep.name] = {"exit_code": code, "wall_s": round(time.perf_counter() - start, 1)}
        print(f"[famr-privacy] {sweep.name}: exit {code} after {runs[sweep.name]['wall_s']:.0f} s", flush=True)
    return runs


def _recorded_cost(members: SweepMembers) -> dict[str, float]:
    """The seconds the members' models took when they were made: Retrains' training, or unlearning (and, under the
    full protocol, the originals' training)."""
    spent = {key: round(members.seconds.get(key, 0.0), 1) for key in ("unlearn_s", "retrain_s", "original_train_s")}
    if members.sweep.name == RETRAIN:
        return {"retrain_train_s": spent["retrain_s"]}
    return {"unlearn_s": spent["unlearn_s"], **({"original_train_s": spent["original_train_s"]} if members.sweep.protocol == FULL else {})}


def build_rows(sweeps: list[PopulationSweep], models: int, protocols: list[str]) -> tuple[list, list[str], dict[str, Any], Any]:
    """Every table row, the problem lines, the recorded cost per population, and D_f's indices."""
    from famr_cli.privacy.population import read_members
    from famr_cli.privacy.report import REFERENCE_ORIGINAL, REFERENCE_RETRAIN, PrivacyRow, repeated, row_note, score_row

    members = {s.name: read_members(s) for s in sweeps}
    problems = [line for m in members.values() for line in m.problems]
    cost = {name: _recorded_cost(m) for name, m in members.items()}
    retrains = members[RETRAIN]
    population_a = retrains.population(list(range(models)))
    population_b = retrains.population(list(range(models, 2 * models)))
    rows: list[PrivacyRow] = []
    # Retrain against Retrain is the same populations under every protocol: scored once.
    best = score_row(population_b, population_a) if population_a is not None and population_b is not None else None

    def add(protocol: str, label: str, reads: str, reference: bool, unlearned, note: str = "", scored=None) -> None:
        row = PrivacyRow(protocol, label, reads, reference, models)
        if unlearned is None or population_a is None:
            row.note = "incomplete: some members are missing or failed (listed above the table); run the command again"
        else:
            row.figures, row.per_example = scored or score_row(unlearned, population_a)
            row.note = note or row_note(row.figures)
        rows.append(row)

    for protocol in protocols:
        add(protocol, REFERENCE_RETRAIN, "—", True, population_b, scored=best)
        for sweep in (s for s in sweeps if s.protocol == protocol):
            add(
                protocol,
                METHOD_NAMES.get(sweep.method, sweep.method),
                reads_of_option(sweep.method).label,
                False,
                members[sweep.name].population(list(range(models))),
            )
        if protocol == COMPETITION:
            one = retrains.population([0], "original")
            repeated_note = "the one original repeated N times: no spread, so the official rule gives every example epsilon = 50"
            add(protocol, REFERENCE_ORIGINAL, "—", True, None if one is None else repeated(one, models), repeated_note)
        else:
            originals = next(
                (
                    p
                    for s in sweeps
                    if s.protocol == FULL and (p := members[s.name].population(list(range(models)), "original")) is not None
                ),
                None,
            )
            add(protocol, REFERENCE_ORIGINAL, "—", True, originals)
    return rows, problems, cost, retrains.indices


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[famr-privacy] %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args, overrides = parse_args(argv)
    try:
        experiment, forget, logger_cfg, forget_seed = compose_target(overrides)
        methods, protocols = check_request(args, forget)
        famr_run_command()  # a FAMR_RUN_COMMAND that does not split fails here
    except FamrError as err:
        print(f"[famr-privacy][ERROR] {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a Hydra composition error: an unknown group option or key
        print(
            f"[famr-privacy][ERROR] The famr-run overrides do not compose ({str(err).splitlines()[0]}); fix them as famr-run would.",
            file=sys.stderr,
        )
        return 2
    out_dir = Path(args.dir) / experiment / forget
    sweeps = plan_populations(out_dir, methods, args.models, protocols, args.train_seed, overrides, forget_seed)
    if args.dry_run:
        for sweep in sweeps:
            print(" ".join(sweep_argv(sweep)))
        return 0
    start = time.perf_counter()
    runs = {} if args.tables_only else run_populations(sweeps)
    try:
        rows, problems, cost, indices = build_rows(sweeps, args.models, protocols)
    except FamrError as err:
        print(f"[famr-privacy][ERROR] {err}", file=sys.stderr)
        return 2
    document = {
        "experiment": experiment,
        "forget": forget,
        "models": args.models,
        "protocols": protocols,
        "train_seed": args.train_seed,
        "methods": methods,
        "command": " ".join(["famr-privacy", *argv]),
        "commit": current_commit(),
        "machine": describe_machine(),
        "wall_s": round(time.perf_counter() - start, 1),
        "runs": runs,
        "recorded_cost_s": cost,
        "forget_indices": [] if indices is None else [int(i) for i in indices],
        "problems": problems,
        "rows": [
            {
                "protocol": r.protocol,
                "label": r.label,
                "reads": r.reads,
                "reference": r.reference,
                "n": r.n,
                "figures": r.figures,
                "note": r.note,
                "per_example": r.per_example,
            }
            for r in rows
        ],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    files = write_report(out_dir, document, rows, problems)
    log_to_wandb(logger_cfg, document, files, out_dir)
    print((out_dir / PRIVACY_MD).read_text())
    print(f"[famr-privacy] wrote {', '.join(str(f) for f in files)} ({document['wall_s']:.0f} s)")
    failed = any(r["exit_code"] for r in runs.values()) or bool(problems) or any(not r.figures for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
