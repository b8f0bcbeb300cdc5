"""The baselines finetune, grad_ascent, random_label and l1_sparse on a tiny learnable problem."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from famr_cli.dataset import ImageData
from famr_cli.errors import DivergedError, FamrError
from famr_cli.forget import ForgetSplit
from famr_cli.method import METHODS, UnlearnContext
from famr_cli.method.finetune import Finetune
from famr_cli.method.grad_ascent import GradAscent
from famr_cli.method.l1_sparse import L1Sparse, add_l1_grad_, l1_norm, linear_decay
from famr_cli.method.random_label import RandomLabel
from famr_cli.method.shared.relabel import random_wrong_labels

NUM_CLASSES = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_problem(seed: int = 0):
    """Three classes told apart by which third of a 6x6 image is bright, plus noise; class 0 is forgotten.

    The model starts untrained, so training on D_r has something to learn.
    """
    g = torch.Generator().manual_seed(seed)
    n = 90
    y = torch.arange(n) % NUM_CLASSES
    x = torch.randint(0, 100, (n, 1, 6, 6), generator=g)
    for k in range(NUM_CLASSES):
        x[y == k, :, 2 * k : 2 * k + 2, :] += 150
    x = x.to(torch.uint8)
    data = ImageData(x, y, x[:9], y[:9], ["a", "b", "c"], (0.3,), (0.3,))
    forget = (y == 0).nonzero().squeeze(1)
    retain = (y != 0).nonzero().squeeze(1)
    split = ForgetSplit(forget, retain, torch.tensor([0, 3, 6]), torch.tensor([1, 2, 4, 5, 7, 8]), "class a", [0])
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, NUM_CLASSES))
    return data, split, model


def _ctx(data, split, seed: int = 0) -> UnlearnContext:
    return UnlearnContext(data, split, torch.device("cpu"), seed=seed)


COMMON = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="constant", epochs=3, batch_size=16)
CONFIGS = {
    "finetune": (Finetune, dict(name="finetune", augment=False, **COMMON)),
    "grad_ascent": (GradAscent, dict(name="grad_ascent", bn="eval", augment=False, **{**COMMON, "lr": 1e-3, "weight_decay": 0.0})),
    "random_label": (RandomLabel, dict(name="random_label", augment=False, relabel="per_batch", passes="sequential", **COMMON)),
    "l1_sparse": (L1Sparse, dict(name="l1_sparse", alpha=5e-4, augment=False, alpha_schedule="per_epoch", **COMMON)),
}


def _method(name: str, **overrides):
    cls, base = CONFIGS[name]
    return cls(OmegaConf.create({**base, **overrides}))


def _accuracy(model: nn.Module, data: ImageData, rows: torch.Tensor) -> float:
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    model.eval()
    with torch.no_grad():
        logits = model((data.x_train[rows].float() / 255 - mean) / std)
    return float((logits.argmax(1) == data.y_train[rows]).float().mean())


def test_all_four_methods_are_registered_under_their_config_names():
    for name, (cls, _) in CONFIGS.items():
        assert METHODS.get(name) is cls


@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_method_changes_the_model_and_reports_its_steps(name):
    data, split, model = _tiny_problem()
    before = [p.detach().clone() for p in model.parameters()]
    logged = []
    ctx = UnlearnContext(data, split, torch.device("cpu"), seed=0, log_metrics=logged.append)
    report = _method(name).unlearn(model, ctx)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert len(report.epoch_losses) == 3
    assert report.certificate["steps"] > 0
    assert [m["unlearn/epoch"] for m in logged] == [1, 2, 3]
    assert all("unlearn/loss" in m for m in logged)


def test_finetune_raises_retained_accuracy_from_an_untrained_model():
    data, split, model = _tiny_problem()
    before = _accuracy(model, data, split.retain_train)
    _method("finetune", epochs=10).unlearn(model, _ctx(data, split))
    after = _accuracy(model, data, split.retain_train)
    assert after >= 0.9 > before


def test_finetune_is_reproducible_for_a_seed_and_varies_with_it():
    runs = []
    for seed in (0, 0, 1):
        data, split, model = _tiny_problem()
        _method("finetune").unlearn(model, _ctx(data, split, seed=seed))
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_grad_ascent_uses_only_the_forget_set():
    """Poisoning every retained image and label must not change GA's result: it never reads D_r."""
    data, split, model = _tiny_problem()
    clone = [p.detach().clone() for p in model.parameters()]
    _method("grad_ascent").unlearn(model, _ctx(data, split))
    data.x_train[split.retain_train] = 255
    data.y_train[split.retain_train] = 0
    _, _, model2 = _tiny_problem()
    for p, c in zip(model2.parameters(), clone):
        p.data.copy_(c)
    _method("grad_ascent").unlearn(model2, _ctx(data, split))
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def _all_as_retain(split: ForgetSplit) -> ForgetSplit:
    everything = torch.cat([split.forget_train, split.retain_train])
    return ForgetSplit(torch.tensor([], dtype=torch.long), everything, split.forget_test, split.retain_test, "none", [])


