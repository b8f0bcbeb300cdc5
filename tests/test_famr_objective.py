"""FAMR's objective (docs/theory.md): uniform-target loss, anchor term, their gradients, BN freezing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from famr_cli.errors import FamrError
from famr_cli.method import UnlearnContext
from famr_cli.method.famr import FAMR, add_anchor_grad_, anchor_penalty, entropy_loss, kl_uniform_loss
from tiny_problem import tiny_problem


@pytest.mark.parametrize("loss", [kl_uniform_loss, entropy_loss])
def test_loss_is_zero_at_uniform_logits_and_positive_elsewhere(loss):
    constant_rows = torch.tensor([[0.0] * 10, [3.5] * 10])  # any constant row is the uniform prediction
    assert loss(constant_rows).abs().item() < 1e-6
    assert loss(torch.randn(4, 10) * 3).item() > 1e-3


def test_kl_uniform_matches_its_definition():
    logits = torch.randn(5, 7)
    p = logits.softmax(1)
    u = torch.full_like(p, 1 / 7)
    expected = (u * (u.log() - p.log())).sum(1).mean()
    assert torch.allclose(kl_uniform_loss(logits), expected, atol=1e-6)
    # ... which is cross-entropy to the uniform target minus log K
    ce = -(u * p.log()).sum(1).mean()
    assert torch.allclose(kl_uniform_loss(logits), ce - math.log(7), atol=1e-6)


@pytest.mark.parametrize("loss", [kl_uniform_loss, entropy_loss])
def test_gradient_step_moves_predictions_toward_uniform(loss):
    torch.manual_seed(0)
    logits = (torch.randn(8, 10) * 4).requires_grad_()
    entropy_before = torch.distributions.Categorical(logits=logits).entropy().mean()
    loss(logits).backward()
    stepped = (logits - 0.5 * logits.grad).detach()
    entropy_after = torch.distributions.Categorical(logits=stepped).entropy().mean()
    assert loss(stepped) < loss(logits.detach())
    assert entropy_after > entropy_before


def test_kl_uniform_gradient_is_softmax_minus_uniform():
    logits = torch.randn(3, 4, requires_grad=True)
    kl_uniform_loss(logits).backward()
    expected = (logits.detach().softmax(1) - 0.25) / 3
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_anchor_penalty_and_gradient_match_autograd():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(5))]
    theta0 = [p.detach() + torch.randn_like(p) for p in params]
    lam = 0.37
    explicit = sum(((p - t) ** 2).sum() for p, t in zip(params, theta0))
    assert torch.allclose(anchor_penalty(params, theta0), explicit.detach())
    (lam * explicit).backward()
    autograd = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    add_anchor_grad_(params, theta0, lam)
    for got, want in zip([p.grad for p in params], autograd):
        assert torch.allclose(got, want, atol=1e-6)


def _tiny_problem():
    return tiny_problem(fit_steps=0)


def _famr(**overrides):
    base = dict(
        name="famr",
        loss="kl_uniform",
        lam=0.1,
        anchor="all",
        optimizer="sgd",
        lr=0.05,
        momentum=0.0,
        weight_decay=0.0,
        epochs=5,
        batch_size=32,
        bn="eval",
        head_only=False,
        trainable=None,
        retain_kd=0.0,
        retain_buffer=500,
    )
    return FAMR(OmegaConf.create({**base, **overrides}))


def test_bn_eval_freezes_running_statistics_and_bn_train_updates_them():
    data, split, model = _tiny_problem()
    before = model[1].running_mean.clone()
    _famr(bn="eval").unlearn(model, UnlearnContext(data, split, torch.device("cpu"), seed=0))
    assert torch.equal(model[1].running_mean, before)
    _famr(bn="train").unlearn(model, UnlearnContext(data, split, torch.device("cpu"), seed=0))
    assert not torch.equal(model[1].running_mean, before)


def test_larger_lambda_keeps_parameters_closer_to_theta0():
    distances = []
    for lam in (0.0, 1.0, 10.0):  # lr * 2 * lam < 2 keeps plain gradient descent stable
        data, split, model = _tiny_problem()
        report = _famr(lam=lam, epochs=20).unlearn(model, UnlearnContext(data, split, torch.device("cpu"), seed=0))
        distances.append(report.certificate["anchored_param_dist"])
    assert distances[0] > distances[1] > distances[2] > 0


def test_famr_uses_only_the_forget_set():
    """Poisoning every retained image must not change FAMR's result: it never reads D_r."""
    data, split, model = _tiny_problem()
    clone = [p.detach().clone() for p in model.parameters()]
    _famr().unlearn(model, UnlearnContext(data, split, torch.device("cpu"), seed=0))
    data.x_train[split.retain_train] = 255
    _, _, model2 = _tiny_problem()
    for p, c in zip(model2.parameters(), clone):
        p.data.copy_(c)
    _famr().unlearn(model2, UnlearnContext(data, split, torch.device("cpu"), seed=0))
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"lam": -1.0}, "method.lam"),
        ({"loss": "mse"}, "method.loss"),
        ({"lr": 0.0}, "method.lr"),
        ({"bn": "frozen"}, "method.bn"),
        ({"optimizer": "lbfgs"}, "method.optimizer"),
        ({"epochs": 0}, "method.epochs"),
    ],
)
def test_bad_famr_options_are_rejected_with_the_key_named(override, fragment):
    with pytest.raises(FamrError, match=fragment.replace(".", r"\.")):
        _famr(**override)


