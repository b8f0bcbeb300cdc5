"""RL, SalUn, GA and l1-sparse against the official code's recipes, each on a tiny problem.

Each test pins a method's defining step against numbers derived by hand from the official formula
(OPTML-Group/Unlearn-Saliency ``Classification/unlearn/RL.py`` and ``generate_mask.py``;
OPTML-Group/Unlearn-Sparse ``unlearn/GA.py`` and ``unlearn/FT.py``), and checks that famr's earlier
behaviour stays reachable through the new options.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn

import famr_cli.method.l1_sparse as l1
from famr_cli.augment import Augment
from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError
from famr_cli.forget import ForgetSplit
from famr_cli.method import UnlearnContext
from famr_cli.method.grad_ascent import GradAscent
from famr_cli.method.l1_sparse import L1Sparse, epoch_decay, linear_decay, scheduled_alpha
from famr_cli.method.random_label import RandomLabel
from famr_cli.method.salun import SalUn, forget_gradients, saliency_mask
from famr_cli.method.shared.relabel import batch_random_labels, random_label_batches, random_wrong_labels
from famr_cli.method.shared.training import train_with_ce
from tiny_problem import CPU, METHOD_CONF, method_from_yaml, shipped_method_config, tiny_problem

K = 3
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- A problem whose images carry their row number, so every batch says which rows it holds ------


def _id_problem(n: int = 30) -> tuple[ImageData, ForgetSplit]:
    """``n`` 1x2x2 images whose first pixel is the row number; K classes, class 0 forgotten."""
    y = torch.arange(n) % K
    x = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    data = ImageData(x, y, x[:6], y[:6], ["a", "b", "c"], (0.0,), (1.0,))
    forget = (y == 0).nonzero().squeeze(1)
    retain = (y != 0).nonzero().squeeze(1)
    return data, ForgetSplit(forget, retain, torch.tensor([0, 3]), torch.tensor([1, 2, 4, 5]), "class a", [0])


def _rows(x: torch.Tensor) -> list[int]:
    return torch.round(x[:, 0, 0, 0] * 255).long().tolist()


class _Recorder(nn.Module):
    """A linear model that records the rows of every batch it is trained on."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Flatten(), nn.Linear(4, K))
        self.rows: list[list[int]] = []

    def forward(self, x):
        if self.training:
            self.rows.append(_rows(x))
        return self.inner(x)


