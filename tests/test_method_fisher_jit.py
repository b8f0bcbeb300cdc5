"""Fisher forgetting and JiT pinned to the official formulas on hand-sized problems.

Fisher: OPTML-Group/Unlearn-Sparse@80ba55d (``unlearn/fisher.py``: ``hessian``, ``get_mean_var``,
``fisher_new``), checked against AdityaGolatkar/SelectiveForgetting@4c02825 (``Forgetting.ipynb``).
JiT: jwf40/Zeroshot-Unlearning-At-Scale@f7e3f20 (``src/lipschitz.py``: ``AddGaussianNoise``,
``Lipschitz.modify_weight``). Every expected number is worked out from their formulas, not read back
from famr's code.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

import famr_cli.method.jit as jit_module
from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError
from famr_cli.forget import ForgetSplit
from famr_cli.method import UnlearnContext
from famr_cli.method.fisher import FisherForgetting, noise_generator, retain_fisher, scrub_
from famr_cli.method.jit import JiT, lipschitz_loss, perturbed
from tiny_problem import CPU, assert_one_sentence_naming, linear_problem, method_from_yaml, tiny_problem
from tiny_problem import LINEAR_RETAIN as RETAIN
from tiny_problem import LINEAR_X as X

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- Shipped defaults are the official recipes --------------------------------------------------


def test_shipped_fisher_defaults_are_unlearn_sparse_fisher_new_with_golatkars_alpha():
    method = method_from_yaml(FisherForgetting, "fisher")
    s = method.settings
    assert (s.alpha, s.fisher_batch_size, s.augment) == (1e-6, 32, True)
    assert method.data_read == "retain" and method.forget_specs is None


def test_shipped_jit_defaults_are_the_official_cnn_recipe():
    method = method_from_yaml(JiT, "jit")
    s = method.settings
    assert (s.optimizer, s.lr, s.momentum, s.weight_decay) == ("sgd", 3e-4, 0.0, 0.0)
    assert (s.sigma, s.perturbations, s.batch_size, s.epochs) == (0.5, 25, 128, 1)
    assert (s.bn, s.accumulate_grads) == ("train", True)
    assert method.data_read == "forget" and method.forget_specs is None


# --- Fisher: the diagonal Fisher of D_r ---------------------------------------------------------

# On the eight-sample linear problem (tiny_problem.LINEAR_X): class 0 (rows 1, 4, 7) is forgotten, D_r = rows 0, 2, 3, 5, 6.


def _hand_fisher(model: nn.Sequential, batches: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear softmax model, by its closed-form gradient. With every label set to y, the batch-mean CE has
    d/dW = mean_i (p_i - e_y) x_i^T and d/db = mean_i (p_i - e_y); F = (1 / batches) * sum over batches of
    sum_y mean_i(p_iy) * (d/dtheta)^2 (Unlearn-Sparse's ``hessian``)."""
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    f_w, f_b = torch.zeros_like(w), torch.zeros_like(b)
    for rows in batches:
        x = X[rows].double()
        p = torch.softmax(x @ w.T + b, dim=1)
        for y in range(3):
            residual = p - torch.eye(3, dtype=torch.float64)[y]
            f_w += p[:, y].mean() * (residual.T @ x / len(rows)) ** 2
            f_b += p[:, y].mean() * residual.mean(0) ** 2
    return f_w / len(batches), f_b / len(batches)


def test_fisher_is_the_batch_mean_probability_weighted_squared_gradient_over_d_r_batches():
    data, split, model, ctx = linear_problem()
    params = list(model.parameters())
    got = retain_fisher(model, ctx, params, 2, augment=True)
    # D_r in dataset order, batches of 2: rows (0, 2), (3, 5), (6).
    want = _hand_fisher(model, [[0, 2], [3, 5], [6]])
    assert all(torch.allclose(g.double(), h, rtol=1e-5, atol=1e-10) for g, h in zip(got, want))
    # Another batching gives another Fisher: the estimate is per batch, not per sample.
    other = _hand_fisher(model, [[0, 2, 3], [5, 6]])
    assert not torch.allclose(got[0].double(), other[0], rtol=1e-3)


def test_fisher_with_batches_of_one_is_golatkars_per_sample_expectation_by_autograd():
    """Batch 1: (1/n) sum_i sum_y p_iy (d/dtheta -log p_iy)^2, each gradient from a fresh autograd pass."""
    data, split, model, ctx = linear_problem()
    params = list(model.parameters())
    got = retain_fisher(model, ctx, params, 1, augment=True)
    want = [torch.zeros_like(p) for p in params]
    for row in RETAIN.tolist():
        for y in range(3):
            log_p = torch.log_softmax(model(X[row].view(1, 1, 1, 3)), dim=1)[0]
            grads = torch.autograd.grad(-log_p[y], params)
            for acc, g in zip(want, grads):
                acc += log_p[y].exp().detach() * g**2
    assert all(torch.allclose(g, w / len(RETAIN), rtol=1e-5, atol=1e-10) for g, w in zip(got, want))