def _trained_problem():
    """The tiny problem with a model first fitted to every class (finetune on a split that forgets nothing)."""
    data, split, model = _tiny_problem()
    _method("finetune", lr=0.01, epochs=5).unlearn(model, _ctx(data, _all_as_retain(split)))
    assert _accuracy(model, data, split.forget_train) == 1.0 and _accuracy(model, data, split.retain_train) == 1.0
    return data, split, model


def test_grad_ascent_raises_the_forget_loss_and_erases_the_forget_set():
    data, split, model = _trained_problem()
    report = _method("grad_ascent", lr=0.3, epochs=5).unlearn(model, _ctx(data, split))
    losses = report.epoch_losses
    assert all(a > b for a, b in zip(losses, losses[1:]))  # -CE falls every epoch: CE on D_f rises
    assert report.certificate["last_epoch_forget_ce"] == pytest.approx(-losses[-1])
    assert _accuracy(model, data, split.forget_train) == 0.0
    assert _accuracy(model, data, split.retain_train) > 0.9


def test_grad_ascent_too_large_a_step_is_reported_as_divergence():
    data, split, model = _trained_problem()
    with pytest.raises(DivergedError, match=r"grad_ascent diverged.*method\.lr"):
        _method("grad_ascent", lr=1.0, epochs=20).unlearn(model, _ctx(data, split))


def test_grad_ascent_bn_eval_freezes_running_statistics_and_bn_train_updates_them():
    data, split, model = _tiny_problem()
    before = model[1].running_mean.clone()
    _method("grad_ascent", bn="eval").unlearn(model, _ctx(data, split))
    assert torch.equal(model[1].running_mean, before)
    _method("grad_ascent", bn="train").unlearn(model, _ctx(data, split))
    assert not torch.equal(model[1].running_mean, before)


def test_random_labels_are_wrong_in_range_and_leave_retained_rows_untouched():
    y = torch.arange(6000) % 10
    forget = torch.arange(0, 3000)
    labels = random_wrong_labels(y, forget, 10, seed=3)
    retain = torch.arange(3000, 6000)
    assert torch.equal(labels[retain], y[retain])
    assert (labels[forget] != y[forget]).all()
    assert labels[forget].min() >= 0 and labels[forget].max() <= 9
    assert labels.dtype == y.dtype and labels.shape == y.shape
    # every wrong class is drawn: the offset covers all K-1 others, not a fixed shift
    for k in range(10):
        drawn = set(labels[forget][y[forget] == k].tolist())
        assert drawn == set(range(10)) - {k}
    assert torch.equal(y, torch.arange(6000) % 10)  # the caller's labels are not modified


def test_random_labels_are_reproducible_for_a_seed_and_vary_with_it():
    y = torch.arange(200) % 5
    forget = torch.arange(100)
    assert torch.equal(random_wrong_labels(y, forget, 5, seed=0), random_wrong_labels(y, forget, 5, seed=0))
    assert not torch.equal(random_wrong_labels(y, forget, 5, seed=0), random_wrong_labels(y, forget, 5, seed=1))


def test_random_label_needs_two_classes():
    with pytest.raises(FamrError, match="at least two classes"):
        random_wrong_labels(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1]), 1, seed=0)


def test_random_label_trains_on_forget_and_retain_rows():
    """RL reads both sets: poisoning D_r changes its result (unlike GA), and D_f accuracy drops."""
    data, split, model = _trained_problem()
    trained = [p.detach().clone() for p in model.parameters()]
    report = _method("random_label", epochs=10).unlearn(model, _ctx(data, split))
    assert report.certificate["relabelled_samples"] == len(split.forget_train)
    assert _accuracy(model, data, split.forget_train) < 0.5
    assert _accuracy(model, data, split.retain_train) > 0.9
    data.x_train[split.retain_train] = 255
    _, _, model2 = _tiny_problem()
    for p, c in zip(model2.parameters(), trained):
        p.data.copy_(c)
    _method("random_label", epochs=10).unlearn(model2, _ctx(data, split))
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_linear_decay_falls_in_equal_steps_from_alpha_to_zero():
    alphas = [linear_decay(0.4, t, 8) for t in range(9)]
    assert alphas[0] == pytest.approx(0.4)
    assert alphas[-1] == pytest.approx(0.0)
    diffs = [a - b for a, b in zip(alphas, alphas[1:])]
    assert diffs == pytest.approx([0.05] * 8)
    assert linear_decay(0.4, 20, 8) == 0.0  # never negative past the end


