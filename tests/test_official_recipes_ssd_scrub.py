"""SSD and SCRUB pinned to the official code's formulas on hand-sized problems.

SSD: if-loops/selective-synaptic-dampening@cdfdc0e (``src/ssd.py``, ``src/forget_full_class_main.py``).
SCRUB: meghdadk/SCRUB@98ffb11 (``train_distill``, ``adjust_learning_rate``, ``large_scale_unlearning.ipynb``).
Every expected number below is worked out from their formulas, not read back from famr's code.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

import famr_cli.method.scrub as scrub_module
from famr_cli.errors import FamrError
from famr_cli.method import UnlearnContext
from famr_cli.method.scrub import SCRUB, epoch_lr
from famr_cli.method.ssd import SSD, dampen_, fisher_importance, importance_rows
from tiny_problem import CPU, assert_one_sentence_naming, linear_problem, method_from_yaml, shipped_method_config, tiny_problem
from tiny_problem import LINEAR_FORGET as FORGET
from tiny_problem import LINEAR_RETAIN as RETAIN
from tiny_problem import LINEAR_X as X
from tiny_problem import LINEAR_Y as Y

# --- Shipped defaults are the official recipes --------------------------------------------------


def test_shipped_ssd_defaults_are_the_full_class_recipe():
    s = method_from_yaml(SSD, "ssd").settings
    assert (s.alpha, s.lam, s.fisher_batch_size, s.fisher_order) == (10.0, 1.0, 64, "class_sorted")


def test_shipped_scrub_defaults_are_the_cifar10_class_recipe():
    s = method_from_yaml(SCRUB, "scrub").settings
    assert (s.optimizer, s.lr, s.momentum, s.weight_decay) == ("sgd", 5e-4, 0.9, 5e-4)
    assert (s.epochs, s.max_steps, s.forget_batch_size, s.batch_size, s.augment) == (3, 2, 512, 256, False)
    assert (s.gamma, s.alpha, s.temperature) == (0.99, 0.001, 4.0)
    assert (s.lr_decay_epochs, s.lr_decay_rate) == ((3, 5, 9), 0.1)


# --- SSD: selection and dampening ---------------------------------------------------------------


def test_ssd_dampening_at_the_official_alpha_10_lambda_1():
    weight = nn.Parameter(torch.tensor([[1.0, 2.0], [-3.0, 4.0]]))
    bias = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    i_d = [torch.tensor([[0.1, 0.5], [0.0, 1.0]]), torch.tensor([0.02, 1.0, 0.3])]
    i_f = [torch.tensor([[2.0, 5.0], [0.0, 10.5]]), torch.tensor([0.4, 9.0, 3.1])]
    dampened, total = dampen_([weight, bias], i_d, i_f, alpha=10.0, lam=1.0)
    # weight: 2 > 1 selected, beta 0.1/2 = 0.05; 5 > 5 is not (strict); 0 > 0 is not; 10.5 > 10, beta 1/10.5.
    # bias: 0.4 > 0.2, beta 0.02/0.4 = 0.05; 9 > 10 is not; 3.1 > 3, beta 0.3/3.1.
    assert torch.allclose(weight.detach(), torch.tensor([[0.05, 2.0], [-3.0, 4.0 / 10.5]]))
    assert torch.allclose(bias.detach(), torch.tensor([0.025, -1.0, 2.0 * 0.3 / 3.1]))
    assert (dampened, total) == (4, 7)


def test_ssd_dampening_caps_beta_at_one_and_zeroes_weights_unused_by_d():
    p = nn.Parameter(torch.tensor([3.0, 3.0, 3.0, 3.0]))
    # alpha 2, lambda 5: selected where I_f > 2 I_D; beta = min(5 I_D / I_f, 1).
    i_d = [torch.tensor([0.1, 0.1, 0.0, 1.0])]
    i_f = [torch.tensor([0.3, 1.0, 0.2, 1.5])]
    dampened, _ = dampen_([p], i_d, i_f, alpha=2.0, lam=5.0)
    # 0.3 > 0.2: 5*0.1/0.3 = 1.67, capped at 1; 1.0 > 0.2: beta 0.5; 0.2 > 0: beta 0; 1.5 > 2 is not.
    assert torch.equal(p.detach(), torch.tensor([3.0, 1.5, 0.0, 3.0]))
    assert dampened == 3


def test_ssd_alpha_below_lambda_leaves_the_same_model_as_alpha_equal_to_lambda():
    # Why famr-tune draws lambda at most alpha: the weights selected between alpha and lambda get
    # beta = min(lambda I_D / I_f, 1) = 1, so (alpha, lambda) = (0.5, 2) dampens exactly what (2, 2) does.
    i_d = [torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])]
    i_f = [torch.tensor([0.4, 0.9, 1.5, 4.0, 0.1])]
    low, equal = nn.Parameter(torch.full((5,), 2.0)), nn.Parameter(torch.full((5,), 2.0))
    selected_low, _ = dampen_([low], i_d, i_f, alpha=0.5, lam=2.0)
    selected_equal, _ = dampen_([equal], i_d, i_f, alpha=2.0, lam=2.0)
    # 0.4 is not selected by either; 0.9 and 1.5 are selected at alpha 0.5 but beta = 2/0.9, 2/1.5 cap at 1;
    # 4.0 > 2 gets beta 2/4 under both; I_D = 0 with I_f 0.1 > 0 is selected by both and zeroed.
    assert torch.equal(low.detach(), torch.tensor([2.0, 2.0, 2.0, 1.0, 0.0]))
    assert torch.equal(low.detach(), equal.detach())
    assert (selected_low, selected_equal) == (4, 2)


# --- SSD: importance ----------------------------------------------------------------------------

# On the eight-sample linear problem (tiny_problem.LINEAR_X): class 0 (rows 1, 4, 7) is forgotten.
# D_r class by class (class 1: rows 0, 3, 6; class 2: rows 2, 5), then D_f: the official full_train_dl order.
CLASS_SORTED = [0, 3, 6, 2, 5, 1, 4, 7]


def _hand_importance(model: nn.Module, batches: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear softmax model, by its closed-form gradient: d mean CE / dW = mean_i (p_i - e_{y_i}) x_i^T, d/db = mean_i (p_i - e_{y_i});
    I = (sum over batches of the squared batch gradient) / number of batches."""
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    i_w, i_b = torch.zeros_like(w), torch.zeros_like(b)
    for rows in batches:
        x, y = X[rows].double(), Y[rows]
        residual = torch.softmax(x @ w.T + b, dim=1) - torch.eye(3, dtype=torch.float64)[y]
        i_w += (residual.T @ x / len(rows)) ** 2
        i_b += residual.mean(0) ** 2
    return i_w / len(batches), i_b / len(batches)