def test_fisher_pass_runs_in_eval_mode_and_leaves_batchnorm_statistics_alone():
    data, split, model = tiny_problem(fit_steps=30)
    model.train()
    stats = copy.deepcopy(model[1].state_dict())
    method_from_yaml(FisherForgetting, "fisher", fisher_batch_size=8).unlearn(model, UnlearnContext(data, split, CPU, seed=0))
    assert model.training  # the caller's mode is restored
    assert torch.equal(model[1].running_mean, stats["running_mean"]) and torch.equal(model[1].running_var, stats["running_var"])
    assert int(model[1].num_batches_tracked) == int(stats["num_batches_tracked"])


# --- Fisher: the noise --------------------------------------------------------------------------


def _params_and_fisher():
    """A conv kernel, a 1-D parameter, a 3-class head's weight and bias; Fishers chosen to hit each cap."""
    conv = nn.Parameter(torch.tensor([[[[0.3, -0.2]], [[0.1, 0.4]]]]))  # [1 out, 2 in, 1, 2]
    bn = nn.Parameter(torch.tensor([1.0, 0.5]))
    head_w = nn.Parameter(torch.tensor([[0.2, -0.1], [0.5, 0.3], [-0.4, 0.6]]))
    head_b = nn.Parameter(torch.tensor([0.1, -0.2, 0.3]))
    fisher = [
        torch.tensor([[[[1.0, 0.5]], [[0.25, 2.0]]]]),
        torch.tensor([0.1, 1e-6]),
        torch.tensor([[0.001, 0.1], [0.02, 0.5], [1.0, 4.0]]),
        torch.tensor([0.5, 1e-9, 0.04]),
    ]
    return [conv, bn, head_w, head_b], fisher


# alpha = 0.01; v = alpha * min(1/F, cap), cap 1e3 (head: 1e2); ndim > 1: mean over dim 1; head and 1-D: x10.
# conv: 1/F per input channel = (1, 2) and (4, 0.5), mean over the channels (2.5, 1.25) per position -> 0.025, 0.0125.
CONV_VAR = torch.tensor([[[[0.025, 0.0125]], [[0.025, 0.0125]]]])
# 1-D: 1/F = 10 -> 0.1 x10 = 1; 1/F = 1e6 capped at 1e3 -> 10 x10 = 100.
BN_VAR = torch.tensor([1.0, 100.0])
# head weight: 1/F rows (1000 capped at 100, 10), (50, 2), (1, 0.25); means 55, 26, 0.625 -> x alpha x10: 5.5, 2.6, 0.0625.
HEAD_W_VAR = torch.tensor([[5.5, 5.5], [2.6, 2.6], [0.0625, 0.0625]])
# head bias: 1/F = 2, 1e9 capped at 100, 25 -> x alpha x10: 0.2, 10, 2.5.
HEAD_B_VAR = torch.tensor([0.2, 10.0, 2.5])


def _scrubbed(forgotten_rows: list[int], alpha: float = 0.01):
    params, fisher = _params_and_fisher()
    originals = [p.detach().clone() for p in params]
    head_ids = {id(params[2]), id(params[3])}
    generator = torch.Generator().manual_seed(7)
    scrub_(params, fisher, alpha, head_ids=head_ids, forgotten_rows=forgotten_rows, generator=generator)
    replay = torch.Generator().manual_seed(7)
    normals = [torch.randn(o.shape, generator=replay) for o in originals]  # one draw per element, in parameter order
    return params, originals, normals


def test_noise_std_is_the_official_capped_inverse_fisher_formula():
    params, originals, normals = _scrubbed([])
    for p, o, z, var in zip(params, originals, normals, [CONV_VAR, BN_VAR, HEAD_W_VAR, HEAD_B_VAR]):
        assert torch.allclose(p.detach(), o + var.sqrt() * z, rtol=1e-5, atol=1e-7)