def _record_training(monkeypatch, cls, name: str, ctx: UnlearnContext, **overrides):
    """Run method ``name`` and return, per optimizer step, the rows and the labels it was trained on."""
    labels: list[torch.Tensor] = []
    real = torch.nn.functional.cross_entropy

    def recording_cross_entropy(logits, target, *args, **kwargs):
        labels.append(target.clone())
        return real(logits, target, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", recording_cross_entropy)
    torch.manual_seed(0)
    model = _Recorder()
    method_from_yaml(cls, name, **overrides).unlearn(model, ctx)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", real)
    return model.rows, labels


RL_TINY = dict(lr=0.01, batch_size=4, augment=False)


# --- RL ----------------------------------------------------------------------------------------


def test_shipped_defaults_are_the_official_recipes_and_the_earlier_behaviour_is_named():
    rl, salun, ga, l1_yaml = map(shipped_method_config, ("random_label", "salun", "grad_ascent", "l1_sparse"))
    for section in (rl, salun):
        assert (section["relabel"], section["passes"], section["augment"]) == ("per_batch", "sequential", True)
        assert (section["optimizer"], section["momentum"], section["weight_decay"], section["epochs"], section["batch_size"]) == (
            "sgd",
            0.9,
            5e-4,
            10,
            256,
        )
    assert rl["lr"] == 0.01 and rl["schedule"] == "constant"
    assert (salun["lr"], salun["mask_ratio"]) == (0.013, 0.5)
    assert (ga["bn"], ga["augment"], ga["weight_decay"], ga["lr"], ga["epochs"], ga["momentum"]) == ("train", True, 5e-4, 1e-4, 5, 0.9)
    assert (l1_yaml["alpha_schedule"], l1_yaml["alpha"], l1_yaml["lr"], l1_yaml["epochs"]) == ("per_epoch", 5e-4, 0.01, 10)
    # The earlier behaviour, by name, is what each YAML header tells users to set.
    assert "relabel=fixed_wrong passes=mixed" in (METHOD_CONF / "random_label.yaml").read_text()
    assert "relabel=fixed_wrong passes=mixed" in (METHOD_CONF / "salun.yaml").read_text()
    assert "augment=false bn=eval weight_decay=0" in (METHOD_CONF / "grad_ascent.yaml").read_text()
    assert "alpha_schedule=per_step" in (METHOD_CONF / "l1_sparse.yaml").read_text()


def test_per_batch_labels_cover_all_classes_change_every_batch_and_are_reproducible():
    draws = [batch_random_labels(16, 5, seed=7, step=t) for t in range(200)]
    assert set(torch.cat(draws).tolist()) == set(range(5))  # uniform over all K, any true label included
    counts = torch.bincount(torch.cat(draws), minlength=5).float() / (16 * 200)
    assert torch.allclose(counts, torch.full((5,), 0.2), atol=0.03)
    assert all(not torch.equal(a, b) for a, b in zip(draws, draws[1:]))  # redrawn for every batch
    assert all(torch.equal(d, batch_random_labels(16, 5, seed=7, step=t)) for t, d in enumerate(draws))  # a function of (seed, step)
    assert not torch.equal(draws[0], batch_random_labels(16, 5, seed=8, step=0))
    assert draws[0].dtype == torch.long and draws[0].device == CPU


def test_rl_default_runs_all_forget_batches_then_all_retain_batches_each_epoch(monkeypatch):
    data, split = _id_problem()
    forget, retain = set(split.forget_train.tolist()), set(split.retain_train.tolist())
    epochs = 6
    rows, labels = _record_training(
        monkeypatch, RandomLabel, "random_label", UnlearnContext(data, split, CPU, seed=3), epochs=epochs, **RL_TINY
    )
    forget_steps, retain_steps = math.ceil(len(forget) / 4), math.ceil(len(retain) / 4)  # 3 and 5
    per_epoch = forget_steps + retain_steps
    assert len(rows) == len(labels) == epochs * per_epoch
    seen_forget_labels = []
    for epoch in range(epochs):
        steps = range(epoch * per_epoch, (epoch + 1) * per_epoch)
        first, then = steps[:forget_steps], steps[forget_steps:]
        # The forget pass: every forget row once, nothing else, each batch with labels drawn for its step.
        assert sorted(r for t in first for r in rows[t]) == sorted(forget)
        for t in first:
            assert torch.equal(labels[t], batch_random_labels(len(rows[t]), K, seed=3, step=t))
            seen_forget_labels += labels[t].tolist()
        # Then the retain pass: every retained row once, with its true label.
        assert sorted(r for t in then for r in rows[t]) == sorted(retain)
        for t in then:
            assert torch.equal(labels[t], data.y_train[rows[t]])
    assert set(seen_forget_labels) == set(range(K))  # the forget rows' true class (0) is drawn too
    # The same row gets other labels in other epochs: labels are not fixed per sample.
    by_row: dict[int, set[int]] = {}
    for t in range(len(rows)):
        for r, label in zip(rows[t], labels[t].tolist()):
            if r in forget:
                by_row.setdefault(r, set()).add(label)
    assert any(len(v) > 1 for v in by_row.values())


def test_rl_per_batch_labels_are_reproducible_for_a_seed_and_vary_with_it(monkeypatch):
    data, split = _id_problem()
    runs = [
        _record_training(monkeypatch, RandomLabel, "random_label", UnlearnContext(data, split, CPU, seed=seed), epochs=2, **RL_TINY)
        for seed in (5, 5, 6)
    ]
    assert runs[0][0] == runs[1][0] and all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert runs[0][0] != runs[2][0] or any(not torch.equal(a, b) for a, b in zip(runs[0][1], runs[2][1]))


def test_rl_fixed_wrong_mixed_is_the_earlier_behaviour(monkeypatch):
    data, split = _id_problem()
    ctx = UnlearnContext(data, split, CPU, seed=2)
    rows, labels = _record_training(
        monkeypatch, RandomLabel, "random_label", ctx, epochs=3, relabel="fixed_wrong", passes="mixed", **RL_TINY
    )
    forget = set(split.forget_train.tolist())
    assert len(rows) == 3 * math.ceil(30 / 4)
    assert any(set(b) & forget and set(b) - forget for b in rows)  # D_f and D_r share batches
    label_of: dict[int, int] = {}
    for batch_rows, batch_labels in zip(rows, labels):
        for r, label in zip(batch_rows, batch_labels.tolist()):
            if r in forget:
                assert label != int(data.y_train[r])  # never the true label
                assert label_of.setdefault(r, label) == label  # one label per sample for the whole run
            else:
                assert label == int(data.y_train[r])
    assert set(label_of) == forget

    # Bit for bit what famr's RL did before these options: fixed wrong labels on D_f + D_r in one shuffle.
    s = method_from_yaml(RandomLabel, "random_label", epochs=3, relabel="fixed_wrong", passes="mixed", **RL_TINY).settings
    torch.manual_seed(0)
    now = nn.Sequential(nn.Flatten(), nn.Linear(4, K))
    earlier = copy.deepcopy(now)
    method_from_yaml(RandomLabel, "random_label", epochs=3, relabel="fixed_wrong", passes="mixed", **RL_TINY).unlearn(now, ctx)
    earlier_labels = random_wrong_labels(data.y_train, split.forget_train, K, ctx.seed)
    both = torch.cat([split.forget_train, split.retain_train])
    train_with_ce(earlier, ctx, s, both, augment=False, bn="train", desc="rl", divergence_hint="", labels=earlier_labels)
    assert all(torch.equal(a, b) for a, b in zip(now.parameters(), earlier.parameters()))


def test_rl_per_batch_mixed_redraws_only_the_forget_rows_of_each_mixed_batch():
    data, split = _id_problem()
    ctx = UnlearnContext(data, split, CPU, seed=1)
    batches = random_label_batches(ctx, relabel="per_batch", passes="mixed", batch_size=4, augment=False, method="random_label")
    forget = set(split.forget_train.tolist())
    for step, (x, y) in enumerate(list(batches) + list(batches)):
        rows = _rows(x)
        drawn = batch_random_labels(len(rows), K, seed=1, step=step)
        for i, r in enumerate(rows):
            assert int(y[i]) == (int(drawn[i]) if r in forget else int(data.y_train[r]))


# --- SalUn -------------------------------------------------------------------------------------


def test_saliency_mask_keeps_round_ratio_n_entries_of_largest_abs_summed_gradient():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(7, 5, generator=g), torch.randn(13, generator=g), torch.randn(2, 3, 2, generator=g)]
    n = sum(t.numel() for t in grads)  # 60
    for ratio in (0.1, 0.25, 0.5, 0.93, 1.0):
        masks = saliency_mask(grads, ratio)
        kept = torch.cat([m.flatten() for m in masks])
        scores = torch.cat([t.abs().flatten() for t in grads])
        assert int(kept.sum()) == round(ratio * n)
        assert set(kept.unique().tolist()) <= {0.0, 1.0}
        if ratio < 1:
            assert scores[kept == 1].min() > scores[kept == 0].max()  # exactly the largest |g|