def test_class_sorted_rows_are_retain_class_by_class_then_forget():
    assert importance_rows(Y, RETAIN, FORGET, "class_sorted").tolist() == CLASS_SORTED
    assert importance_rows(Y, RETAIN, FORGET, "dataset").tolist() == list(range(8))


def test_ssd_importance_is_the_mean_over_batches_of_squared_batch_mean_gradients():
    data, split, model, ctx = linear_problem()
    params = list(model.parameters())
    sorted_rows = importance_rows(data.y_train, split.retain_train, split.forget_train, "class_sorted")
    i_d_sorted = fisher_importance(model, ctx, sorted_rows, params, 2)
    i_d_dataset = fisher_importance(model, ctx, torch.arange(8), params, 2)
    i_f = fisher_importance(model, ctx, split.forget_train, params, 2)
    # Batches of 2, unshuffled, straddling the class boundaries (6 | 2 and 5 | 1).
    hand_sorted = _hand_importance(model, [[0, 3], [6, 2], [5, 1], [4, 7]])
    hand_dataset = _hand_importance(model, [[0, 1], [2, 3], [4, 5], [6, 7]])
    hand_f = _hand_importance(model, [[1, 4], [7]])
    for got, want in [(i_d_sorted, hand_sorted), (i_d_dataset, hand_dataset), (i_f, hand_f)]:
        assert all(torch.allclose(g.double(), h, rtol=1e-5, atol=1e-8) for g, h in zip(got, want))
    # The class-sorted batches are other batches, so another I_D.
    assert not torch.allclose(i_d_sorted[0], i_d_dataset[0], rtol=1e-3)