def test_class_forgetting_resets_the_forgotten_output_row_to_n_0_1e_3():
    params, originals, normals = _scrubbed([1])
    head_w_var, head_b_var = HEAD_W_VAR.clone(), HEAD_B_VAR.clone()
    head_w_var[1], head_b_var[1] = 1e-3, 1e-3  # 1e-4 before the head's x10
    head_w_mean, head_b_mean = originals[2].clone(), originals[3].clone()
    head_w_mean[1], head_b_mean[1] = 0.0, 0.0
    expected = [
        originals[0] + CONV_VAR.sqrt() * normals[0],
        originals[1] + BN_VAR.sqrt() * normals[1],
        head_w_mean + head_w_var.sqrt() * normals[2],
        head_b_mean + head_b_var.sqrt() * normals[3],
    ]
    assert all(torch.allclose(p.detach(), e, rtol=1e-5, atol=1e-7) for p, e in zip(params, expected))


def test_alpha_zero_adds_no_noise_outside_the_forgotten_row():
    params, originals, _ = _scrubbed([], alpha=0.0)
    assert all(torch.equal(p.detach(), o) for p, o in zip(params, originals))


def _sample_split(split: ForgetSplit) -> ForgetSplit:
    return ForgetSplit(split.forget_train, split.retain_train, split.forget_test, split.retain_test, "some samples", [])


def test_unlearn_with_alpha_zero_leaves_the_model_bit_identical_unless_a_class_is_forgotten():
    data, split, model = tiny_problem(fit_steps=30)
    original = copy.deepcopy(model.state_dict())
    method = method_from_yaml(FisherForgetting, "fisher", alpha=0.0, fisher_batch_size=8)
    method.unlearn(model, UnlearnContext(data, _sample_split(split), CPU, seed=0))
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    # forget=class: only class 0's head row (weight row and bias entry) is redrawn, from N(0, 1e-3).
    method.unlearn(model, UnlearnContext(data, split, CPU, seed=0))
    after = model.state_dict()
    assert all(torch.equal(after[k], original[k]) for k in original if not k.startswith("4."))
    assert torch.equal(after["4.weight"][1:], original["4.weight"][1:]) and torch.equal(after["4.bias"][1:], original["4.bias"][1:])
    row = torch.cat([after["4.weight"][0], after["4.bias"][:1]])
    assert not torch.equal(row, torch.cat([original["4.weight"][0], original["4.bias"][:1]]))
    assert row.abs().max() < 6 * math.sqrt(1e-3)


def test_unlearn_draws_the_noise_on_the_fisher_of_d_r_from_the_runs_seed():
    data, split, model, ctx = linear_problem()
    original = copy.deepcopy(model)
    method_from_yaml(FisherForgetting, "fisher", alpha=0.05, fisher_batch_size=2).unlearn(model, ctx)
    f_w, f_b = _hand_fisher(original, [[0, 2], [3, 5], [6]])
    # Head only: v = alpha * min(1/F, 100) (weight: mean over its 3 inputs) x10; class 0's row reset.
    var_w = (0.05 * (1 / (f_w + 1e-8)).clamp(max=100).mean(1, keepdim=True) * 10).expand(3, 3).clone()
    var_b = 0.05 * (1 / (f_b + 1e-8)).clamp(max=100) * 10
    var_w[0], var_b[0] = 1e-3, 1e-3
    mean_w, mean_b = original[1].weight.detach().double().clone(), original[1].bias.detach().double().clone()
    mean_w[0], mean_b[0] = 0.0, 0.0
    generator = noise_generator(0, CPU)
    z_w, z_b = torch.randn((3, 3), generator=generator), torch.randn(3, generator=generator)
    assert torch.allclose(model[1].weight.detach().double(), mean_w + var_w.sqrt() * z_w, rtol=1e-4, atol=1e-6)
    assert torch.allclose(model[1].bias.detach().double(), mean_b + var_b.sqrt() * z_b, rtol=1e-4, atol=1e-6)


# --- JiT: the Lipschitz loss and its step -------------------------------------------------------


def _diag_linear() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
        model[1].bias.copy_(torch.tensor([1.0, -1.0]))
    return model


def test_lipschitz_loss_is_the_mean_over_copies_of_the_summed_output_to_input_ratios():
    model = _diag_linear()
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).view(2, 1, 1, 2)
    copies = [
        x + torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2),  # ratios 3/1 and 4/1
        x + torch.tensor([[3.0, 4.0], [0.0, -2.0]]).view(2, 1, 1, 2),  # ratios ||(9, 16)|| / 5 and 8 / 2
    ]
    # ((3 + 4) + (sqrt(337) / 5 + 4)) / 2: summed over the batch, averaged over the copies; the bias cancels.
    assert lipschitz_loss(model, x, copies).item() == pytest.approx((7 + math.sqrt(337) / 5 + 4) / 2, rel=1e-6)


