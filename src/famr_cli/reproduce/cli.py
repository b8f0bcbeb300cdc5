"""Reproduce the paper's tables (class and 10 %-random forgetting): FAMR beside every baseline, mean ± std over seeds.

    famr-reproduce --profile cpu  [--data PATH] [--seeds N] [--out outputs/tables] [--dry-run]
    famr-reproduce --profile paper [--imagenet PATH] [--experiments cifar10_resnet18,cifar10_vit]
    famr-reproduce --profile cpu --tables sample   # one forget table (FAMR's λ sweep runs with class)
    famr-reproduce --profile cpu --methods famr,ssd,scrub   # some of the methods (FAMR's λ sweep runs with famr)

(``make reproduce`` and ``python scripts/reproduce.py`` run the same command.)

Runs one ``famr-run -m`` per experiment (every method x every seed) plus FAMR's λ sweep, then writes
outputs/tables/<profile>_<experiment>.{md,csv,tex} (and _lambda.* with the λ plots). Profiles and
their seed schemes: src/famr_cli/reproduce/profiles.py. Sweeps run under --runs (outputs/reproduce/<profile>/);
a previous run's sweep dir is kept as <dir>.prev-<time>, --resume instead continues the sweeps already
there (jobs that finished ok are kept, the others run), and --tables-only rebuilds the tables from the
sweeps already there. The last line gives the whole profile's wall time. Exit 0 when every job finished ok, 1 when
some did not (the tables are still written from the others), 2 on bad input such as missing data or an unknown name.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from famr_cli.errors import FamrError
from famr_cli.reproduce.data import DataError, plan_data
from famr_cli.reproduce.privacy_step import plan_privacy
from famr_cli.reproduce.profiles import PROFILES, experiment_names, public_profiles
from famr_cli.reproduce.runner import check_resumable, plan_sweeps, reproduce

EXIT_BAD_INPUT = 2


def checkout_root() -> Path:
    """The checkout famr runs from, beside which the shared data is looked for: the one holding this
    source in an editable install, else the working directory."""
    source = Path(__file__).resolve().parents[3]  # <checkout>/src/famr_cli/reproduce/cli.py
    return source if (source / "pyproject.toml").is_file() else Path.cwd()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Hidden profiles (the tests' smoke run) are accepted but not advertised.
    parser.add_argument("--profile", default="paper", metavar="{" + ",".join(public_profiles()) + "}", help="what to run (default: paper)")
    parser.add_argument("--seeds", type=int, help="number of seeds, 0..N-1 (default: the profile's)")
    parser.add_argument("--experiments", help="comma-separated subset of the profile's experiments")
    parser.add_argument(
        "--methods", help="comma-separated subset of the profile's methods, or all (default: all; FAMR's λ sweep runs only with famr)"
    )
    parser.add_argument(
        "--tables", help="comma-separated subset of the profile's forget tables, class and/or sample (default: all; λ runs with class)"
    )
    parser.add_argument("--data", help="CIFAR-10: a folder or .tar.gz in the CIFAR layout (default: FAMR_CIFAR10_ROOT, the shared copy)")
    parser.add_argument("--imagenet", help="ImageNet root with train/ and val/ (default: FAMR_IMAGENET_ROOT)")
    parser.add_argument("--allow-download", action="store_true", help="let torchvision download CIFAR-10 when no local copy exists")
    parser.add_argument("--out", type=Path, default=Path("outputs/tables"), help="where the tables go (default: outputs/tables)")
    parser.add_argument("--runs", type=Path, default=Path("outputs/reproduce"), help="where the sweeps run (default: outputs/reproduce)")
    parser.add_argument("--dry-run", action="store_true", help="print the famr-run commands and exit")
    parser.add_argument(
        "--resume", action="store_true", help="continue the sweeps under --runs: jobs that finished ok are kept, the others run"
    )
    parser.add_argument("--tables-only", action="store_true", help="rebuild the tables from the sweeps already under --runs")
    parser.add_argument(
        "--privacy", action="store_true", help="also famr-privacy's per-example privacy table (class forgetting; profiles that offer it)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="famr-run overrides for every sweep, e.g. hydra/launcher=slurm (docs/scaling.md)"
    )
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if bad := [o for o in args.overrides if "=" not in o]:
        parser.error(f"{bad[0]!r} is not a famr-run override: pass key=value (e.g. hydra/launcher=slurm)")
    return args


def _subset(text: str, offered: list[str], unknown_message: str) -> tuple[str, ...] | None:
    """The comma-separated names of ``text`` when all are ``offered``; else None, after one sentence on stderr."""
    chosen = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in chosen if name not in offered]
    if unknown or not chosen:
        print(f"{unknown_message.format(', '.join(unknown) or '(none)')}: choose from {', '.join(offered)}.", file=sys.stderr)
        return None
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = PROFILES.get(args.profile)
    if profile is None:
        print(f"Unknown profile {args.profile!r}: use --profile {' or '.join(public_profiles())}.", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.seeds is not None:
        if args.seeds < 1:
            print(f"--seeds must be at least 1 (got {args.seeds}); e.g. --seeds 3 runs seeds 0, 1, 2.", file=sys.stderr)
            return EXIT_BAD_INPUT
        profile = profile.with_seeds(args.seeds)
    if args.experiments:
        chosen = _subset(args.experiments, experiment_names(), "Unknown experiment(s) {}")
        if chosen is None:
            return EXIT_BAD_INPUT
        profile = profile.with_experiments(chosen)
    if args.methods and args.methods.strip() != "all":
        chosen = _subset(args.methods, list(profile.methods), "Unknown method(s) {} for --methods")
        if chosen is None:
            return EXIT_BAD_INPUT
        profile = profile.with_methods(chosen)
    if args.tables:
        chosen = _subset(args.tables, [t.key for t in profile.forget_tables], "Unknown table(s) {} for --tables")
        if chosen is None:
            return EXIT_BAD_INPUT
        profile = profile.with_tables(chosen)

    if args.privacy and profile.privacy_models < 1:
        offered = [name for name in public_profiles() if PROFILES[name].privacy_models > 0]
        print(
            f"--privacy is not offered for profile {profile.name}, whose 2N Retrains per experiment are yours to size: "
            f"use --profile {' or '.join(offered)}, or run famr-privacy with the N you can afford.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    runs_root = args.runs.expanduser().resolve()
    out_dir = args.out.expanduser().resolve()
    cache_dir = Path(os.environ.get("FAMR_CACHE_DIR") or "outputs/cache").expanduser().resolve()
    try:
        data = plan_data(profile, checkout_root(), cache_dir, args.data, args.imagenet, args.allow_download, strict=not args.dry_run)
        sweeps = plan_sweeps(profile, runs_root, data, resume=args.resume, overrides=args.overrides)
        privacy = plan_privacy(profile, runs_root, data, tables_only=args.tables_only, overrides=args.overrides) if args.privacy else []
        if args.resume:
            check_resumable(sweeps)
    except (DataError, FamrError) as err:
        print(err, file=sys.stderr)
        return EXIT_BAD_INPUT

    if args.dry_run:
        for line in (*data.notes, *(f"a real run would stop here: {p}" for p in data.problems)):
            print(f"# {line}")
        for sweep in sweeps:
            for note in sweep.notes():
                print(f"# {note}")
            if sweep.runs:
                print(sweep.command())
        for study in privacy:
            print(study.command())
        return 0
    for note in data.notes:
        print(f"[reproduce] {note}")
    print(f"[reproduce] profile {profile.name}: {profile.doc}")
    try:
        return reproduce(profile, sweeps, out_dir, runs_root, tables_only=args.tables_only, resume=args.resume, privacy=privacy)
    except KeyboardInterrupt:
        print("[reproduce] interrupted; finished jobs stay under " + str(runs_root / profile.name), file=sys.stderr)
        return 130


def run() -> int:
    """The console script ``famr-reproduce``."""
    try:
        return main()
    except BrokenPipeError:  # e.g. `--dry-run | head -1`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(run())