def test_ssd_unlearn_dampens_with_the_class_sorted_importances_by_default():
    data, split, model, ctx = linear_problem()
    original = copy.deepcopy(model)
    alpha, lam = 0.5, 0.8
    SSD(OmegaConf.create({**shipped_method_config("ssd"), "alpha": alpha, "lambda": lam, "fisher_batch_size": 2})).unlearn(model, ctx)
    i_d = _hand_importance(original, [[0, 3], [6, 2], [5, 1], [4, 7]])
    i_f = _hand_importance(original, [[1, 4], [7]])
    changed = 0
    for new, old, d, f in zip(model[1].parameters(), original[1].parameters(), i_d, i_f):
        selected = f > alpha * d
        factor = torch.where(selected, (lam * d / f).clamp(max=1.0), torch.ones_like(d))
        assert torch.allclose(new.detach().double(), old.detach().double() * factor, rtol=1e-5, atol=1e-8)
        changed += int(selected.sum())
    assert 0 < changed < 12


def test_class_sorted_importance_of_d_bounds_i_f_when_d_r_fills_whole_batches():
    """D_f closes the class-sorted pass; with |D_r| a multiple of the batch its batches are I_f's,
    so I_D >= (batches of D_f / batches of D) * I_f element by element."""
    data, split, model = tiny_problem(fit_steps=30)
    ctx = UnlearnContext(data, split, CPU, seed=0)
    params = list(model.parameters())
    assert len(split.retain_train) % 8 == 0  # 40 retained rows, 20 forgotten: 8 batches of D, 3 of D_f
    rows = importance_rows(data.y_train, split.retain_train, split.forget_train, "class_sorted")
    i_d = fisher_importance(model, ctx, rows, params, 8)
    i_f = fisher_importance(model, ctx, split.forget_train, params, 8)
    for d, f in zip(i_d, i_f):
        assert (f * 3 / 8 <= d * (1 + 1e-5) + 1e-12).all()


def test_ssd_importance_runs_in_eval_mode_and_leaves_batchnorm_statistics_alone():
    data, split, model = tiny_problem(fit_steps=30)
    model.train()
    stats = copy.deepcopy(model[1].state_dict())
    method_from_yaml(SSD, "ssd", alpha=1.0, fisher_batch_size=8).unlearn(model, UnlearnContext(data, split, CPU, seed=0))
    assert model.training  # the caller's mode is restored
    assert torch.equal(model[1].running_mean, stats["running_mean"]) and torch.equal(model[1].running_var, stats["running_var"])
    assert int(model[1].num_batches_tracked) == int(stats["num_batches_tracked"])


# --- SCRUB: schedule of passes and lr -----------------------------------------------------------