def test_perturbed_copies_are_gaussian_noise_clamped_to_the_batchs_value_range():
    x = torch.tensor([[-1.0, 0.5], [2.0, 0.0]]).view(2, 1, 1, 2)
    got = perturbed(x, 0.8, torch.Generator().manual_seed(5))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(got, (x + 0.8 * z).clamp(-1.0, 2.0))
    assert got.min() >= -1.0 and got.max() <= 2.0
    big = perturbed(x, 50.0, torch.Generator().manual_seed(5))
    assert set(big.flatten().tolist()) <= {-1.0, 2.0}  # every element pushed past a bound lands on it


def _forget_problem(n: int = 4):
    """``n`` 2-feature forget rows (float images reach the model unchanged) and a 2-class split."""
    torch.manual_seed(0)
    x = torch.randn(n + 2, 1, 1, 2)
    y = torch.arange(n + 2) % 2
    data = ImageData(x, y, x[:2], y[:2], ["a", "b"], (0.0,), (1.0,))
    split = ForgetSplit(torch.arange(n), torch.arange(n, n + 2), torch.tensor([0]), torch.tensor([1]), "rows", [])
    return data, split, UnlearnContext(data, split, CPU, seed=0)


def _tanh_mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))


def _fixed_copies(monkeypatch, copies: list[torch.Tensor]) -> None:
    """JiT's noisy copies come from ``copies`` in order instead of its random stream."""
    queue = list(copies)
    monkeypatch.setattr(jit_module, "perturbed", lambda x, sigma, generator: queue.pop(0))


def _hand_loss(model: nn.Module, x: torch.Tensor, copies: list[torch.Tensor]) -> torch.Tensor:
    """The official loss written out: the copies' outputs held fixed, ratios summed over the batch, averaged over copies."""
    out = model(x)
    ratios = [((out - model(c).detach()).norm(dim=1) / (x - c).flatten(1).norm(dim=1)).sum() for c in copies]
    return torch.stack(ratios).mean()