def _linear_problem():
    """Six 2x2 images of K classes and a linear model, for gradients derived by hand."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (12, 1, 2, 2), generator=g, dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    data = ImageData(x, y, x[:3], y[:3], ["a", "b", "c"], (0.5,), (0.25,))
    forget = (y == 0).nonzero().squeeze(1)
    retain = (y != 0).nonzero().squeeze(1)
    split = ForgetSplit(forget, retain, torch.tensor([0]), torch.tensor([1, 2]), "class a", [0])
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, K))
    return data, split, model


def _ce_grad_by_hand(model: nn.Sequential, data: ImageData, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d/d(W, b) of the batch-mean CE of a linear model: ((softmax - onehot)^T X / n, mean(softmax - onehot))."""
    x = ((data.x_train[rows].float() / 255 - 0.5) / 0.25).flatten(1)
    w, b = model[1].weight.detach(), model[1].bias.detach()
    z = x @ w.T + b
    p = torch.exp(z - z.max(1, keepdim=True).values)
    p = p / p.sum(1, keepdim=True)
    delta = p - torch.eye(K)[data.y_train[rows]]
    return delta.T @ x / len(rows), delta.mean(0)


def test_salun_saliency_is_the_sum_over_forget_batches_of_the_ce_gradient():
    data, split, model = _linear_problem()
    ctx = UnlearnContext(data, split, CPU, seed=0)
    grads = forget_gradients(model, ctx, list(model.parameters()), 3)  # D_f: 4 rows -> batches of 3 and 1
    gw1, gb1 = _ce_grad_by_hand(model, data, split.forget_train[:3])
    gw2, gb2 = _ce_grad_by_hand(model, data, split.forget_train[3:])
    assert torch.allclose(grads[0], gw1 + gw2, atol=1e-6) and torch.allclose(grads[1], gb1 + gb2, atol=1e-6)


def test_salun_saliency_pass_uses_the_training_augmentation_when_augment_is_true():
    data, split, model = tiny_problem(fit_steps=30)
    ctx = UnlearnContext(data, split, CPU, seed=0, augment=Augment(crop_padding=1))
    params = list(model.parameters())
    plain = forget_gradients(model, ctx, params, 8)
    augmented = forget_gradients(model, ctx, params, 8, augment=True)
    assert any(not torch.allclose(a, b) for a, b in zip(plain, augmented))
    model.eval()
    by_hand = [torch.zeros_like(p) for p in params]
    for x, y in ctx.batches(split.forget_train, 8, shuffle=False, augment=True):
        for acc, g in zip(by_hand, torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)):
            acc += g
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(augmented, by_hand))


