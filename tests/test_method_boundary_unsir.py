"""Boundary Shrink, Boundary Expanding and UNSIR pinned to the official code's steps on hand-sized problems.

Boundary Unlearning: the authors' Boundary-Unlearning-Code (GitHub copy TY-LEE-KR/Boundary-Unlearning-Code@86c2f1f:
``boundary_shrink``, ``boundary_expanding``, ``FGSM`` and ``LinfPGD``). UNSIR: vikram2000b/Fast-Machine-Unlearning@fc217ce
(``Machine Unlearning.ipynb``). Expected numbers come from their formulas worked by hand, not from famr's code.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli import api
from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError
from famr_cli.forget import ForgetSplit
from famr_cli.method import UnlearnContext
from famr_cli.method.boundary_expand import BoundaryExpand, shadow_row
from famr_cli.method.boundary_shrink import Attack, BoundaryShrink, PixelBox, nearest_labels
from famr_cli.method.unsir import UNSIR, ImpairBatches, learn_noise, retained_subset
from tiny_problem import CPU, assert_one_sentence_naming, method_from_yaml, tiny_problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- A 2-feature, 3-class linear problem whose gradients are worked out by hand -------------------

# Logits W x + b with W rows (1, 0), (0, 1), (-1, -1) and b = 0: class 0 reads feature 1, class 1 feature 2.
W = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
# Three class-0 forget samples (rows 0-2) and three retained rows of classes 1 and 2.
X = torch.tensor([[1.0, 0.2], [3.0, 0.0], [0.8, -0.5], [0.0, 1.0], [-1.0, -1.0], [0.1, 2.0]])
Y = torch.tensor([0, 0, 0, 1, 2, 1])
FLOAT_BOX = PixelBox(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), valid=False)


def _linear_model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3))
    with torch.no_grad():
        model[1].weight.copy_(W)
        model[1].bias.zero_()
    model.get_classifier = lambda: model[1]
    return model


def _linear_ctx(forget_class: int = 0, **kwargs) -> UnlearnContext:
    # Float images with mean 0 and std 1 reach the model unchanged, and have no known pixel range.
    data = ImageData(X.view(6, 2, 1, 1), Y, X[:2].view(2, 2, 1, 1), Y[:2], ["a", "b", "c"], (0.0, 0.0), (1.0, 1.0))
    forget = (Y == forget_class).nonzero().squeeze(1)
    retain = (Y != forget_class).nonzero().squeeze(1)
    split = ForgetSplit(forget, retain, torch.tensor([0]), torch.tensor([1]), "class", [forget_class])
    return UnlearnContext(data, split, CPU, seed=kwargs.pop("seed", 0), **kwargs)


def _hand_fgsm(x: torch.Tensor, y: int, eps: float) -> tuple[torch.Tensor, int]:
    """x + eps * sign(dCE/dx), dCE/dx = W^T (softmax(W x) - e_y) for the linear model; the label is argmax W x_adv."""
    p = torch.softmax(W @ x, dim=0)
    x_adv = x + eps * torch.sign(W.T @ (p - torch.eye(3)[y]))
    return x_adv, int((W @ x_adv).argmax())


# --- Shipped defaults ---------------------------------------------------------------------------


def test_shipped_defaults_are_the_official_recipes():
    for name, cls in (("boundary_shrink", BoundaryShrink), ("boundary_expand", BoundaryExpand)):
        s = method_from_yaml(cls, name).settings
        assert (s.optimizer, s.lr, s.momentum, s.weight_decay, s.schedule) == ("sgd", 1e-5, 0.9, 0.0, "constant")
        assert (s.epochs, s.batch_size, s.augment, s.bn) == (10, 64, False, "train")
    s = method_from_yaml(BoundaryShrink, "boundary_shrink").settings
    assert (s.attack, s.bound, s.pgd_step, s.pgd_iters, s.random_start) == ("fgsm", 0.1, 8 / 255, 5, False)
    s = method_from_yaml(UNSIR, "unsir").settings
    assert (s.optimizer, s.lr, s.epochs, s.repair_lr, s.repair_epochs, s.batch_size, s.weight_decay) == ("adam", 0.02, 1, 0.01, 1, 256, 0.0)
    assert (s.noise_samples, s.noise_steps, s.noise_lr, s.noise_l2, s.noise_bn) == (256, 40, 0.1, 0.1, "train")
    assert (s.noise_copies, s.noise_rows) == (20, "channels")  # the notebook's impair set: 20 copies of the first 3 (C) images
    assert s.retain_per_class == 1000  # the notebook's num_samples_per_class


def test_the_three_are_class_forgetting_methods_and_declare_what_they_read():
    reads = {"boundary_shrink": "forget", "boundary_expand": "forget", "unsir": "forget+retain"}
    for (name, read), cls in zip(reads.items(), (BoundaryShrink, BoundaryExpand, UNSIR)):
        method = method_from_yaml(cls, name)
        assert method.data_read == read and method.forget_specs == ("class",)
        method.check_forget("class")
        with pytest.raises(FamrError) as err:
            method.check_forget("sample")
        assert str(err.value) == f"method={name} is defined for forget=class only (got forget=sample); pick another method or forget spec."


# --- Boundary Shrink: the neighbour search ------------------------------------------------------


def test_fgsm_finds_the_nearest_wrong_class_or_keeps_the_label_when_the_step_is_too_short():
    model = _linear_model().eval()
    x, y = X[:3].view(3, 2, 1, 1), Y[:3]
    for eps in (0.5, 0.3):
        attack = Attack(bound=eps, step=eps, iters=1, random_start=False)
        x_adv = attack.perturb(model, x, y, FLOAT_BOX)
        labels = nearest_labels(model, x, y, attack, FLOAT_BOX)
        for i in range(3):
            want_x, want_label = _hand_fgsm(X[i], 0, eps)
            assert torch.allclose(x_adv[i].flatten(), want_x, atol=1e-6)
            assert int(labels[i]) == want_label
    # By hand at eps 0.5: (1, 0.2) -> (0.5, 0.7), class 1; (3, 0) -> (2.5, 0.5), still class 0; (0.8, -0.5) -> (0.3, -1), class 2.
    assert nearest_labels(model, x, y, Attack(0.5, 0.5, 1, False), FLOAT_BOX).tolist() == [1, 0, 2]
    # At eps 0.3 none crosses: (0.7, 0.5) and (0.5, -0.8) still read class 0, so their labels stay 0 (as in their code).
    assert nearest_labels(model, x, y, Attack(0.3, 0.3, 1, False), FLOAT_BOX).tolist() == [0, 0, 0]


def test_pgd_steps_are_projected_back_into_the_bound():
    model = _linear_model().eval()
    x, y = X[:1].view(1, 2, 1, 1), Y[:1]
    # Steps of 0.4 along the sign (-, +): (0.6, 0.6), (0.2, 1.0) -> projected to (0.5, 0.7), then stays there.
    x_adv = Attack(bound=0.5, step=0.4, iters=3, random_start=False).perturb(model, x, y, FLOAT_BOX)
    assert torch.allclose(x_adv.flatten(), torch.tensor([0.5, 0.7]))
    one_step = Attack(bound=0.5, step=0.4, iters=1, random_start=False).perturb(model, x, y, FLOAT_BOX)
    assert torch.allclose(one_step.flatten(), torch.tensor([0.6, 0.6]))


def test_stored_uint8_images_stay_valid_pixels_clamped_and_rounded_to_1_over_255():
    box = PixelBox(torch.full((1, 1, 1, 1), 0.5), torch.full((1, 1, 1, 1), 0.25), valid=True)
    natural = torch.tensor([0.98, 100 / 255, 0.5]).view(1, 1, 1, 3)
    proposal = natural + torch.tensor([0.05, 0.05, 0.2]).view(1, 1, 1, 3)
    projected = box.project(proposal, natural, bound=0.05)
    # 1.03 is clamped to 1; 100/255 + 0.05 = 112.75/255 rounds to 113/255; +0.2 is cut to the bound: 0.55 = 140.25/255 -> 140/255.
    assert torch.allclose(projected.flatten(), torch.tensor([1.0, 113 / 255, 140 / 255]))
    assert torch.allclose(box.to_inputs(projected).flatten()[0], torch.tensor(2.0))  # (1 - 0.5) / 0.25
    assert torch.allclose(box.to_pixels(box.to_inputs(projected)), projected)
    assert not PixelBox.of(_linear_ctx()).valid  # float images (famr_cli.api's) have no known pixel range
    data, split, _ = tiny_problem()
    assert PixelBox.of(UnlearnContext(data, split, CPU, seed=0)).valid


def test_random_start_is_seeded():
    model = _linear_model().eval()
    x, y = X[:3].view(3, 2, 1, 1), Y[:3]
    attack = Attack(bound=0.5, step=0.1, iters=1, random_start=True)

    def run(seed: int) -> torch.Tensor:
        return attack.perturb(model, x, y, FLOAT_BOX, torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
    assert ((run(1) - x).abs() <= 0.5 + 1e-6).all()


# --- Boundary Shrink: the fine-tuning ----------------------------------------------------------


def _hand_ce_gradient(w: torch.Tensor, b: torch.Tensor, labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """d mean CE / d(W, b) = mean_i (softmax(W x_i + b) - e_{label_i}) x_i^T over the forget rows 0-2."""
    x = X[:3].double()
    residual = torch.softmax(x @ w.T + b, dim=1) - torch.eye(3, dtype=torch.float64)[labels]
    return residual.T @ x / 3, residual.mean(0)


def test_shrink_fine_tunes_towards_the_labels_of_the_frozen_originals_neighbours():
    """Two full-batch SGD steps (lr 2, momentum 0.9) with the labels the ORIGINAL gives the eps-0.5 neighbours, [1, 0, 2],
    at both steps: the model moved by the first step would label the neighbours otherwise."""
    model, ctx = _linear_model(), _linear_ctx()
    labels = [_hand_fgsm(X[i], 0, 0.5)[1] for i in range(3)]
    assert labels == [1, 0, 2]
    report = method_from_yaml(BoundaryShrink, "boundary_shrink", lr=2.0, epochs=2, batch_size=3, bound=0.5).unlearn(model, ctx)
    w0, b0 = W.double(), torch.zeros(3, dtype=torch.float64)
    g_w1, g_b1 = _hand_ce_gradient(w0, b0, labels)
    w1, b1 = w0 - 2 * g_w1, b0 - 2 * g_b1
    g_w2, g_b2 = _hand_ce_gradient(w1, b1, labels)
    w2, b2 = w1 - 2 * (0.9 * g_w1 + g_w2), b1 - 2 * (0.9 * g_b1 + g_b2)
    assert torch.allclose(model[1].weight.detach().double(), w2, atol=1e-5)
    assert torch.allclose(model[1].bias.detach().double(), b2, atol=1e-5)
    # The once-moved model would label the second neighbour 1, not 0: only the original's labels lead to w2.
    moved = _linear_model()
    with torch.no_grad():
        moved[1].weight.copy_(w1.float())
        moved[1].bias.copy_(b1.float())
    assert nearest_labels(moved.eval(), X[:3].view(3, 2, 1, 1), Y[:3], Attack(0.5, 0.5, 1, False), FLOAT_BOX).tolist() != labels
    assert report.certificate["attack_success"] == pytest.approx(2 / 3)  # two of three neighbours crossed, at each visit


def test_shrink_random_start_follows_the_runs_seed_not_the_global_generator():
    def run(seed: int, global_seed: int) -> list[torch.Tensor]:
        data, split, model = tiny_problem(fit_steps=30)
        torch.manual_seed(global_seed)
        method = method_from_yaml(BoundaryShrink, "boundary_shrink", lr=0.05, epochs=2, batch_size=8, bound=0.3, random_start=True)
        report = method.unlearn(model, UnlearnContext(data, split, CPU, seed=seed))
        return [p.detach().clone() for p in model.parameters()] + [torch.tensor(report.certificate["attack_success"])]

    first = run(3, global_seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first, run(3, global_seed=1)))
    assert not all(torch.equal(a, b) for a, b in zip(first, run(4, global_seed=0)))


@pytest.mark.parametrize(
    ("key", "value"),
    [("attack", "cw"), ("bound", 0), ("pgd_step", -0.1), ("pgd_iters", 0), ("random_start", "yes"), ("bn", "frozen"), ("lr", 0)],
)
def test_shrink_refuses_bad_options_with_one_sentence(key, value):
    with pytest.raises(FamrError) as err:
        method_from_yaml(BoundaryShrink, "boundary_shrink", **{key: value})
    assert_one_sentence_naming(err, f"method.{key}")


# --- Boundary Expanding ------------------------------------------------------------------------


def _forget_probability(model: nn.Module, data: ImageData, split: ForgetSplit) -> float:
    x = (data.x_train[split.forget_train].float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        return float(torch.softmax(model.eval()(x), dim=1)[:, 0].mean())


def test_expand_prunes_back_to_k_rows_and_moves_d_f_mass_off_its_class():
    data, split, model = tiny_problem(fit_steps=200)
    head, keys = model[-1], set(model.state_dict())
    before = _forget_probability(model, data, split)
    report = method_from_yaml(BoundaryExpand, "boundary_expand", lr=0.05, epochs=5, batch_size=8).unlearn(
        model, UnlearnContext(data, split, CPU, seed=0)
    )
    assert model[-1] is head and model.get_classifier().weight.shape == (3, 64) and model.get_classifier().bias.shape == (3,)
    assert set(model.state_dict()) == keys and not head._forward_hooks  # no shadow left behind
    assert model(torch.zeros(5, 1, 4, 4)).shape == (5, 3)
    after = _forget_probability(model, data, split)
    assert before > 0.7 and after < before - 0.3, (before, after)
    assert report.certificate["shadow_class"] == 3


def test_expand_head_rows_are_those_of_a_widened_layer_trained_then_pruned():
    """Their recipe by hand: a (K+1)-row layer holding the head's K rows and the shadow row, the network trained on D_f labelled K
    (full-batch SGD, momentum 0.9), then its first K rows kept. famr's head must end exactly there: trained, not reset."""
    model, ctx = _linear_model(), _linear_ctx()
    reference = _linear_model()
    widened = nn.Linear(2, 4)
    with torch.no_grad():
        widened.weight.copy_(torch.cat([W, shadow_row(reference[1], ctx.seed).weight]))
        widened.bias.zero_()
    optimizer = torch.optim.SGD(widened.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(widened(X[:3]), torch.full((3,), 3)).backward()
        optimizer.step()
    method_from_yaml(BoundaryExpand, "boundary_expand", lr=0.5, epochs=3, batch_size=3).unlearn(model, ctx)
    assert torch.allclose(model[1].weight, widened.weight[:3], atol=1e-6)
    assert torch.allclose(model[1].bias, widened.bias[:3], atol=1e-6)
    assert not torch.allclose(model[1].weight, W, atol=1e-3)  # the K rows moved with the shadow class


def test_shadow_row_is_one_row_of_a_xavier_normal_k_plus_1_layer_seeded_by_the_run():
    head = nn.Linear(4000, 9)
    row = shadow_row(head, seed=5)
    assert row.weight.shape == (1, 4000) and torch.equal(row.bias, torch.zeros(1))
    assert float(row.weight.detach().std()) == pytest.approx(math.sqrt(2 / (4000 + 10)), rel=0.05)
    assert torch.equal(row.weight, shadow_row(head, seed=5).weight) and not torch.equal(row.weight, shadow_row(head, seed=6).weight)


def test_expand_refuses_a_model_without_a_linear_head():
    method = method_from_yaml(BoundaryExpand, "boundary_expand")
    method.check_model(_linear_model())
    for model in (nn.Sequential(nn.Flatten(), nn.Linear(2, 3)), nn.Identity()):
        with pytest.raises(FamrError) as err:
            method.check_model(model)
        assert_one_sentence_naming(err, "get_classifier()")


@pytest.mark.parametrize(("key", "value"), [("bn", "frozen"), ("epochs", 0), ("batch_size", 0), ("lr", -1)])
def test_expand_refuses_bad_options_with_one_sentence(key, value):
    with pytest.raises(FamrError) as err:
        method_from_yaml(BoundaryExpand, "boundary_expand", **{key: value})
    assert_one_sentence_naming(err, f"method.{key}")


# --- UNSIR: the noise ----------------------------------------------------------------------------


def _unsir_settings(**overrides):
    return method_from_yaml(UNSIR, "unsir", **overrides).settings


def test_noise_objective_is_minus_ce_plus_l2_by_its_first_adam_step():
    """Adam's first step moves each element by lr * g / (|g| + 1e-8); for the linear model the gradient of
    -mean_i CE(W n_i, c) + l2 * mean_i ||n_i||^2 is -(W^T (softmax(W n_i) - e_c)) / N + 2 l2 n_i / N."""
    model, ctx = _linear_model(), _linear_ctx()
    shape, cls, lr, l2 = (4, 2, 1, 1), 0, 0.1, 0.3
    start, _ = learn_noise(model, cls, shape, _unsir_settings(noise_steps=0, noise_bn="eval"), ctx)
    moved, _ = learn_noise(model, cls, shape, _unsir_settings(noise_steps=1, noise_lr=lr, noise_l2=l2, noise_bn="eval"), ctx)
    n = start.view(4, 2).double()
    p = torch.softmax(n @ W.double().T, dim=1)
    grad = -((p - torch.eye(3, dtype=torch.float64)[cls]) @ W.double()) / 4 + 2 * l2 * n / 4
    assert torch.allclose(moved.view(4, 2).double(), n - lr * grad / (grad.abs() + 1e-8), atol=1e-6)


def test_learned_noise_raises_the_forget_class_loss_and_leaves_the_model_alone():
    data, split, model = tiny_problem(fit_steps=60)
    ctx = UnlearnContext(data, split, CPU, seed=0)
    weights = copy.deepcopy(model.state_dict())
    model.zero_grad(set_to_none=True)  # the fit's last gradients
    shape = (16, 1, 4, 4)
    start, _ = learn_noise(model, 0, shape, _unsir_settings(noise_steps=0, noise_bn="eval"), ctx)
    noise, figures = learn_noise(model, 0, shape, _unsir_settings(noise_bn="eval"), ctx)
    model.eval()
    with torch.no_grad():
        ce_start = float(F.cross_entropy(model(start), torch.zeros(16, dtype=torch.long)))
        ce_learnt = float(F.cross_entropy(model(noise), torch.zeros(16, dtype=torch.long)))
    assert ce_learnt > ce_start + 1.0, (ce_start, ce_learnt)
    assert figures[0] == pytest.approx(ce_start, rel=1e-5) and figures[1] > figures[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())  # eval mode: not even BN statistics move
    assert all(p.grad is None for p in model.parameters())


def test_noise_in_train_mode_follows_the_noise_batch_statistics_as_the_notebook():
    data, split, model = tiny_problem(fit_steps=60)
    before, tracked = model[1].running_mean.clone(), int(model[1].num_batches_tracked)
    learn_noise(model, 0, (16, 1, 4, 4), _unsir_settings(noise_steps=3), UnlearnContext(data, split, CPU, seed=0))
    assert int(model[1].num_batches_tracked) == tracked + 3 and not torch.equal(model[1].running_mean, before)


# --- UNSIR: the data of the two phases ------------------------------------------------------------


def test_retained_subset_is_the_first_n_training_rows_of_every_retained_class():
    y_train = torch.tensor([0, 1, 2, 1, 1, 2, 0, 1, 3, 1])
    retain = torch.tensor([9, 7, 5, 4, 3, 2, 1, 8])  # D_r out of order, and without rows 0 and 6
    rows = retained_subset(y_train, retain, forgotten=[0], per_class=3)
    # Class 1: rows 1, 3, 4 (7 and 9 are beyond 3); class 2: rows 2, 5; class 3: row 8.
    assert rows.tolist() == [1, 3, 4, 2, 5, 8]
    assert retained_subset(y_train, retain, forgotten=[1, 2], per_class=1000).tolist() == [8]


def test_impair_set_holds_every_noise_row_noise_copies_times_and_every_retained_row_once():
    ctx = _linear_ctx()
    noise = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 2, 1, 1) + 100  # rows 100, 101, 102
    rows = torch.tensor([3, 4, 5])
    batches = ImpairBatches(noise, torch.zeros(3, dtype=torch.long), 4, rows, ctx, batch_size=5)
    assert len(batches) == 3  # 12 noise + 3 retained rows
    epoch = list(batches)
    xs, ys = torch.cat([x for x, _ in epoch]), torch.cat([y for _, y in epoch])
    assert [len(x) for x, _ in epoch] == [5, 5, 5]
    firsts = xs[:, 0, 0, 0]
    assert sorted(firsts[firsts >= 100].tolist()) == [100.0] * 4 + [101.0] * 4 + [102.0] * 4
    assert (ys[firsts >= 100] == 0).all()
    retained = sorted(map(tuple, xs[firsts < 100].view(-1, 2).tolist()))
    assert retained == sorted(map(tuple, X[rows].tolist())) and sorted(ys[firsts < 100].tolist()) == [1, 1, 2]
    second = torch.cat([x for x, _ in batches])
    again = torch.cat([x for x, _ in ImpairBatches(noise, torch.zeros(3, dtype=torch.long), 4, rows, ctx, batch_size=5)])
    assert torch.equal(again, xs) and not torch.equal(second, xs)  # seeded, and a new order each epoch