def test_one_jit_step_is_minus_lr_times_the_loss_gradient_and_lowers_the_ratio(monkeypatch):
    """The official step: gradient through the clean outputs only, so it pulls each f(x_i) towards its copies'
    outputs as the model gave them before the step; that ratio falls for a small enough step."""
    data, split, ctx = _forget_problem(4)
    model = _tanh_mlp()
    x = data.x_train[:4]
    copies = [x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    original = copy.deepcopy(model)
    loss_before = _hand_loss(original, x, copies)
    grads = torch.autograd.grad(loss_before, list(original.parameters()))
    _fixed_copies(monkeypatch, copies)
    report = method_from_yaml(JiT, "jit", lr=3e-4, perturbations=3, batch_size=4, bn="eval").unlearn(model, ctx)
    for new, old, g in zip(model.parameters(), original.parameters(), grads):
        assert torch.allclose(new.detach(), old.detach() - 3e-4 * g, rtol=1e-5, atol=1e-8)
    assert report.epoch_losses == [pytest.approx(loss_before.item(), rel=1e-6)]
    with torch.no_grad():
        after = torch.stack([((model(x) - original(c)).norm(dim=1) / (x - c).flatten(1).norm(dim=1)).sum() for c in copies])
    assert after.mean() < loss_before


@pytest.mark.parametrize("accumulate", [True, False])
def test_jit_accumulates_gradients_over_the_pass_as_the_official_code(monkeypatch, accumulate):
    """Official: zero_grad once before the pass, so the second step follows g1 + g2; accumulate_grads=false: g2."""
    data, split, ctx = _forget_problem(4)
    model = _tanh_mlp()
    x1, x2 = data.x_train[:2], data.x_train[2:4]
    c1, c2 = x1 + 0.2, x2 - 0.3
    lr = 0.1
    hand = copy.deepcopy(model)
    params = list(hand.parameters())
    g1 = torch.autograd.grad(_hand_loss(hand, x1, [c1]), params)
    with torch.no_grad():
        torch._foreach_add_(params, g1, alpha=-lr)
    g2 = torch.autograd.grad(_hand_loss(hand, x2, [c2]), params)
    step2 = [a + b for a, b in zip(g1, g2)] if accumulate else g2
    with torch.no_grad():
        torch._foreach_add_(params, step2, alpha=-lr)
    _fixed_copies(monkeypatch, [c1, c2])
    overrides = dict(lr=lr, perturbations=1, batch_size=2, bn="eval", accumulate_grads=accumulate)
    report = method_from_yaml(JiT, "jit", **overrides).unlearn(model, ctx)
    assert all(torch.allclose(a.detach(), b.detach(), rtol=1e-5, atol=1e-7) for a, b in zip(model.parameters(), hand.parameters()))
    assert report.certificate["steps"] == 2


def test_jit_default_train_mode_updates_batchnorm_statistics_on_every_pass_and_bn_eval_freezes_them():
    data, split, model = tiny_problem(fit_steps=30)
    frozen = copy.deepcopy(model)
    before = model[1].running_mean.clone()
    method_from_yaml(JiT, "jit", perturbations=2, batch_size=8).unlearn(model, UnlearnContext(data, split, CPU, seed=0))
    # Official: the model stays in train mode; each batch's clean pass and its 2 copies' passes update the statistics.
    assert int(model[1].num_batches_tracked) - 30 == 3 * 3  # 20 forget rows in 3 batches of 8
    assert not torch.allclose(model[1].running_mean, before)
    method_from_yaml(JiT, "jit", perturbations=2, batch_size=8, bn="eval").unlearn(frozen, UnlearnContext(data, split, CPU, seed=0))
    assert torch.equal(frozen[1].running_mean, before) and int(frozen[1].num_batches_tracked) == 30


def test_jit_sums_gradients_within_a_pass_and_starts_each_pass_from_zero(monkeypatch):
    """Two passes of one batch each: the second pass's step follows its own gradient, not the first pass's too."""
    data, split, ctx = _forget_problem(2)
    model = _tanh_mlp()
    x = data.x_train[:2]
    copy_ = x + 0.2
    lr = 0.1
    hand = copy.deepcopy(model)
    params = list(hand.parameters())
    for _ in range(2):
        grads = torch.autograd.grad(_hand_loss(hand, x, [copy_]), params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-lr)
    _fixed_copies(monkeypatch, [copy_, copy_])
    method_from_yaml(JiT, "jit", lr=lr, perturbations=1, batch_size=2, epochs=2, bn="eval").unlearn(model, ctx)
    assert all(torch.allclose(a.detach(), b.detach(), rtol=1e-5, atol=1e-7) for a, b in zip(model.parameters(), hand.parameters()))


def test_jit_noise_is_reproducible_for_a_seed_and_varies_with_it():
    def run(seed: int) -> torch.Tensor:
        data, split, model = tiny_problem(fit_steps=30)
        method_from_yaml(JiT, "jit", perturbations=2, batch_size=8, lr=0.01).unlearn(model, UnlearnContext(data, split, CPU, seed=seed))
        return model[4].weight.detach().clone()

    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


# --- Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, name, key, value, fix",
    [
        (FisherForgetting, "fisher", "alpha", -1e-6, "method.alpha=1e-6"),
        (FisherForgetting, "fisher", "alpha", "big", "method.alpha=1e-6"),
        (FisherForgetting, "fisher", "fisher_batch_size", 0, "method.fisher_batch_size=32"),
        (FisherForgetting, "fisher", "fisher_batch_size", 2.5, "method.fisher_batch_size=32"),
        (FisherForgetting, "fisher", "augment", "yes", "method.augment=true"),
        (JiT, "jit", "sigma", 0.0, "method.sigma=0.5"),
        (JiT, "jit", "sigma", -0.1, "method.sigma=0.5"),
        (JiT, "jit", "sigma", None, "method.sigma=0.5"),
        (JiT, "jit", "perturbations", 0, "method.perturbations=25"),
        (JiT, "jit", "bn", "frozen", "method.bn"),
        (JiT, "jit", "accumulate_grads", "yes", "method.accumulate_grads=true"),
        (JiT, "jit", "lr", 0, "method.lr=0.0003"),
        (JiT, "jit", "momentum", 1.0, "method.momentum=0.9"),
    ],
)
def test_bad_options_are_one_sentence_naming_the_key_and_the_fix(cls, name, key, value, fix):
    with pytest.raises(FamrError) as err:
        method_from_yaml(cls, name, **{key: value})
    assert_one_sentence_naming(err, f"method.{key}")
    assert fix in str(err.value)


def test_fisher_refuses_a_model_without_get_classifier_before_any_work():
    method = method_from_yaml(FisherForgetting, "fisher")
    with pytest.raises(FamrError, match=r"get_classifier\(\).*use a timm backbone\.$"):
        method.check_model(nn.Sequential(nn.Flatten(), nn.Linear(3, 3)))
    data, split, model = tiny_problem()
    method.check_model(model)  # tiny_problem's model offers it, as timm models do


def test_edge_values_are_accepted():
    assert method_from_yaml(FisherForgetting, "fisher", alpha=0, fisher_batch_size=1, augment=False).settings.alpha == 0.0
    assert method_from_yaml(JiT, "jit", perturbations=1, sigma=1e-3, accumulate_grads=False).settings.perturbations == 1
