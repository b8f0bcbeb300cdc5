#!/usr/bin/env python
"""Fault drill on ``digits``: break famr-run the ways an overnight sweep gets broken, and count what survives.

    python scripts/fault_drill.py            # or: scripts/fault_drill.sh, make fault-drill (about 5 minutes on 2 cores)

Every fault runs in a throw-away directory against the same experiment; a reference run that nothing
interrupts gives the weights and metrics every recovered run must reproduce exactly (CPU, same seed):

  1-3. SIGKILL, SIGTERM, SIGINT during the original model's training, then the same command again;
  4.   a training state cut short after a SIGKILL, then the same command again;
  5-6. the cached model's weights flipped / its metadata truncated, then a run on that cache;
  7.   the cached evaluation's tensors corrupted, then a run on that cache;
  8.   two famr-run processes started at once on one empty cache (must train once);
  9.   wandb unreachable (online mode, a dead URL);
  10.  a training that diverges (must write results.json with status "diverged");
and then every row of docs/errors.md's bad-input table against the reference cache, which must be
byte-identical afterwards. Prints faults injected, runs that recovered, results lost (must be 0) and
bad inputs tried / rejected cleanly; exits 1 when anything did not hold.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from famr_cli.train.checkpoint import saved_epochs
from famr_lab import bad_input_drill

FAMR_RUN = str(Path(sys.executable).with_name("famr-run"))
RUN_ARGS = ["train.epochs=14", "method.epochs=2", "evaluate.reference=none"]
KILL_AFTER_EPOCH = 3
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class Run:
    code: int | None
    output: str
    results: dict | None
    cache: Path


@dataclass
class Fault:
    name: str
    recovered: bool
    lost: int  # finished runs whose results are missing or wrong
    detail: str


class Drill:
    def __init__(self, root: Path):
        self.root = root
        self.reference: Run | None = None
        self.reference_weights = b""

    def env(self, work: Path, **extra: str) -> dict[str, str]:
        return {**bad_input_drill.throwaway_env(work), **extra}

    def start(self, work: Path, name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        work.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [FAMR_RUN, *RUN_ARGS, *extra, f"hydra.run.dir={work / name}"],
            cwd=work,
            env=env or self.env(work),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # A shell's background job ignores SIGINT, and children inherit that; the drill needs the default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def finish(self, proc: subprocess.Popen, work: Path, name: str) -> Run:
        output, _ = proc.communicate(timeout=900)
        results_file = work / name / "results.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else None
        return Run(proc.returncode, output, results, work / "cache")

    def run(self, work: Path, name: str, *extra: str, env: dict[str, str] | None = None) -> Run:
        return self.finish(self.start(work, name, *extra, env=env), work, name)

    # -- checks -------------------------------------------------------------------------------------
    def weights(self, cache: Path) -> bytes:
        # Entries only: a corrupt one moved aside (<key>.bad-<time>) is kept for inspection, never used.
        entries = [p for p in cache.glob("original/*/model.safetensors") if "." not in p.parent.name]
        return entries[0].read_bytes() if len(entries) == 1 else b""

    def matches_reference(self, run: Run) -> tuple[bool, str]:
        if run.code != 0 or run.results is None or run.results.get("status") != "ok":
            return False, f"exit {run.code}, status {None if run.results is None else run.results.get('status')}"
        if self.weights(run.cache) != self.reference_weights:
            return False, "weights differ from the uninterrupted run's"
        if run.results["metrics"] != self.reference.results["metrics"]:
            return False, "metrics differ from the uninterrupted run's"
        return True, "same weights and metrics as the uninterrupted run"

    def wait_for_epoch(self, work: Path, proc: subprocess.Popen, epoch: int) -> int:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            saved = max(saved_epochs(work / "cache").values(), default=0)
            if saved >= epoch:
                return saved
            time.sleep(0.02)
        return 0

    # -- faults -------------------------------------------------------------------------------------
    def baseline(self) -> None:
        self.reference = self.run(self.root / "reference", "run")
        if self.reference.code != 0:
            raise SystemExit(f"The uninterrupted reference run failed (exit {self.reference.code}):\n{self.reference.output[-3000:]}")
        self.reference_weights = self.weights(self.reference.cache)

    def kill_mid_training(self, sig: signal.Signals) -> Fault:
        work = self.root / f"kill-{sig.name}"
        proc = self.start(work, "killed")
        saved = self.wait_for_epoch(work, proc, KILL_AFTER_EPOCH)
        if not saved:
            proc.kill()
            return Fault(f"{sig.name} during training", False, 0, "the run ended before it could be killed")
        proc.send_signal(sig)
        killed = self.finish(proc, work, "killed")
        notes = [f"killed after epoch {saved} was saved"]
        if sig in SIGNAL_EXIT:
            clean = killed.code == SIGNAL_EXIT[sig] and "Traceback" not in killed.output
            status = None if killed.results is None else killed.results.get("status")
            notes.append(f"exit {killed.code}, status {status}")
            if not clean or status != "interrupted":
                return Fault(f"{sig.name} during training", False, 0, "; ".join(notes) + ": not a clean stop")
        resumed = self.run(work, "resumed")
        ok, why = self.matches_reference(resumed)
        resumed_note = "resumed" if "Resuming the original model training" in resumed.output else "did NOT resume"
        return Fault(f"{sig.name} during training", ok, 0 if ok else 1, "; ".join([*notes, resumed_note, why]))

    def damaged_training_state(self) -> Fault:
        work = self.root / "damaged-state"
        proc = self.start(work, "killed")
        saved = self.wait_for_epoch(work, proc, KILL_AFTER_EPOCH)
        proc.kill()
        proc.communicate()
        states = list((work / "cache").glob("original/.*.training/epoch-*.pt"))
        if not saved or not states:
            return Fault("training state cut short", False, 0, "no training state to damage")
        states[0].write_bytes(states[0].read_bytes()[:1000])
        rerun = self.run(work, "rerun")
        ok, why = self.matches_reference(rerun)
        noticed = "training state" in rerun.output and "unusable" in rerun.output
        return Fault("training state cut short", ok and noticed, 0 if ok else 1, f"reported: {noticed}; {why}")

    def corrupt_cache(self, name: str, damage: Callable[[Path], str]) -> Fault:
        work = self.root / f"corrupt-{name}"
        shutil.copytree(self.reference.cache, work / "cache")
        what = damage(work / "cache")
        rerun = self.run(work, "rerun")
        ok, why = self.matches_reference(rerun)
        noticed = "unusable" in rerun.output and bool(list((work / "cache").glob("*/*.bad-*")))
        return Fault(f"cache: {what}", ok and noticed, 0 if ok else 1, f"reported and moved aside: {noticed}; {why}")

    def concurrent_jobs(self) -> Fault:
        work = self.root / "concurrent"
        procs = [self.start(work, f"job{i}") for i in range(2)]
        runs = [self.finish(p, work, f"job{i}") for i, p in enumerate(procs)]
        trainings = sum("No cached original model" in r.output for r in runs)
        checks = [self.matches_reference(r) for r in runs]
        ok = trainings == 1 and all(c[0] for c in checks)
        lost = sum(not c[0] for c in checks)
        return Fault("two jobs on one cache key", ok, lost, f"trained {trainings} time(s); " + "; ".join(c[1] for c in checks))

    def wandb_unreachable(self) -> Fault:
        work = self.root / "wandb"
        shutil.copytree(self.reference.cache, work / "cache")
        env = self.env(work, WANDB_MODE="online", WANDB_API_KEY="", WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="5")
        run = self.run(work, "run", "logger=wandb", env=env)
        ok, why = self.matches_reference(run)
        warned = "wandb sync" in run.output
        return Fault("wandb unreachable", ok and warned, 0 if ok else 1, f"warned how to sync: {warned}; {why}")

    def divergence(self) -> Fault:
        work = self.root / "diverge"
        run = self.run(work, "run", "train.lr=1e12", "train.warmup_epochs=0")
        status = None if run.results is None else run.results.get("status")
        ok = run.code == 3 and status == "diverged" and "Traceback" not in run.output
        error = "" if run.results is None else run.results.get("error", "")
        return Fault("training diverges", ok, 0 if run.results else 1, f"exit {run.code}, status {status}: {error}")

    def bad_inputs(self) -> tuple[int, int, list[str]]:
        cache = self.reference.cache
        before = _digests(cache)
        work = self.root / "bad-input"
        work.mkdir()
        env = {**self.env(work), "FAMR_CACHE_DIR": str(cache)}
        outcomes = bad_input_drill.run_all(bad_input_drill.parse_table(), env, cwd=work)
        problems = [line for line in bad_input_drill.report(outcomes).splitlines()[1:]]
        if _digests(cache) != before:
            problems.append("the bad inputs changed the cache")
        return len(outcomes), sum(o.clean for o in outcomes), problems


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    }


def _flip_weights(cache: Path) -> str:
    path = next(cache.glob("original/[0-9a-f]*/model.safetensors"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return "model weights overwritten"


def _truncate_meta(cache: Path) -> str:
    path = next(cache.glob("original/[0-9a-f]*/meta.json"))
    path.write_text(path.read_text()[:40])
    return "model metadata truncated"


def _corrupt_evaluation(cache: Path) -> str:
    path = next(cache.glob("original-evaluation/[0-9a-f]*/model.safetensors"))
    path.write_bytes(path.read_bytes()[:-256])
    return "cached evaluation truncated"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the drill's directories and print where")
    parser.add_argument("--skip-bad-inputs", action="store_true", help="leave out the docs/errors.md table (about 2 minutes)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="famr-fault-drill-"))
    start = time.perf_counter()
    drill = Drill(root)
    try:
        drill.baseline()
        faults = [drill.kill_mid_training(sig) for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)]
        faults.append(drill.damaged_training_state())
        faults += [
            drill.corrupt_cache(n, f) for n, f in (("weights", _flip_weights), ("meta", _truncate_meta), ("eval", _corrupt_evaluation))
        ]
        faults += [drill.concurrent_jobs(), drill.wandb_unreachable(), drill.divergence()]
        tried, clean, problems = (0, 0, []) if args.skip_bad_inputs else drill.bad_inputs()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    for fault in faults:
        print(f"[{'recovered' if fault.recovered else 'FAILED   '}] {fault.name}: {fault.detail}")
    recovered, lost = sum(f.recovered for f in faults), sum(f.lost for f in faults)
    print()
    print(f"faults injected:        {len(faults)}")
    print(f"runs that recovered:    {recovered} of {len(faults)}")
    print(f"results lost:           {lost}")
    if not args.skip_bad_inputs:
        print(f"bad inputs tried:       {tried}, rejected cleanly: {clean}")
        for line in problems:
            print(f"  {line}")
    print(f"drill time:             {time.perf_counter() - start:.0f} s")
    if args.keep:
        print(f"drill directories kept under {root}")
    return 0 if recovered == len(faults) and lost == 0 and clean == tried and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
