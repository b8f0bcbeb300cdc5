"""The head's Newton / influence prediction (HVP + CG) against dense Hessians on tiny heads."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch.autograd.functional import hessian

from famr_cli.errors import FamrError
from famr_cli.evaluate.certificate.conjugate_gradient import NegativeCurvatureError, conjugate_gradient, hvp
from famr_cli.evaluate.certificate.head import classifier_head, flatten_head, head_features, head_loss, unflatten_head
from famr_cli.evaluate.certificate.newton import FamrHead, famr_head_newton, head_delta, influence_removal_step, relative_distance
from famr_cli.method.famr import FORGET_LOSSES

D, K, N = 6, 4, 20


def tiny_head(seed: int = 0, scale: float = 1.0, n: int = N):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, D, generator=g, dtype=torch.float64)
    weight = scale * torch.randn(K, D, generator=g, dtype=torch.float64)
    bias = scale * torch.randn(K, generator=g, dtype=torch.float64)
    return features, weight, bias


def dense(loss_fn, theta):
    theta = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(theta), theta)
    return grad, hessian(loss_fn, theta.detach())


@pytest.mark.parametrize("loss", ["kl_uniform", "entropy", "cross_entropy"])
def test_hvp_equals_dense_hessian_times_vectors(loss):
    features, weight, bias = tiny_head()
    labels = torch.arange(N) % K
    fn = head_loss(features, K, loss, labels=labels)
    theta = flatten_head(weight, bias)
    _, h = dense(fn, theta)
    for v in torch.randn(5, theta.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(1)):
        torch.testing.assert_close(hvp(fn, theta, v), h @ v, rtol=1e-10, atol=1e-12)


def test_losses_match_famr_training_losses():
    features, weight, bias = tiny_head()
    logits = features @ weight.T + bias
    for name, train_loss in FORGET_LOSSES.items():
        ours = head_loss(features, K, name)(flatten_head(weight, bias))
        torch.testing.assert_close(ours.float(), train_loss(logits.float()), rtol=1e-5, atol=1e-6)
    w, b = unflatten_head(flatten_head(weight, bias), (K, D))
    assert torch.equal(w, weight) and torch.equal(b, bias)


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.logspace(-2, 2, 40, dtype=torch.float64)) @ q.T  # condition number 1e4
    b = torch.randn(40, generator=g, dtype=torch.float64)
    x, iterations, residual = conjugate_gradient(lambda v: a @ v, b, tol=1e-10)
    assert residual <= 1e-10
    assert float(torch.linalg.vector_norm(b - a @ x) / torch.linalg.vector_norm(b)) == pytest.approx(residual, rel=1e-6, abs=1e-14)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-7, atol=1e-9)
    assert 0 < iterations <= 4 * 40  # finite precision may need a little more than n steps
    assert conjugate_gradient(lambda v: a @ v, torch.zeros(40, dtype=torch.float64)).iterations == 0
    assert conjugate_gradient(lambda v: 3.0 * v, b).iterations == 1  # one distinct eigenvalue: one step


def test_conjugate_gradient_reports_negative_curvature():
    a = torch.diag(torch.tensor([2.0, 1.0, -0.5], dtype=torch.float64))
    with pytest.raises(NegativeCurvatureError) as err:
        conjugate_gradient(lambda v: a @ v, torch.ones(3, dtype=torch.float64))
    assert err.value.rayleigh <= 0


@pytest.mark.parametrize("loss", ["kl_uniform", "entropy"])
@pytest.mark.parametrize("lam", [1e-3, 0.05, 1.0, 30.0])
def test_famr_head_newton_matches_dense_solve(loss, lam):
    # Near-uniform predictions (logit std 0.3): entropy's H_f is PSD here too. At logit std 0.9 it
    # already is not (for two classes, -H(p) is concave in the margin t once t * tanh(t / 2) > 1).
    features, weight, bias = tiny_head(scale=0.1)
    fn = head_loss(features, K, loss)
    theta0 = flatten_head(weight, bias)
    grad, h = dense(fn, theta0)
    a = h + 2 * lam * torch.eye(theta0.numel(), dtype=torch.float64)
    assert torch.linalg.eigvalsh(a).min() > 0
    result = famr_head_newton(FamrHead(features.float(), weight.float(), bias.float(), lam, loss=loss))  # float32 in, float64 solve
    fn32 = head_loss(features.float().double(), K, loss)
    grad32, h32 = dense(fn32, flatten_head(weight.float().double(), bias.float().double()))
    expected = -torch.linalg.solve(h32 + 2 * lam * torch.eye(theta0.numel(), dtype=torch.float64), grad32)
    assert result.delta.dtype == torch.float64 and result.converged and result.negative_curvature is None
    torch.testing.assert_close(result.delta, expected, rtol=1e-6, atol=1e-9 * float(expected.abs().max()))
    assert result.grad_norm == pytest.approx(float(torch.linalg.vector_norm(grad32)), rel=1e-9)
    # The float64 route gives the same answer as the dense float64 one.
    exact = famr_head_newton(FamrHead(features, weight, bias, lam, loss=loss))
    torch.testing.assert_close(exact.delta, -torch.linalg.solve(a, grad), rtol=1e-6, atol=1e-12)
    dw, db = exact.split()
    assert dw.shape == (K, D) and db.shape == (K,)


def test_large_lambda_is_the_first_order_step():
    features, weight, bias = tiny_head()
    grad, _ = dense(head_loss(features, K, "kl_uniform"), flatten_head(weight, bias))
    lam = 1e5
    result = famr_head_newton(FamrHead(features, weight, bias, lam))
    assert relative_distance(result.delta, -grad / (2 * lam)) < 1e-4


@pytest.mark.parametrize("lam", [0.01, 0.1, 1.0, 10.0])
def test_newton_step_against_the_exact_famr_head(lam):
    features, weight, bias = tiny_head(seed=3, scale=1.5)  # confident predictions (logit std ~4)
    fn = head_loss(features, K, "kl_uniform")
    theta0 = flatten_head(weight, bias)

    def objective(theta):
        return fn(theta) + lam * (theta - theta0).square().sum()

    result = famr_head_newton(FamrHead(features, weight, bias, lam))
    d = result.diagnostics
    assert d["objective_before"] == pytest.approx(float(objective(theta0)))
    assert d["objective_after"] == pytest.approx(float(objective(theta0 + result.delta)))
    theta_star = lbfgs(objective, theta0)  # kl_uniform + anchor is strictly convex: the exact FAMR head
    err = relative_distance(result.delta, theta_star - theta0)
    if lam >= 0.1:
        # The step lowers the objective and predicts the move; exact as lam grows (second order).
        assert d["objective_after"] < d["objective_before"]
        assert err < {0.1: 0.3, 1.0: 0.02, 10.0: 1e-3}[lam], err
        assert d["decrease_ratio"] > 0.7
    else:
        # A weak anchor on a confident head: the softmax Hessian is nearly flat, the full Newton
        # step overshoots (~2.7x the true move here) and RAISES the objective; the ratio says so.
        assert err > 1 and d["objective_after"] > d["objective_before"] and d["decrease_ratio"] < 0


def lbfgs(objective, theta0, iters: int = 500):
    theta = theta0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=iters, tolerance_grad=1e-13, tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = objective(theta)
        value.backward()
        return value

    opt.step(closure)
    return theta.detach()


def test_entropy_negative_curvature_is_reported():
    # Confident predictions: the negative entropy sum p log p is concave in the logits away from
    # uniform (for two classes it flattens toward 0 as the margin grows), so H_f is indefinite.
    features, weight, bias = tiny_head(seed=1, scale=3.0)
    fn = head_loss(features, K, "entropy")
    theta0 = flatten_head(weight, bias)
    _, h = dense(fn, theta0)
    min_eig = float(torch.linalg.eigvalsh(h).min())
    assert min_eig < -1e-3, min_eig
    bad = famr_head_newton(FamrHead(features, weight, bias, lam=1e-6, loss="entropy"))
    assert bad.delta is None and not bad.converged
    assert bad.negative_curvature is not None and min_eig - 1e-9 <= bad.negative_curvature <= -2e-6
    with pytest.raises(ValueError, match="negative curvature"):
        bad.split()
    # Once 2 lam exceeds |lambda_min(H_f)| the system is SPD again and CG solves it.
    lam = -min_eig  # 2 lam = 2 |lambda_min|
    good = famr_head_newton(FamrHead(features, weight, bias, lam=lam, loss="entropy"))
    assert good.converged
    grad, _ = dense(fn, theta0)
    torch.testing.assert_close(good.delta, -torch.linalg.solve(h + 2 * lam * torch.eye(len(theta0), dtype=torch.float64), grad))


def overlapping_classes(n: int = 150, seed: int = 0):
    """Three overlapping Gaussian classes in 4-D: a finite cross-entropy optimum exists."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    means = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]], dtype=torch.float64)
    features = means[labels] + torch.randn(n, 4, generator=g, dtype=torch.float64)
    return features, labels


