"""Baselines SalUn (saliency mask), SSD (Fisher dampening) and SCRUB (teacher-student KL) on a tiny problem."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from famr_cli.errors import FamrError
from famr_cli.method import UnlearnContext
from famr_cli.method.salun import SalUn, forget_gradients, saliency_mask
from famr_cli.method.scrub import SCRUB, distill_kl, frozen_teacher, max_step_objective
from famr_cli.method.shared.relabel import random_wrong_labels
from famr_cli.method.ssd import SSD, dampen_, fisher_importance
from famr_cli.train.loop import run_loop
from tiny_problem import tiny_problem

CPU = torch.device("cpu")


def _tiny_problem():
    return tiny_problem(fit_steps=30)


def _ctx(data, split):
    return UnlearnContext(data, split, CPU, seed=0)


SALUN = dict(
    name="salun",
    mask_ratio=0.3,
    optimizer="sgd",
    lr=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    epochs=3,
    batch_size=16,
    augment=False,
    relabel="per_batch",
    passes="sequential",
)
SSD_CFG = {"name": "ssd", "alpha": 1.0, "lambda": 1.0, "fisher_batch_size": 8, "fisher_order": "dataset"}
SCRUB_CFG = dict(
    name="scrub",
    alpha=0.001,
    gamma=0.99,
    temperature=4.0,
    max_steps=2,
    epochs=3,
    optimizer="sgd",
    lr=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    batch_size=16,
    forget_batch_size=8,
    augment=False,
    lr_decay_epochs=[],
    lr_decay_rate=0.1,
)


def _build(cls, base, **overrides):
    return cls(OmegaConf.create({**base, **overrides}))


def _eval_kl(student, teacher, data, split, temperature=4.0):
    x = (data.x_train[split.forget_train].float() / 255 - 0.5) / 0.25
    student.eval()
    with torch.no_grad():
        return float(distill_kl(student(x), teacher(x), temperature))


# --- SalUn -------------------------------------------------------------------------------------


def test_saliency_mask_keeps_the_requested_fraction_of_largest_gradients_even_with_ties():
    grads = [torch.tensor([[0.0, -5.0], [0.0, 1.0]]), torch.tensor([0.0, 0.0, 3.0, -0.5, 0.0, 0.0])]
    masks = saliency_mask(grads, 0.3)  # 10 entries -> 3 kept: |-5|, 3, 1
    assert [m.shape for m in masks] == [g.shape for g in grads]
    assert torch.equal(masks[0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert torch.equal(masks[1], torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    # Seven of ten entries are exact zeros: a >= threshold test would keep them all at ratio 0.5.
    assert int(sum(m.sum() for m in saliency_mask(grads, 0.5))) == 5
    assert int(sum(m.sum() for m in saliency_mask(grads, 1.0))) == 10


def test_random_wrong_labels_change_only_the_forget_rows_never_to_their_own_label():
    y = torch.arange(300) % 4
    rows = torch.arange(0, 300, 3)
    labels = random_wrong_labels(y, rows, 4, seed=7)
    others = torch.ones(300, dtype=torch.bool)
    others[rows] = False
    assert torch.equal(labels[others], y[others])
    assert (labels[rows] != y[rows]).all()
    assert set(labels[rows].tolist()) == {0, 1, 2, 3}
    assert torch.equal(labels, random_wrong_labels(y, rows, 4, seed=7))
    assert not torch.equal(labels, random_wrong_labels(y, rows, 4, seed=8))


def test_salun_moves_only_the_masked_weights_and_reports_the_kept_fraction():
    data, split, model = _tiny_problem()
    original = copy.deepcopy(model)
    expected_mask = saliency_mask(forget_gradients(original, _ctx(data, split), list(original.parameters()), 16), 0.3)
    report = _build(SalUn, SALUN).unlearn(model, _ctx(data, split))

    total = sum(p.numel() for p in original.parameters())
    assert report.certificate["mask_kept_fraction"] == pytest.approx(round(0.3 * total) / total)
    moved_in_mask = 0
    for new, old, mask in zip(model.parameters(), original.parameters(), expected_mask):
        outside = mask == 0
        assert torch.equal(new.detach()[outside], old.detach()[outside])  # bit-identical, weight decay included
        moved_in_mask += int((new.detach()[~outside] != old.detach()[~outside]).sum())
    assert moved_in_mask > 0.5 * sum(int(m.sum()) for m in expected_mask)
    assert len(report.epoch_losses) == SALUN["epochs"]


# --- SSD ---------------------------------------------------------------------------------------


def test_dampen_scales_exactly_the_selected_elements_by_lambda_id_over_if():
    p = nn.Parameter(torch.tensor([2.0, -2.0, 2.0, 2.0, -4.0]))
    i_d = [torch.tensor([1.0, 1.0, 0.0, 2.0, 1.0])]
    i_f = [torch.tensor([20.0, 5.0, 0.0, 40.0, 15.0])]
    dampened, total = dampen_([p], i_d, i_f, alpha=10.0, lam=2.0)
    # Selected: 20 > 10 and 40 > 20 and 15 > 10; beta = min(2*1/20, 1), min(2*2/40, 1), min(2/15, 1).
    assert torch.allclose(p.detach(), torch.tensor([0.2, -2.0, 2.0, 0.2, -4.0 * 2 / 15]))
    assert (dampened, total) == (3, 5)


def test_ssd_only_shrinks_the_selected_elements():
    data, split, model = _tiny_problem()
    original = copy.deepcopy(model)
    ctx = _ctx(data, split)
    params = list(original.parameters())
    i_d = fisher_importance(original, ctx, torch.arange(len(data.y_train)), params, 8)
    i_f = fisher_importance(original, ctx, split.forget_train, params, 8)
    report = _build(SSD, SSD_CFG).unlearn(model, ctx)

    selected_total = 0
    for new, old, d, f in zip(model.parameters(), original.parameters(), i_d, i_f):
        selected = f > SSD_CFG["alpha"] * d
        selected_total += int(selected.sum())
        assert torch.equal(new.detach()[~selected], old.detach()[~selected])
        assert (new.detach().abs() <= old.detach().abs()).all()
        assert (new.detach()[selected] != old.detach()[selected]).any() or not selected.any()
    assert selected_total > 0
    total = sum(p.numel() for p in params)
    assert report.certificate["dampened_fraction"] == pytest.approx(selected_total / total)


def test_ssd_with_a_huge_alpha_changes_nothing():
    data, split, model = _tiny_problem()
    original = copy.deepcopy(model)
    report = _build(SSD, SSD_CFG, alpha=1e30).unlearn(model, _ctx(data, split))
    assert report.certificate["dampened_fraction"] == 0.0
    for new, old in zip(model.parameters(), original.parameters()):
        assert torch.equal(new, old)


# --- SCRUB -------------------------------------------------------------------------------------


def test_distill_kl_matches_its_definition():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    p_t, p_s = (t / 2).softmax(1), (s / 2).softmax(1)
    expected = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * 4
    assert torch.allclose(distill_kl(s, t, 2.0), expected, atol=1e-6)
    assert distill_kl(t, t, 2.0).abs() < 1e-6


def test_scrub_max_step_raises_kl_to_the_teacher_on_the_forget_set():
    data, split, model = _tiny_problem()
    teacher = frozen_teacher(model)
    assert _eval_kl(model, teacher, data, split) < 1e-6
    batches = _ctx(data, split).batches(split.forget_train, 8)
    klds = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        run_loop(model, batches, max_step_objective(teacher, 4.0), optimizer, epochs=1)
        klds.append(_eval_kl(model, teacher, data, split))
    assert klds[0] > 1e-4
    assert klds[2] > klds[0]


def test_scrub_changes_the_model_and_its_max_steps_drive_it_from_the_teacher_on_the_forget_set():
    kl = {}
    for max_steps in (0, 2):
        data, split, model = _tiny_problem()
        teacher = frozen_teacher(model)
        report = _build(SCRUB, SCRUB_CFG, max_steps=max_steps).unlearn(model, _ctx(data, split))
        assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), teacher.parameters()))
        assert len(report.epoch_losses) == SCRUB_CFG["epochs"]
        assert len(report.certificate["forget_kl"]) == max_steps
        kl[max_steps] = _eval_kl(model, teacher, data, split)
    assert kl[2] > 2 * kl[0]


def test_scrub_logs_both_curves():
    data, split, model = _tiny_problem()
    logged = []
    ctx = UnlearnContext(data, split, CPU, seed=0, log_metrics=logged.append)
    _build(SCRUB, SCRUB_CFG).unlearn(model, ctx)
    assert [("unlearn/forget_kl" in m, "unlearn/retain_loss" in m) for m in logged] == [(True, True), (True, True), (False, True)]


# --- Options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, base, key, value",
    [
        (SalUn, SALUN, "mask_ratio", 0.0),
        (SalUn, SALUN, "mask_ratio", 1.5),
        (SalUn, SALUN, "lr", 0.0),
        (SalUn, SALUN, "epochs", 0),
        (SalUn, SALUN, "weight_decay", -1.0),
        (SalUn, SALUN, "batch_size", 0),
        (SalUn, SALUN, "optimizer", "lion"),
        (SSD, SSD_CFG, "alpha", 0.0),
        (SSD, SSD_CFG, "lambda", -1.0),
        (SSD, SSD_CFG, "fisher_batch_size", 0),
        (SCRUB, SCRUB_CFG, "lr", -1e-3),
        (SCRUB, SCRUB_CFG, "epochs", 0),
        (SCRUB, SCRUB_CFG, "max_steps", -1),
        (SCRUB, SCRUB_CFG, "alpha", -0.1),
        (SCRUB, SCRUB_CFG, "gamma", -0.1),
        (SCRUB, SCRUB_CFG, "temperature", 0.0),
        (SCRUB, SCRUB_CFG, "forget_batch_size", 0),
    ],
)
def test_bad_options_raise_one_sentence_naming_the_key(cls, base, key, value):
    with pytest.raises(FamrError) as err:
        _build(cls, base, **{key: value})
    message = str(err.value)
    assert f"method.{key}" in message and message.endswith(".")


def test_default_options_are_accepted():
    _build(SalUn, SALUN)
    _build(SSD, SSD_CFG)
    _build(SCRUB, SCRUB_CFG)
    with pytest.raises(FamrError, match="method.alpha and method.gamma"):
        _build(SCRUB, SCRUB_CFG, alpha=0.0, gamma=0.0)
