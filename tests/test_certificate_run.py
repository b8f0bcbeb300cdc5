"""The per-run certificate: stationarity figures, output drift, and their place in results.json."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from conftest import NO_ROBUSTNESS, read_results, run_cli
from famr_cli.evaluate.certificate.run import mean_gradient, output_drift, stationarity


def test_stationarity_is_exact_at_the_minimiser_of_a_quadratic_forget_loss():
    # L_f(θ) = ½‖θ - a‖²: FAMR's minimiser is θ* = (a + 2λθ₀)/(1 + 2λ), where ∇L_f(θ*) = -2λ(θ* - θ₀).
    torch.manual_seed(0)
    a, theta0, lam = torch.randn(7, dtype=torch.float64), torch.randn(7, dtype=torch.float64), 0.3
    theta_star = nn.Parameter((a + 2 * lam * theta0) / (1 + 2 * lam))
    figures = stationarity([theta_star.detach() - a], [theta_star], [theta0], lam)
    assert figures["stationarity_residual"] < 1e-12
    assert figures["stationarity_bound"] == pytest.approx(float((theta_star - theta0).norm()), rel=1e-9)
    assert figures["stationarity_rel_gap"] < 1e-9
    # Away from the minimiser the residual is the objective's gradient norm.
    off = nn.Parameter(theta_star.detach() + 0.1)
    moved = stationarity([off.detach() - a], [off], [theta0], lam)
    assert moved["stationarity_residual"] == pytest.approx(float(((off - a) + 2 * lam * (off - theta0)).norm()), rel=1e-9)


def test_an_unanchored_parameter_adds_no_anchor_term():
    p = nn.Parameter(torch.ones(3))
    figures = stationarity([torch.full((3,), 2.0)], [p], [None], 0.5)
    assert figures["stationarity_residual"] == pytest.approx(math.sqrt(12))
    assert math.isnan(figures["stationarity_rel_gap"])  # no anchored weight moved: no identity to check


def test_mean_gradient_weights_batches_by_their_size():
    model = nn.Linear(3, 1, bias=False)
    x = torch.randn(10, 3)
    batches = [(x[:7], None), (x[7:], None)]
    (grad,) = mean_gradient(model, [model.weight], lambda out: out.square().mean(), batches)
    model.zero_grad()
    model(x).square().mean().backward()
    assert torch.allclose(grad.float(), model.weight.grad, atol=1e-6)


def test_output_drift_is_zero_for_an_unchanged_model_and_kl_for_a_changed_one():
    p0 = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    p1 = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])
    rows = torch.tensor([0, 1])
    same = output_drift(p0, p0, rows)
    assert same == {"drift_kl_mean": 0.0, "drift_kl_max": 0.0, "changed_predictions": 0.0}
    changed = output_drift(p0, p1, rows)
    kl = 0.2 * math.log(0.2 / 0.6) + 0.8 * math.log(0.8 / 0.4)
    assert changed["drift_kl_max"] == pytest.approx(kl) and changed["drift_kl_mean"] == pytest.approx(kl / 2)
    assert changed["changed_predictions"] == 0.5


@pytest.mark.slow
def test_a_famr_run_writes_finite_certificate_fields_that_match_the_identity(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(["train.epochs=2", NO_ROBUSTNESS, "method.epochs=3", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cert = read_results(run)["certificate"]
    for key in ("param_dist", "grad_norm", "stationarity_bound", "stationarity_residual", "drift_kl_mean", "drift_kl_max"):
        assert math.isfinite(cert[key]), key
    assert 0.0 <= cert["changed_predictions"] <= 1.0
    assert cert["drift_kl_max"] >= cert["drift_kl_mean"] > 0  # FAMR moved the retained classes' outputs a little
    lam = read_results(run)["config"]["method"]["lam"]  # the quickstart's tuned FAMR λ
    assert cert["stationarity_bound"] == pytest.approx(cert["grad_norm"] / (2 * lam))
    assert "certificate: g* = ||grad L_f(theta*)||" in proc.stdout and "drift on retained test images" in proc.stdout


@pytest.mark.slow
def test_certificate_can_be_switched_off_and_baselines_report_drift_only(tmp_path):
    proc = run_cli(
        ["train.epochs=2", NO_ROBUSTNESS, "method=finetune", "method.epochs=1", f"hydra.run.dir={tmp_path / 'ft'}"], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cert = read_results(tmp_path / "ft")["certificate"]
    assert "drift_kl_mean" in cert and "grad_norm" not in cert
    proc = run_cli(
        ["train.epochs=2", NO_ROBUSTNESS, "method.epochs=2", "evaluate.certificate=false", f"hydra.run.dir={tmp_path / 'off'}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(read_results(tmp_path / "off")["certificate"]) == {"param_dist", "anchored_param_dist", "steps"}


@pytest.mark.slow
def test_a_failing_certificate_is_reported_and_never_costs_the_results(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from famr_cli.cli import CONFIG_DIR
    from famr_cli.logger import ExperimentLogger
    from famr_cli.method.famr import FAMR
    from famr_cli.pipeline import run_experiment

    def broken(self, model, original, ctx, settings):
        raise RuntimeError("no features today")

    monkeypatch.setattr(FAMR, "certify", broken)
    overrides = ["train.epochs=2", "method.epochs=2", "evaluate.reference=none", "progress=false", f"cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    results = run_experiment(cfg, ExperimentLogger())
    assert results["status"] == "ok"
    assert results["certificate"]["certificate_error"] == "RuntimeError: no features today"
    assert math.isfinite(results["certificate"]["drift_kl_mean"])  # the method-independent part still ran