def test_epoch_lr_is_the_official_step_decay_on_1_based_epochs():
    assert [epoch_lr(1.0, e, (3, 5, 9), 0.1) for e in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert [epoch_lr(1.0, e, (3, 5, 9), 0.1) for e in (4, 6, 10)] == pytest.approx([0.1, 0.01, 0.001])
    assert epoch_lr(1.0, 6, (5, 5, 9), 0.1) == pytest.approx(0.01)  # a repeated entry decays twice
    assert epoch_lr(0.3, 7, (), 0.1) == 0.3


SMALL = dict(lr=0.05, batch_size=16, forget_batch_size=8)


def _record_scrub(monkeypatch, **overrides):
    """Run SCRUB on the tiny problem and return [(pass, lr, student in train mode, teacher in train mode)] per pass."""
    data, split, model = tiny_problem(fit_steps=30)
    passes, teachers, real_run_loop = [], [], scrub_module.run_loop
    real_teacher = scrub_module.frozen_teacher

    def teacher_spy(m):
        teachers.append(real_teacher(m))
        return teachers[-1]

    def run_loop_spy(student, batches, objective, optimizer, **kwargs):
        modes = []

        def watched(m, x, y):
            modes.append((m.training, teachers[-1].training))
            return objective(m, x, y)

        result = real_run_loop(student, batches, watched, optimizer, **kwargs)
        kind = "max" if "max-step" in kwargs["desc"] else "min"
        passes.append((kind, optimizer.param_groups[0]["lr"], *modes[0]))
        assert len(set(modes)) == 1
        return result

    monkeypatch.setattr(scrub_module, "frozen_teacher", teacher_spy)
    monkeypatch.setattr(scrub_module, "run_loop", run_loop_spy)
    logged = []
    ctx = UnlearnContext(data, split, CPU, seed=0, log_metrics=logged.append)
    method_from_yaml(SCRUB, "scrub", **{**SMALL, **overrides}).unlearn(model, ctx)
    return passes, logged


def test_scrub_runs_max_steps_in_the_first_max_steps_epochs_then_min_only(monkeypatch):
    passes, logged = _record_scrub(monkeypatch, epochs=3, max_steps=2)
    assert [p[0] for p in passes] == ["max", "min", "max", "min", "min"]
    assert [m["unlearn/epoch"] for m in logged] == [1, 2, 3]
    # Student in train mode, teacher in eval mode, on both kinds of pass.
    assert all(p[2:] == (True, False) for p in passes)
    passes, _ = _record_scrub(monkeypatch, epochs=3, max_steps=0)
    assert [p[0] for p in passes] == ["min", "min", "min"]


def test_scrub_lr_decays_after_each_decay_epoch(monkeypatch):
    passes, logged = _record_scrub(monkeypatch, epochs=3, max_steps=2, lr_decay_epochs=[1], lr_decay_rate=0.1)
    # Epoch 1: 0.05; epochs 2 and 3 (e > 1): 0.005; both passes of an epoch share its lr.
    assert [p[1] for p in passes] == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.005])
    assert [m["unlearn/lr"] for m in logged] == pytest.approx([0.05, 0.005, 0.005])
    passes, _ = _record_scrub(monkeypatch, epochs=3, max_steps=2)  # the shipped [3, 5, 9]: nothing decays in 3 epochs
    assert [p[1] for p in passes] == [0.05] * 5


def test_scrub_student_batchnorm_statistics_update_on_the_min_pass(monkeypatch):
    data, split, model = tiny_problem(fit_steps=30)
    before = model[1].running_mean.clone()
    teachers, real_teacher = [], scrub_module.frozen_teacher
    monkeypatch.setattr(scrub_module, "frozen_teacher", lambda m: teachers.append(real_teacher(m)) or teachers[-1])
    method_from_yaml(SCRUB, "scrub", **SMALL, epochs=1, max_steps=0).unlearn(model, UnlearnContext(data, split, CPU, seed=0))
    assert not torch.allclose(model[1].running_mean, before)
    assert torch.equal(teachers[0][1].running_mean, before)  # the teacher's stay


# --- Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, name, key, value",
    [
        (SCRUB, "scrub", "max_steps", 4),  # epochs 3
        (SCRUB, "scrub", "lr_decay_epochs", "3,5,9"),
        (SCRUB, "scrub", "lr_decay_epochs", None),
        (SCRUB, "scrub", "lr_decay_epochs", [0, 5]),
        (SCRUB, "scrub", "lr_decay_epochs", [3, 4.5]),
        (SCRUB, "scrub", "lr_decay_epochs", [True]),
        (SCRUB, "scrub", "lr_decay_rate", 0.0),
        (SCRUB, "scrub", "lr_decay_rate", 1.5),
        (SCRUB, "scrub", "lr_decay_rate", "fast"),
        (SSD, "ssd", "fisher_order", "random"),
        (SSD, "ssd", "fisher_order", None),
    ],
)
def test_bad_options_are_one_sentence_naming_the_key(cls, name, key, value):
    with pytest.raises(FamrError) as err:
        method_from_yaml(cls, name, **{key: value})
    assert_one_sentence_naming(err, f"method.{key}")


def test_max_steps_equal_to_epochs_and_constant_lr_options_are_accepted():
    assert method_from_yaml(SCRUB, "scrub", epochs=2, max_steps=2, lr_decay_epochs=[], lr_decay_rate=1).settings.lr_decay_epochs == ()
    assert method_from_yaml(SSD, "ssd", fisher_order="dataset").settings.fisher_order == "dataset"