def test_salun_default_keeps_every_weight_outside_the_mask_bit_identical_with_decay_and_momentum():
    data, split, model = tiny_problem(fit_steps=30)
    ctx = UnlearnContext(data, split, CPU, seed=0, augment=Augment(crop_padding=1))
    original = copy.deepcopy(model)
    params = list(original.parameters())
    # Defaults (per_batch, sequential, augment on) with momentum 0.9 and weight decay 5e-4.
    method = method_from_yaml(SalUn, "salun", mask_ratio=0.3, lr=0.05, epochs=3, batch_size=8)
    assert (method.settings.momentum, method.settings.weight_decay) == (0.9, 5e-4)
    grads = forget_gradients(original, ctx, params, 8, augment=True)
    masks = saliency_mask(grads, 0.3)
    report = method.unlearn(model, ctx)
    total = sum(p.numel() for p in params)
    assert report.certificate["mask_kept_fraction"] == pytest.approx(round(0.3 * total) / total)
    moved = 0
    for new, old, mask in zip(model.parameters(), params, masks):
        outside = mask == 0
        assert torch.equal(new.detach()[outside], old.detach()[outside])
        moved += int((new.detach()[~outside] != old.detach()[~outside]).sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in masks)


# --- GA ----------------------------------------------------------------------------------------


def test_grad_ascent_one_sgd_step_moves_the_weights_by_plus_lr_times_the_ce_gradient():
    data, split, model = _linear_problem()
    w0, b0 = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    gw, gb = _ce_grad_by_hand(model, data, split.forget_train)
    ga = method_from_yaml(GradAscent, "grad_ascent", lr=0.1, momentum=0.0, weight_decay=0.0, augment=False, epochs=1, batch_size=64)
    report = ga.unlearn(model, UnlearnContext(data, split, CPU, seed=0))
    assert report.certificate["steps"] == 1
    assert torch.allclose(model[1].weight.detach(), w0 + 0.1 * gw, atol=1e-6)  # ascent: +lr * dCE/dtheta
    assert torch.allclose(model[1].bias.detach(), b0 + 0.1 * gb, atol=1e-6)