def test_influence_removal_step_matches_dense_and_approaches_retrained_head():
    features, labels = overlapping_classes()
    forget = torch.zeros(len(labels), dtype=torch.bool)
    forget[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))[:8]] = True
    fr, yr, ff, yf = features[~forget], labels[~forget], features[forget], labels[forget]
    zeros = torch.zeros(3 * 4 + 3, dtype=torch.float64)
    full = head_loss(features, 3, "cross_entropy", labels)
    theta0 = lbfgs(full, zeros)  # the original head: trained on D
    w0, b0 = unflatten_head(theta0, (3, 4))

    damping = 1e-3
    result = influence_removal_step(fr, yr, ff, yf, w0, b0, damping=damping)
    loss_r = head_loss(fr, 3, "cross_entropy", yr)
    grad_r, h_r = dense(loss_r, theta0)
    expected = -torch.linalg.solve(h_r + damping * torch.eye(15, dtype=torch.float64), grad_r)
    torch.testing.assert_close(result.delta, expected, rtol=1e-6, atol=1e-12)
    assert result.converged and result.diagnostics["full_grad_norm"] < 1e-6 < result.diagnostics["forget_grad_norm"]
    assert result.grad_norm == pytest.approx(float(torch.linalg.vector_norm(grad_r)))

    # The retrained head from theta_0 (L-BFGS moves only along gradients, which like the Newton
    # step are orthogonal to the softmax-shift null space, so both land on the same optimum).
    theta_r = lbfgs(loss_r, theta0)
    one_step = relative_distance(result.delta, theta_r - theta0)
    assert one_step < 0.05, one_step
    theta = theta0 + result.delta
    for _ in range(3):
        w, b = unflatten_head(theta, (3, 4))
        theta = theta + influence_removal_step(fr, yr, None, None, w, b, damping=damping).delta
    assert relative_distance(theta - theta0, theta_r - theta0) < 1e-6


