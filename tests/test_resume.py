"""Interrupted training resumes to the same weights; divergence is named by its step; reruns repeat every digit."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from conftest import NO_ROBUSTNESS, compose_config, read_results, run_cli, start_cli
from famr_cli.cache import sha256_file
from famr_cli.errors import DivergedError, RunInterrupted
from famr_cli.interrupts import catch_interrupts, raise_if_interrupted
from famr_cli.logger import ExperimentLogger
from famr_cli.model_store import get_original_model
from famr_cli.prepared import prepare
from famr_cli.train.checkpoint import TrainingCheckpoint, saved_epochs
from famr_cli.train.loop import run_loop

# Long enough (1-2 s per digits epoch on 2 cores) to be killed mid-training after KILL_AFTER_EPOCH,
# with epochs still to run, and short enough to pay four times.
TRAIN_EPOCHS = 7
RUN_ARGS = [f"train.epochs={TRAIN_EPOCHS}", "method.epochs=2", "evaluate.reference=none", NO_ROBUSTNESS]
KILL_AFTER_EPOCH = 3


def _weights(cache: Path) -> bytes:
    (path,) = cache.glob("original/*/model.safetensors")
    return path.read_bytes()


def _start(tmp: Path, name: str):
    return start_cli([*RUN_ARGS, f"hydra.run.dir={tmp / name}"], cwd=tmp)


def _wait_for_saved_epoch(cache: Path, proc, epoch: int, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saved = max(saved_epochs(cache).values(), default=0)
        if saved >= epoch:
            return saved
        if proc.poll() is not None:
            raise AssertionError("the run ended before it could be interrupted:\n" + "".join(proc.communicate())[-2000:])
        time.sleep(0.02)
    raise AssertionError(f"no training state for epoch {epoch} within {timeout} s")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    proc = run_cli([*RUN_ARGS, f"hydra.run.dir={tmp / 'run'}"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list((tmp / "cache").glob("original/.*.training")), "a finished training leaves no state behind"
    return read_results(tmp / "run"), _weights(tmp / "cache")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights_and_metrics(tmp_path, uninterrupted, sig):
    reference, reference_weights = uninterrupted
    proc = _start(tmp_path, "killed")
    saved = _wait_for_saved_epoch(tmp_path / "cache", proc, KILL_AFTER_EPOCH)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    err = out + err  # Hydra logs to stdout
    assert not list((tmp_path / "cache").glob("original/[0-9a-f]*")), "an interrupted training must not leave a cache entry"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        # Clean exit: 128 + signal, one sentence, no traceback, results.json says what happened.
        assert proc.returncode == 128 + sig
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if "[ERROR]" in line]
        assert len(errors) == 1 and f"Interrupted by {sig.name}" in errors[0] and errors[0].endswith("continue.")
        killed = read_results(tmp_path / "killed")
        assert killed["status"] == "interrupted" and killed["exit_code"] == 128 + sig

    proc = run_cli([*RUN_ARGS, f"hydra.run.dir={tmp_path / 'resumed'}"], cwd=tmp_path)
    err = proc.stdout + proc.stderr
    assert proc.returncode == 0, err[-3000:]
    resumed_at = int(err.split("saved state after epoch ")[1].split()[0])
    assert resumed_at >= saved >= KILL_AFTER_EPOCH
    assert _weights(tmp_path / "cache") == reference_weights, "resuming must give bit-identical weights on CPU"
    resumed = read_results(tmp_path / "resumed")
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["certificate"]["param_dist"] == reference["certificate"]["param_dist"]
    assert not list((tmp_path / "cache").glob("original/.*.training"))
    meta = json.loads(next((tmp_path / "cache").glob("original/*/meta.json")).read_text())
    assert meta["metrics"]["resumed_from_epoch"] == resumed_at and len(meta["metrics"]["epoch_losses"]) == TRAIN_EPOCHS


def _cfg(tmp_path, *extra):
    return compose_config([f"cache_dir={tmp_path}", "train.epochs=4", "progress=false", *extra])


@pytest.mark.slow
def test_damaged_training_state_is_set_aside_and_training_starts_over(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    p = prepare(cfg)
    clean = get_original_model(cfg, p, ExperimentLogger(), False).model.state_dict()
    # A state file cut short (the disk filled up, say) under a pointer that names it.
    (entry,) = tmp_path.glob("original/[0-9a-f]*")
    state = TrainingCheckpoint(entry.with_name(f".{entry.name}.training"), 1, "original model")
    state.save({"epoch": 2, "epochs": 4, "payload": torch.zeros(1000)})
    state_file = next(state.directory.glob("epoch-*.pt"))
    state_file.write_bytes(state_file.read_bytes()[:200])
    shutil.rmtree(entry)
    again = get_original_model(cfg, p, ExperimentLogger(), False)
    assert "training state" in caplog.text and "unusable" in caplog.text and "starts over" in caplog.text
    assert list(tmp_path.glob("original/.*.training.bad-*")), "the damaged state is kept aside for inspection"
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, clean[name]), name


def test_training_state_is_never_unpickled(tmp_path):
    """A state file holding an arbitrary object (what a malicious pickle would carry) is refused, not run."""
    state = TrainingCheckpoint(tmp_path / "state", 1, "original model")
    state.save({"epoch": 1, "epochs": 2, "weights": torch.ones(2)})
    path = next(state.directory.glob("epoch-*.pt"))
    torch.save({"epoch": 1, "evil": _Unsafe()}, path)
    pointer = json.loads((state.directory / "latest.json").read_text())
    pointer["sha256"] = sha256_file(path)  # even with a matching hash: weights_only refuses foreign classes
    (state.directory / "latest.json").write_text(json.dumps(pointer))
    assert state.load() is None
    assert not state.directory.exists()


class _Unsafe:
    pass


def test_divergence_names_the_first_bad_step_and_the_fix():
    model = nn.Linear(3, 2)
    batches = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 5  # 5 steps per epoch
    calls = {"n": 0}

    def objective(m, x, y):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(m(x), y)
        return loss * float("nan") if calls["n"] == 7 else loss

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay finite: the loss alone must be caught
    with pytest.raises(DivergedError, match=r"train diverged: the loss became NaN or infinite at step 7 \(epoch 2\); lower the lr\."):
        run_loop(model, batches, objective, optimizer, epochs=3, divergence_hint="lower the lr")
    assert calls["n"] == 10, "found at the end of epoch 2 at the latest, not after all 3 epochs"


@pytest.mark.slow
def test_diverging_original_training_writes_status_diverged(tmp_path):
    proc = run_cli(["train.epochs=3", "train.lr=1e12", "train.warmup_epochs=0", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    results = read_results(tmp_path / "run")
    assert results["status"] == "diverged" and results["exit_code"] == 3
    assert "original diverged" in results["error"] and "at step" in results["error"] and "lower train.lr" in results["error"]
    assert not list((tmp_path / "cache").glob("original/[0-9a-f]*")), "a diverged model is never cached"


@pytest.mark.slow
def test_deterministic_pipeline_repeats_every_digit(tmp_path):
    """Fresh caches, so the original model, the forget-set draw and the unlearning all run twice."""

    def run(name: str, seed: int) -> dict:
        work = tmp_path / name
        work.mkdir()
        args = ["train.epochs=3", "method.epochs=3", "forget=sample", "forget.fraction=0.05", f"seed={seed}", "deterministic=true"]
        proc = run_cli([*args, f"hydra.run.dir={work / 'run'}"], cwd=work)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results = read_results(work / "run")
        return {k: results[k] for k in ("metrics", "certificate", "robustness", "curves")} | {
            "forget": (work / "run/forget_indices.txt").read_text()
        }

    first, second, other_seed = run("a", 0), run("b", 0), run("c", 1)
    for results in (first, second, other_seed):
        results["certificate"].pop("certify_s")  # wall times
        results["robustness"].pop("seconds")
    assert first == second
    assert other_seed["forget"] != first["forget"] and other_seed["metrics"] != first["metrics"]


class _SignalledWhileFreed:
    """Receives SIGTERM inside its finaliser, where Python prints the handler's exception and drops it."""

    def __del__(self):
        signal.raise_signal(signal.SIGTERM)


def test_an_interrupt_a_finaliser_swallowed_still_stops_training_at_the_next_step():
    model = nn.Linear(3, 2)
    batches = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 5
    steps = {"n": 0}

    def objective(m, x, y):
        steps["n"] += 1
        if steps["n"] == 3:
            _SignalledWhileFreed()  # freed at once: the RunInterrupted its handler raises goes nowhere
        return nn.functional.cross_entropy(m(x), y)

    restore = catch_interrupts()
    try:
        with pytest.raises(RunInterrupted) as stopped:
            run_loop(model, batches, objective, torch.optim.SGD(model.parameters(), lr=0.1), epochs=3)
    finally:
        restore()
    assert stopped.value.signum == signal.SIGTERM
    assert steps["n"] == 3, "stopped before the step after the swallowed signal, not after all 15"
    raise_if_interrupted()  # the undo forgets the signal: the next run in this process starts clean