def test_unsir_impairs_on_noise_labelled_with_its_class_then_repairs_on_the_retained_subset(monkeypatch):
    """Forgetting class 1 (the notebook would label the noise 0): noise steps, then impair batches with noise (label 1)
    and retained rows, then repair batches of retained rows only; the impair lr, then the repair lr. Of the 5 learnt
    noise images the impair set holds the first C = 2 (the images' channels), 3 times each, as the notebook's loop."""
    calls, real = [], F.cross_entropy

    def recording(logits, target, *args, **kwargs):
        calls.append(target.tolist())
        return real(logits, target, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", recording)
    logged: list[dict] = []
    ctx = _linear_ctx(forget_class=1, log_metrics=logged.append)
    options = dict(noise_samples=5, noise_copies=3, noise_steps=2, retain_per_class=1, batch_size=4, lr=0.02, repair_lr=0.01)
    report = method_from_yaml(UNSIR, "unsir", **options).unlearn(_linear_model(), ctx)
    noise_steps, impair, repair = calls[:2], calls[2:4], calls[4:]
    assert noise_steps == [[1] * 5, [1] * 5]
    # Impair: 6 noise rows labelled 1 plus the first retained row of classes 0 and 2 (rows 0 and 4), in 2 batches of <= 4.
    assert sorted(sum(impair, [])) == [0] + [1] * 6 + [2]
    # Repair: the two retained rows alone, one batch.
    assert [sorted(c) for c in repair] == [[0, 2]]
    assert [m["unlearn/lr"] for m in logged] == [0.02, 0.01]
    assert report.certificate["retain_subset"] == 2 and report.certificate["noise_impair_rows"] == 6
    calls.clear()
    method_from_yaml(UNSIR, "unsir", **options, repair_epochs=0).unlearn(_linear_model(), ctx)
    assert len(calls) == 4  # impair only
    calls.clear()
    report = method_from_yaml(UNSIR, "unsir", **options, noise_rows="all").unlearn(_linear_model(), ctx)
    assert sorted(sum(calls[2:7], [])) == [0] + [1] * 15 + [2] and report.certificate["noise_impair_rows"] == 15  # 5 images x 3


def test_unsir_is_reproducible_from_the_seed():
    def run(seed: int) -> list[torch.Tensor]:
        data, split, model = tiny_problem(fit_steps=30)
        options = dict(noise_samples=8, noise_copies=2, noise_steps=3, retain_per_class=10, batch_size=8)
        method_from_yaml(UNSIR, "unsir", **options).unlearn(model, UnlearnContext(data, split, CPU, seed=seed))
        return [p.detach().clone() for p in model.parameters()]

    first, second, other = run(1), run(1), run(2)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("noise_bn", "frozen"),
        ("noise_rows", "half"),
        ("repair_lr", 0),
        ("repair_epochs", -1),
        ("retain_per_class", 0),
        ("noise_samples", 0),
        ("noise_copies", 0),
        ("noise_steps", 1.5),
        ("noise_lr", 0),
        ("noise_l2", -1),
    ],
)
def test_unsir_refuses_bad_options_with_one_sentence(key, value):
    with pytest.raises(FamrError) as err:
        method_from_yaml(UNSIR, "unsir", **{key: value})
    assert_one_sentence_naming(err, f"method.{key}")