def test_l1_sparse_applies_the_schedule_step_by_step(monkeypatch):
    import famr_cli.method.l1_sparse as l1

    seen = []
    monkeypatch.setattr(l1, "add_l1_grad_", lambda params, alpha: seen.append(alpha))
    data, split, model = _tiny_problem()
    report = _method("l1_sparse", alpha=0.2, epochs=4, alpha_schedule="per_step").unlearn(model, _ctx(data, split))
    total = report.certificate["steps"]
    assert total == 4 * 4  # 60 retained rows in batches of 16
    assert seen == pytest.approx([0.2 * (1 - t / total) for t in range(total)])


def test_l1_gradient_matches_autograd_of_the_penalty():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(5))]
    (0.3 * sum(p.abs().sum() for p in params)).backward()
    autograd = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    add_l1_grad_(params, 0.3)
    for got, want in zip([p.grad for p in params], autograd):
        assert torch.allclose(got, want)
    assert l1_norm(params) == pytest.approx(float(sum(p.detach().abs().sum() for p in params)))


def test_l1_sparse_ends_with_a_smaller_l1_norm_than_finetune_on_the_same_seed():
    norms = {}
    for name, overrides in (("finetune", {}), ("l1_sparse", {"alpha": 0.0}), ("l1_sparse", {"alpha": 5e-3})):
        data, split, model = _tiny_problem()
        _method(name, **overrides).unlearn(model, _ctx(data, split))
        norms[(name, overrides.get("alpha"))] = l1_norm(list(model.parameters()))
    # alpha = 0 is exactly finetune; alpha > 0 shrinks the weights
    assert norms[("l1_sparse", 0.0)] == pytest.approx(norms[("finetune", None)], rel=1e-6)
    assert norms[("l1_sparse", 5e-3)] < norms[("finetune", None)] - 0.05


def test_l1_sparse_reports_its_norms():
    data, split, model = _tiny_problem()
    report = _method("l1_sparse", alpha=5e-3).unlearn(model, _ctx(data, split))
    assert report.certificate["l1_norm_after"] == pytest.approx(l1_norm(list(model.parameters())))
    assert report.certificate["l1_norm_before"] != report.certificate["l1_norm_after"]


BAD_OPTIONS = [
    ({"lr": 0.0}, "method.lr"),
    ({"lr": -1e-3}, "method.lr"),
    ({"epochs": 0}, "method.epochs"),
    ({"batch_size": 0}, "method.batch_size"),
    ({"optimizer": "lbfgs"}, "method.optimizer"),
    ({"momentum": 1.0}, "method.momentum"),
    ({"weight_decay": -1.0}, "method.weight_decay"),
    ({"schedule": "linear"}, "method.schedule"),
]


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("override, key", BAD_OPTIONS)
def test_bad_options_are_rejected_with_the_key_named(name, override, key):
    with pytest.raises(FamrError, match=key.replace(".", r"\.")) as err:
        _method(name, **override)
    assert str(err.value).endswith(".")


@pytest.mark.parametrize(
    "name, override, key", [("l1_sparse", {"alpha": -1e-4}, "method.alpha"), ("grad_ascent", {"bn": "frozen"}, "method.bn")]
)
def test_method_specific_bad_options_are_rejected(name, override, key):
    with pytest.raises(FamrError, match=key.replace(".", r"\.")) as err:
        _method(name, **override)
    assert str(err.value).endswith(".")


def test_good_defaults_are_accepted():
    for name in CONFIGS:
        _method(name)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_yaml_defaults_build_and_the_command_line_wins(name):
    from conftest import compose_config

    cfg = compose_config([f"method={name}", "forget=sample"])  # no tuned file: the method's own defaults
    method = METHODS.get(name)(cfg.method)  # the shipped defaults pass validation
    assert set(CONFIGS[name][1]) <= set(cfg.method)  # every key the tests exercise is in the YAML
    assert method.settings.epochs >= 1
    assert compose_config([f"method={name}", "method.lr=0.5"]).method.lr == 0.5


def test_augment_option_applies_the_training_recipe_augmentation():
    from famr_cli.augment import Augment

    results = []
    for augment in (False, True, True):
        data, split, model = _tiny_problem()
        ctx = UnlearnContext(data, split, torch.device("cpu"), seed=0, augment=Augment(crop_padding=1))
        _method("finetune", augment=augment).unlearn(model, ctx)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.equal(results[0], results[1])
    assert torch.equal(results[1], results[2])