def test_bf16_autocast_runs_on_cpu_and_keeps_fp32_weights():
    data, split, model = _tiny_problem()
    before = [p.detach().clone() for p in model.parameters()]
    report = _famr().unlearn(model, UnlearnContext(data, split, torch.device("cpu"), seed=0, autocast=torch.bfloat16))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert report.certificate["anchored_param_dist"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _changed(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def test_head_only_moves_the_classifier_head_alone():
    data, split, model = _tiny_problem()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = _famr(head_only=True).unlearn(model, UnlearnContext(data, split, torch.device("cpu"), seed=0))
    assert _changed(before, model) == {"4.weight", "4.bias"}
    assert report.certificate["anchored_param_dist"] > 0
    assert all(p.requires_grad for p in model.parameters())  # frozen only while unlearning


def test_trainable_prefixes_limit_the_parameters_famr_moves():
    data, split, model = _tiny_problem()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _famr(trainable=["0.", "4."]).unlearn(model, UnlearnContext(data, split, torch.device("cpu"), seed=0))
    assert _changed(before, model) == {"0.weight", "0.bias", "4.weight", "4.bias"}


def test_trainable_prefix_matching_no_parameter_is_rejected_before_training():
    _, _, model = _tiny_problem()
    with pytest.raises(FamrError, match=r"method\.trainable names no parameters of this backbone: layer4"):
        _famr(trainable=["layer4"]).check_model(model)
    _famr(trainable=["4."]).check_model(model)  # a prefix that exists passes


def _retained_drift(model_before: nn.Module, model_after: nn.Module, data, split) -> float:
    x = (data.x_train[split.retain_train].float() / 255 - 0.5) / 0.25
    model_before.eval(), model_after.eval()
    with torch.no_grad():
        p, q = torch.log_softmax(model_before(x), 1), torch.log_softmax(model_after(x), 1)
    return float(torch.nn.functional.kl_div(q, p, log_target=True, reduction="batchmean"))


def test_retain_kd_keeps_retained_outputs_closer_to_the_original():
    drifts = []
    for weight in (0.0, 5.0):
        data, split, model = _tiny_problem()
        original = [p.detach().clone() for p in model.parameters()]
        _famr(lam=0.0, epochs=20, retain_kd=weight, retain_buffer=20).unlearn(
            model, UnlearnContext(data, split, torch.device("cpu"), seed=0)
        )
        _, _, reference = _tiny_problem()
        for p, o in zip(reference.parameters(), original):
            p.data.copy_(o)
        drifts.append(_retained_drift(reference, model, data, split))
    assert drifts[1] < drifts[0] / 2


@pytest.mark.parametrize(
    "override, fragment",
    [({"retain_kd": -1.0}, "method.retain_kd"), ({"retain_kd": 1.0, "retain_buffer": 0}, "method.retain_buffer")],
)
def test_bad_retain_kd_options_are_rejected(override, fragment):
    with pytest.raises(FamrError, match=fragment.replace(".", r"\.")):
        _famr(**override)