def test_unsir_refuses_a_forget_set_without_forgotten_classes():
    data, split, model = tiny_problem()
    sample_split = ForgetSplit(split.forget_train, split.retain_train, split.forget_test, split.retain_test, "samples", [])
    with pytest.raises(FamrError) as err:
        method_from_yaml(UNSIR, "unsir").unlearn(model, UnlearnContext(data, sample_split, CPU, seed=0))
    assert_one_sentence_naming(err, "forget=class")


# --- Where the class-only rule is enforced: famr-run's checks and the Python API -----------------


@pytest.mark.parametrize("name", ["boundary_shrink", "boundary_expand", "unsir"])
def test_famr_run_refuses_forget_sample_before_anything_trains(name):
    from conftest import compose_config
    from famr_cli.validate import validate_run_settings

    checked = validate_run_settings(compose_config([f"method={name}", "forget=class"]))
    assert type(checked.method).__name__ in {"BoundaryShrink", "BoundaryExpand", "UNSIR"}
    with pytest.raises(FamrError) as err:
        validate_run_settings(compose_config([f"method={name}", "forget=sample"]))
    assert str(err.value) == f"method={name} is defined for forget=class only (got forget=sample); pick another method or forget spec."


def test_api_refuses_a_class_only_method_when_no_class_is_forgotten():
    x, y = torch.randn(12, 2, 1, 1), torch.arange(12) % 3
    forget = y == 0
    sample_data = api.UnlearningData(forget=(x[forget], y[forget]), retain=(x[~forget], y[~forget]), forgotten_classes=[])
    with pytest.raises(FamrError) as err:
        api.unlearn(_linear_model(), sample_data, method="boundary_shrink", certificate=False)
    assert str(err.value) == (
        "method 'boundary_shrink' is defined for class forgetting only, but this data forgets no whole class (forgotten_classes is empty); "
        "pass every sample of the classes to forget as forget= and none in retain=, or pick another method."
    )
    class_data = api.UnlearningData(forget=(x[forget], y[forget]), retain=(x[~forget], y[~forget]))
    assert class_data.forgotten_classes == [0]
    result = api.unlearn(_linear_model(), class_data, method="boundary_shrink", epochs=1, lr=0.1, certificate=False)
    assert re.fullmatch(r"\d+", str(result.certificate["steps"]))