def test_bad_inputs_are_rejected():
    features, weight, bias = tiny_head()
    with pytest.raises(ValueError, match="2\\*lam"):
        famr_head_newton(FamrHead(features, weight, bias, lam=0.0))
    with pytest.raises(ValueError, match="damping > 0"):
        influence_removal_step(features, torch.zeros(N, dtype=torch.long), None, None, weight, bias, damping=0.0)
    with pytest.raises(ValueError, match="do not match"):
        famr_head_newton(FamrHead(features[:, :3], weight, bias, lam=1.0))
    no_bias = famr_head_newton(FamrHead(features, weight, None, lam=1.0))
    assert no_bias.delta.numel() == K * D and no_bias.split()[1] is None


def tiny_resnet():
    return timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1, layers=[1, 1, 1, 1], channels=[8, 8, 8, 8])


def tiny_vit():
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=10, in_chans=1, img_size=8, patch_size=2, embed_dim=16, depth=1, num_heads=2
    )


@pytest.mark.parametrize("build", [tiny_resnet, tiny_vit], ids=["resnet", "vit"])
def test_head_features_reproduce_logits(build):
    torch.manual_seed(0)
    model = build().train()
    x = torch.randn(12, 1, 8, 8)
    batches = [(x[:5], torch.zeros(5)), (x[5:], torch.zeros(7))]
    features = head_features(model, batches)
    assert model.training, "head_features must restore the model's mode"
    assert not features.requires_grad and features.shape[0] == 12
    head = classifier_head(model)
    assert head is (model.fc if hasattr(model, "fc") else model.head)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(features), model(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(head_features(model, [x]), features)

    # head_delta flattens a moved head in the layout the Newton step uses.
    before = torch.nn.Linear(head.in_features, head.out_features)
    before.load_state_dict(head.state_dict())
    result = famr_head_newton(FamrHead(features, head.weight, head.bias, lam=0.5))
    dw, db = result.split()
    with torch.no_grad():
        head.weight += dw.float()
        head.bias += db.float()
    assert relative_distance(head_delta(before, head), result.delta) < 1e-6
    assert math.isfinite(result.as_dict()["delta_norm"])


def test_non_linear_head_is_a_clear_error():
    model = timm.create_model("resnet18", pretrained=False, num_classes=0, layers=[1, 1, 1, 1], channels=[8, 8, 8, 8])
    with pytest.raises(FamrError, match="not nn.Linear"):
        classifier_head(model)
    with pytest.raises(FamrError, match="get_classifier"):
        classifier_head(torch.nn.Linear(2, 2))


def test_famr_head_minimiser_matches_lbfgs_on_a_tiny_head():
    from famr_cli.evaluate.certificate.newton import famr_head_minimiser

    torch.manual_seed(3)
    features = torch.randn(30, 6, dtype=torch.float64)
    weight0, bias0 = 2.0 * torch.randn(4, 6, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    lam = 0.05
    exact = famr_head_minimiser(FamrHead(features, weight0, bias0, lam))
    assert exact.grad_norm < 1e-9 and exact.newton_steps < 50
    theta0 = torch.cat([weight0.reshape(-1), bias0])
    theta = theta0.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = features @ theta[:24].reshape(4, 6).T + theta[24:]
        kl_uniform = (-torch.log_softmax(logits, dim=1).mean(dim=1) - torch.log(torch.tensor(4.0))).mean()
        value = kl_uniform + lam * (theta - theta0).square().sum()
        value.backward()
        return value

    optimizer.step(closure)
    assert torch.allclose(exact.delta, theta.detach() - theta0, atol=1e-6)