def test_grad_ascent_default_updates_batchnorm_statistics_and_augments_the_forget_set():
    ga = method_from_yaml(GradAscent, "grad_ascent", lr=1e-3)
    assert (ga.settings.bn, ga.settings.augment, ga.settings.weight_decay) == ("train", True, 5e-4)
    data, split, model = tiny_problem(fit_steps=30)
    ctx = UnlearnContext(data, split, CPU, seed=0, augment=Augment(crop_padding=1))
    running_mean = model[1].running_mean.clone()
    ga.unlearn(model, ctx)
    assert not torch.equal(model[1].running_mean, running_mean)  # BatchNorm in train mode on D_f
    results = []
    for augment in (True, False):
        _, _, fresh = tiny_problem(fit_steps=30)
        method_from_yaml(GradAscent, "grad_ascent", lr=1e-3, augment=augment).unlearn(fresh, ctx)
        results.append(torch.cat([p.detach().flatten() for p in fresh.parameters()]))
    assert torch.equal(results[0], torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.equal(results[0], results[1])  # augment=true crops D_f


def test_grad_ascent_earlier_defaults_freeze_batchnorm_statistics():
    data, split, model = tiny_problem(fit_steps=30)
    running_mean = model[1].running_mean.clone()
    method_from_yaml(GradAscent, "grad_ascent", lr=1e-3, augment=False, bn="eval", weight_decay=0.0).unlearn(
        model, UnlearnContext(data, split, CPU, seed=0)
    )
    assert torch.equal(model[1].running_mean, running_mean)


# --- l1-sparse ---------------------------------------------------------------------------------


def test_l1_alpha_schedules_by_hand():
    alpha, epochs, per_epoch = 0.4, 4, 3
    total = epochs * per_epoch
    official = [scheduled_alpha("per_epoch", alpha, t, total, epochs) for t in range(total)]
    assert official == pytest.approx([0.4] * 3 + [0.3] * 3 + [0.2] * 3 + [0.1] * 3)  # alpha * (1, .75, .5, .25)
    assert [epoch_decay(1.0, e, 10) for e in range(10)] == pytest.approx([1 - e / 10 for e in range(10)])  # never 0
    earlier = [scheduled_alpha("per_step", alpha, t, total, epochs) for t in range(total)]
    assert earlier == pytest.approx([0.4 * (1 - t / 12) for t in range(12)])
    assert earlier == [linear_decay(alpha, t, total) for t in range(total)]


@pytest.mark.parametrize(
    "schedule, expected",
    [("per_epoch", [1.0] * 3 + [0.75] * 3 + [0.5] * 3 + [0.25] * 3), ("per_step", [1 - t / 12 for t in range(12)])],
)
def test_l1_sparse_uses_the_scheduled_alpha_at_every_step(monkeypatch, schedule, expected):
    seen = []
    monkeypatch.setattr(l1, "add_l1_grad_", lambda params, alpha: seen.append(alpha))
    data, split, model = tiny_problem()  # 40 retained rows: 3 batches of 16 per epoch
    method = method_from_yaml(L1Sparse, "l1_sparse", alpha=0.2, epochs=4, batch_size=16, augment=False, alpha_schedule=schedule)
    report = method.unlearn(model, UnlearnContext(data, split, CPU, seed=0))
    assert report.certificate["steps"] == 12
    assert seen == pytest.approx([0.2 * e for e in expected])


def test_l1_sparse_adds_alpha_e_times_sign_theta_to_the_gradient(monkeypatch):
    real, checked = l1.add_l1_grad_, []

    def checking(params, alpha):
        before = [p.grad.clone() for p in params]
        real(params, alpha)
        checked.append(alpha)
        for p, g in zip(params, before):
            assert torch.allclose(p.grad, g + alpha * torch.sign(p.detach()), rtol=1e-6, atol=1e-9)

    monkeypatch.setattr(l1, "add_l1_grad_", checking)
    data, split, model = tiny_problem()
    method_from_yaml(L1Sparse, "l1_sparse", alpha=0.01, epochs=2, batch_size=16, augment=False).unlearn(
        model, UnlearnContext(data, split, CPU, seed=0)
    )
    assert checked == pytest.approx([0.01] * 3 + [0.005] * 3)


# --- Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, name, key, value, fix",
    [
        (RandomLabel, "random_label", "relabel", "wrong", "method.relabel=per_batch"),
        (RandomLabel, "random_label", "relabel", 3, "method.relabel=per_batch"),
        (RandomLabel, "random_label", "passes", "interleaved", "method.passes=sequential"),
        (SalUn, "salun", "relabel", "per_epoch", "method.relabel=per_batch"),
        (SalUn, "salun", "passes", None, "method.passes=sequential"),
        (L1Sparse, "l1_sparse", "alpha_schedule", "linear", "method.alpha_schedule=per_epoch"),
        (GradAscent, "grad_ascent", "augment", "yes", "method.augment=true"),
    ],
)
def test_a_bad_new_option_is_refused_in_one_sentence_naming_the_key_and_the_fix(cls, name, key, value, fix):
    with pytest.raises(FamrError) as err:
        method_from_yaml(cls, name, **{key: value})
    message = str(err.value)
    assert f"method.{key}" in message and fix in message
    assert message.endswith(".") and ". " not in message  # one sentence


@pytest.mark.parametrize(
    "cls, name, bad, named",
    [
        (RandomLabel, "random_label", {"lr": 0.0, "relabel": "x", "passes": "x"}, "method.lr"),
        (RandomLabel, "random_label", {"relabel": "x", "passes": "x"}, "method.relabel"),
        (SalUn, "salun", {"mask_ratio": 2.0, "relabel": "x"}, "method.mask_ratio"),
        (SalUn, "salun", {"augment": "x", "passes": "x"}, "method.augment"),
        (L1Sparse, "l1_sparse", {"alpha": -1.0, "alpha_schedule": "x"}, "method.alpha must"),
        (GradAscent, "grad_ascent", {"augment": "x", "bn": "x"}, "method.augment"),
    ],
)
def test_the_first_bad_option_in_parse_order_is_the_one_named(cls, name, bad, named):
    with pytest.raises(FamrError, match=named.replace(".", r"\.")):
        method_from_yaml(cls, name, **bad)


def test_random_labels_need_two_classes_for_either_relabel_mode():
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.long)
    data = ImageData(x, y, x, y, ["only"], (0.0,), (1.0,))
    split = ForgetSplit(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([0]), torch.tensor([1]), "class", [0])
    for relabel in ("per_batch", "fixed_wrong"):
        with pytest.raises(FamrError, match="method=salun needs at least two classes"):
            random_label_batches(
                UnlearnContext(data, split, CPU, seed=0), relabel=relabel, passes="sequential", batch_size=2, augment=False, method="salun"
            )
