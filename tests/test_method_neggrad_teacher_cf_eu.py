"""NegGrad+, Bad Teacher, CF-k and EU-k pinned to their official formulas on hand-sized problems.

NegGrad+: meghdadk/SCRUB@98ffb11 (``train_negrad``, ``MIA_experiments.ipynb``). Bad Teacher:
vikram2000b/bad-teaching-unlearning@f1aa988 (``UnlearnerLoss``, ``blindspot_unlearner``). CF-k / EU-k:
shash42/Evaluating-Inexact-Unlearning@a45fe02 (``resetFinalResnet``, ``_reinit``, ``train_loop``).
Expected numbers come from the formulas (closed-form softmax gradients, torch's own SGDR scheduler),
not from famr's code.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from famr_cli.backbone import build_backbone
from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError
from famr_cli.forget import ForgetSplit
from famr_cli.method import METHODS, UnlearnContext
from famr_cli.method.bad_teacher import BadTeacher, bad_teacher_loss, incompetent_teacher, retain_subset, teacher_targets
from famr_cli.method.cf_k import CFk
from famr_cli.method.eu_k import EUk, reinitialise_
from famr_cli.method.neggrad_plus import NegGradPlus, RetainWithForgetBatches
from famr_cli.method.shared.last_layers import LastLayersSettings, counted_layers, last_layers, last_layers_schedule, sgdr_factor
from tiny_problem import CPU, assert_one_sentence_naming, linear_problem, method_from_yaml, tiny_problem
from tiny_problem import LINEAR_FORGET as FORGET
from tiny_problem import LINEAR_RETAIN as RETAIN
from tiny_problem import LINEAR_X as X
from tiny_problem import LINEAR_Y as Y

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The hand-worked steps run on the eight-sample linear problem (tiny_problem.LINEAR_X): class 0 (rows 1, 4, 7) is
# forgotten, and its float images with mean 0 and std 1 reach the model unchanged.

PLAIN_SGD = dict(optimizer="sgd", momentum=0.0, weight_decay=0.0, schedule="constant", epochs=1, augment=False)


def _softmax_gradient(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d mean CE / d(W, b) of a linear softmax layer, closed form: mean_i (p_i - e_{y_i}) x_i^T and mean_i (p_i - e_{y_i})."""
    residual = torch.softmax(x @ w.T + b, dim=1) - torch.eye(w.shape[0], dtype=w.dtype)[y]
    return residual.T @ x / len(y), residual.mean(0)


def _id_problem(n: int = 15) -> tuple[ImageData, ForgetSplit]:
    """``n`` 1x1x2 images whose first pixel is the row number; 3 classes, class 0 forgotten."""
    y = torch.arange(n) % 3
    x = torch.zeros(n, 1, 1, 2, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    data = ImageData(x, y, x[:3], y[:3], ["a", "b", "c"], (0.0,), (1.0,))
    forget, retain = (y == 0).nonzero().squeeze(1), (y != 0).nonzero().squeeze(1)
    return data, ForgetSplit(forget, retain, torch.tensor([0]), torch.tensor([1, 2]), "class a", [0])


class _Recorder(nn.Module):
    """A linear model that records the rows of every batch it sees in train mode, in call order."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Flatten(), nn.Linear(2, 3))
        self.rows: list[list[int]] = []

    def forward(self, x):
        if self.training:
            self.rows.append(torch.round(x[:, 0, 0, 0] * 255).long().tolist())
        return self.inner(x)


def test_data_read_of_each_method():
    reads = {name: method_from_yaml(METHODS.get(name), name).data_read for name in ("neggrad_plus", "bad_teacher", "cf_k", "eu_k")}
    assert reads == {"neggrad_plus": "forget+retain", "bad_teacher": "forget+retain", "cf_k": "retain", "eu_k": "retain"}


# --- NegGrad+ -----------------------------------------------------------------------------------


def test_shipped_neggrad_plus_defaults_are_the_cifar10_recipe():
    s = method_from_yaml(NegGradPlus, "neggrad_plus").settings
    assert (s.beta, s.optimizer, s.lr, s.momentum, s.weight_decay, s.schedule) == (0.9999, "sgd", 0.01, 0.0, 0.0, "constant")
    assert (s.epochs, s.batch_size, s.forget_batch_size, s.augment, s.bn) == (5, 32, 16, False, "train")


def test_one_neggrad_plus_step_is_theta_minus_lr_times_the_weighted_gradient_difference():
    _, _, model, ctx = linear_problem()
    w, b = (p.detach().double().clone() for p in model[1].parameters())
    beta, lr = 0.7, 0.5
    # All of D_r in one batch and all of D_f in one: exactly one step.
    method_from_yaml(NegGradPlus, "neggrad_plus", **PLAIN_SGD, lr=lr, beta=beta, batch_size=8, forget_batch_size=8).unlearn(model, ctx)
    g_r = _softmax_gradient(w, b, X[RETAIN].double(), Y[RETAIN])
    g_f = _softmax_gradient(w, b, X[FORGET].double(), Y[FORGET])
    want_w = w - lr * (beta * g_r[0] - (1 - beta) * g_f[0])
    want_b = b - lr * (beta * g_r[1] - (1 - beta) * g_f[1])
    assert torch.allclose(model[1].weight.detach().double(), want_w, atol=1e-6)
    assert torch.allclose(model[1].bias.detach().double(), want_b, atol=1e-6)
    # The ascent term counts: beta alone (plain fine-tuning) would land elsewhere.
    assert not torch.allclose(want_w, w - lr * beta * g_r[0], atol=1e-3)


def test_each_retain_batch_is_paired_with_the_next_forget_batch_retain_forward_first():
    data, split = _id_problem()  # 5 forget rows, 10 retained
    forget, retain = set(split.forget_train.tolist()), set(split.retain_train.tolist())
    torch.manual_seed(0)
    model = _Recorder()
    report = method_from_yaml(
        NegGradPlus, "neggrad_plus", **{**PLAIN_SGD, "epochs": 2}, lr=0.01, batch_size=4, forget_batch_size=2
    ).unlearn(model, UnlearnContext(data, split, CPU, seed=1))
    steps_per_epoch = 3  # an epoch is one pass over D_r: ceil(10 / 4)
    assert report.certificate["steps"] == 2 * steps_per_epoch
    calls = model.rows
    assert len(calls) == 2 * 2 * steps_per_epoch  # two forward passes per step
    retain_calls, forget_calls = calls[0::2], calls[1::2]
    assert all(set(rows) <= retain for rows in retain_calls) and all(set(rows) <= forget for rows in forget_calls)
    for epoch in range(2):
        epoch_retain = retain_calls[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]
        assert sorted(r for rows in epoch_retain for r in rows) == sorted(retain)  # every retained row once
        # D_f's batches of 2, 2, 1 in order; each epoch starts a new pass over D_f.
        epoch_forget = forget_calls[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]
        assert [len(rows) for rows in epoch_forget] == [2, 2, 1]
        assert sorted(r for rows in epoch_forget for r in rows) == sorted(forget)


def test_forget_batches_cycle_when_d_r_has_more_batches():
    batches = RetainWithForgetBatches(["r0", "r1", "r2", "r3", "r4"], ["f0", "f1"])
    paired = [[(r, batches.forget_batch) for r in batches] for _ in range(2)]
    want = [("r0", "f0"), ("r1", "f1"), ("r2", "f0"), ("r3", "f1"), ("r4", "f0")]
    assert paired == [want, want] and len(batches) == 5  # the second epoch restarts at f0


@pytest.mark.parametrize(
    "key, value", [("beta", 0), ("beta", 1), ("beta", 1.5), ("beta", "high"), ("forget_batch_size", 0), ("bn", "frozen"), ("lr", 0)]
)
def test_bad_neggrad_plus_options_are_one_sentence_naming_the_key(key, value):
    with pytest.raises(FamrError) as err:
        method_from_yaml(NegGradPlus, "neggrad_plus", **{key: value})
    assert_one_sentence_naming(err, f"method.{key}")


# --- Bad Teacher --------------------------------------------------------------------------------


def test_shipped_bad_teacher_defaults_are_the_official_run():
    s = method_from_yaml(BadTeacher, "bad_teacher").settings
    assert (s.optimizer, s.lr, s.weight_decay, s.epochs, s.batch_size, s.schedule) == ("adam", 1e-4, 0.0, 1, 256, "constant")
    assert (s.temperature, s.retain_fraction, s.augment) == (1.0, 0.3, False)


def test_targets_are_the_competent_teacher_on_retained_rows_and_the_random_one_on_forget_rows():
    t = 2.0
    # At T = 2: softmax([0, ln 3]) = [1/4, 3/4]; softmax([ln 4, 0]) = [4/5, 1/5].
    competent = torch.tensor([[0.0, 2 * math.log(3)], [0.0, 2 * math.log(3)]])
    incompetent = torch.tensor([[2 * math.log(4), 0.0], [2 * math.log(4), 0.0]])
    is_forget = torch.tensor([0, 1])
    targets = teacher_targets(competent, incompetent, is_forget, t)
    assert torch.allclose(targets, torch.tensor([[0.25, 0.75], [0.8, 0.2]]))
    # Student uniform (q = 1/2): KL per row summed over classes, then F.kl_div's default mean over all 2 x 2 elements.
    kl_retained = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl_forgotten = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    loss = bad_teacher_loss(torch.zeros(2, 2), competent, incompetent, is_forget, t)
    assert loss.item() == pytest.approx((kl_retained + kl_forgotten) / 4, rel=1e-6)


@pytest.mark.parametrize("n, fraction", [(10, 0.3), (20, 0.3), (7, 0.5), (9, 1.0), (3, 0.2)])
def test_retain_subset_holds_int_fraction_times_d_r_distinct_retained_rows(n, fraction):
    retain = torch.arange(100, 100 + n)
    subset = retain_subset(retain, fraction, seed=5)
    assert len(subset) == int(fraction * n)  # the official int(0.3 * len(retain_train))
    assert len(set(subset.tolist())) == len(subset) and set(subset.tolist()) <= set(retain.tolist())
    assert torch.equal(subset, retain_subset(retain, fraction, seed=5))


def test_retain_subset_depends_on_the_seed():
    retain = torch.arange(200)
    assert not torch.equal(retain_subset(retain, 0.3, seed=1), retain_subset(retain, 0.3, seed=2))


def test_incompetent_teacher_is_a_fresh_seeded_network_of_the_same_architecture():
    _, _, model = tiny_problem(fit_steps=5)  # conv, BatchNorm (statistics moved by training), linear
    model.train()
    state = torch.get_rng_state()
    teacher = incompetent_teacher(model, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert [type(m) for m in teacher.modules()] == [type(m) for m in model.modules()]
    for (name, new), old in zip(teacher.named_parameters(), model.parameters()):
        assert new.shape == old.shape and not torch.equal(new, old), name
        assert not new.requires_grad
    bn = teacher[1]
    assert torch.equal(bn.weight, torch.ones(4)) and torch.equal(bn.bias, torch.zeros(4))  # reset_parameters()
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.running_var, torch.ones(4))
    assert not teacher.training and model.training
    again, other = incompetent_teacher(model, seed=3), incompetent_teacher(model, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), again.parameters()))
    assert not torch.equal(teacher[0].weight, other[0].weight)


def test_incompetent_vit_teacher_redraws_the_parameters_no_module_resets():
    vit = build_backbone(OmegaConf.load(REPO / "conf" / "backbone" / "vit_mini.yaml"), 3, 1, 8)
    with torch.no_grad():
        vit.pos_embed.fill_(1.0)
        vit.cls_token.fill_(1.0)
    teacher = incompetent_teacher(vit, seed=0)
    # 17 x 64 positions: the sample std sits well within 10 % of 0.02.
    assert teacher.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)
    assert teacher.pos_embed.mean().abs().item() < 0.005 and not torch.equal(teacher.cls_token, vit.cls_token)


def test_one_bad_teacher_step_follows_the_gradient_of_the_official_loss():
    _, _, model, ctx = linear_problem(seed=4)
    original = copy.deepcopy(model)
    t, lr = 2.0, 0.5
    # retain_fraction 1 and one batch: a single step on all 8 rows.
    method_from_yaml(BadTeacher, "bad_teacher", **PLAIN_SGD, lr=lr, temperature=t, retain_fraction=1.0, batch_size=64).unlearn(model, ctx)
    bad = incompetent_teacher(original, seed=4)
    x = X.view(8, 1, 1, 3)
    is_forget = torch.zeros(8, dtype=torch.bool)
    is_forget[FORGET] = True
    with torch.no_grad():
        target = torch.where(is_forget.unsqueeze(1), torch.softmax(bad(x) / t, 1), torch.softmax(original(x) / t, 1)).double()
    w, b = (p.detach().double() for p in original[1].parameters())
    q = torch.softmax((X.double() @ w.T + b) / t, dim=1)
    # d/dz of sum_c t_c log(t_c / softmax(z / T)_c) is (q - t) / T per row; F.kl_div's mean divides by 8 rows x 3 classes.
    residual = (q - target) / (t * 8 * 3)
    assert torch.allclose(model[1].weight.detach().double(), w - lr * residual.T @ X.double(), atol=1e-6)
    assert torch.allclose(model[1].bias.detach().double(), b - lr * residual.sum(0), atol=1e-6)


def test_bad_teacher_trains_on_d_f_and_the_retain_subset_only():
    data, split = _id_problem(30)  # 10 forget rows, 20 retained
    torch.manual_seed(0)
    model = _Recorder()
    ctx = UnlearnContext(data, split, CPU, seed=6)
    report = method_from_yaml(BadTeacher, "bad_teacher", lr=0.01, batch_size=4, epochs=2).unlearn(model, ctx)
    subset = set(retain_subset(split.retain_train, 0.3, seed=6).tolist())
    assert report.certificate["retain_samples"] == len(subset) == 6
    per_epoch = math.ceil(16 / 4)
    for epoch in range(2):
        seen = [r for rows in model.rows[epoch * per_epoch : (epoch + 1) * per_epoch] for r in rows]
        assert sorted(seen) == sorted(set(split.forget_train.tolist()) | subset)  # shuffled together, each row once


@pytest.mark.parametrize(
    "key, value",
    [
        ("temperature", 0),
        ("temperature", -1.0),
        ("temperature", "hot"),
        ("retain_fraction", 0),
        ("retain_fraction", 1.5),
        ("retain_fraction", "x"),
    ],
)
def test_bad_bad_teacher_options_are_one_sentence_naming_the_key(key, value):
    with pytest.raises(FamrError) as err:
        method_from_yaml(BadTeacher, "bad_teacher", **{key: value})
    assert_one_sentence_naming(err, f"method.{key}")


# --- CF-k and EU-k: which layers ----------------------------------------------------------------


def _backbone(name: str, size: int) -> nn.Module:
    return build_backbone(OmegaConf.load(REPO / "conf" / "backbone" / f"{name}.yaml"), 10, 3, size)


def _names(model: nn.Module, modules: list[nn.Module]) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(m)] for m in modules]


def test_shipped_cf_k_and_eu_k_defaults_are_the_official_cifar10_recipe():
    for cls, name, epochs in ((CFk, "cf_k", 30), (EUk, "eu_k", 62)):
        s = method_from_yaml(cls, name).settings
        assert type(s) is LastLayersSettings
        assert (s.k, s.optimizer, s.lr, s.momentum, s.weight_decay, s.batch_size) == (10, "sgd", 0.1, 0.9, 5e-5, 64)
        assert (s.schedule, s.min_lr_factor, s.grad_clip, s.augment, s.bn, s.epochs) == ("sgdr", 0.05, 10.0, True, "train", epochs)
        assert s.lr * s.min_lr_factor == pytest.approx(5e-3)  # their minlr


def test_resnet_narrow_layers_count_from_fc_through_each_block_downsample_first():
    model = _backbone("resnet_narrow", 32)
    # conv1, then per stage conv1, conv2 and a downsample conv (the 64-wide stem makes layer1's too), then fc.
    assert len(counted_layers(model)) == 14
    layers, norms = last_layers(model, 1)
    assert (_names(model, layers), norms) == (["fc"], [])
    layers, norms = last_layers(model, 4)  # fc and the whole last stage
    assert _names(model, layers) == ["fc", "layer4.0.downsample.0", "layer4.0.conv2", "layer4.0.conv1"]
    assert _names(model, norms) == ["layer4.0.downsample.1", "layer4.0.bn2", "layer4.0.bn1"]
    layers, norms = last_layers(model, 14)
    assert _names(model, layers)[-1] == "conv1" and "bn1" in _names(model, norms)
    trained = {id(p) for m in layers + norms for p in m.parameters()}
    assert all(id(p) in trained for p in model.parameters())


def test_resnet18_layers_fc_plus_the_last_stage_is_k_6():
    model = _backbone("resnet18", 32)
    assert len(counted_layers(model)) == 21  # 1 + 16 block convs + 3 downsample convs + fc
    layers, norms = last_layers(model, 6)
    assert _names(model, layers) == [
        "fc",
        "layer4.1.conv2",
        "layer4.1.conv1",
        "layer4.0.downsample.0",
        "layer4.0.conv2",
        "layer4.0.conv1",
    ]
    assert _names(model, norms) == ["layer4.1.bn2", "layer4.1.bn1", "layer4.0.downsample.1", "layer4.0.bn2", "layer4.0.bn1"]


def test_vit_layers_are_the_head_then_each_blocks_four_linear_layers():
    model = build_backbone(OmegaConf.load(REPO / "conf" / "backbone" / "vit_mini.yaml"), 10, 3, 8)
    assert len(counted_layers(model)) == 10  # patch embedding + 2 blocks x (qkv, proj, fc1, fc2) + head
    layers, norms = last_layers(model, 5)
    assert _names(model, layers) == ["head", "blocks.1.mlp.fc2", "blocks.1.mlp.fc1", "blocks.1.attn.proj", "blocks.1.attn.qkv"]
    assert _names(model, norms) == ["norm", "blocks.1.norm2"]
    layers, norms = last_layers(model, 10)
    trained = {id(p) for m in layers + norms for p in m.parameters()}
    assert [n for n, p in model.named_parameters() if id(p) not in trained] == ["cls_token", "pos_embed"]


@pytest.mark.parametrize("cls, name", [(CFk, "cf_k"), (EUk, "eu_k")])
def test_k_beyond_the_backbones_layers_is_refused_before_training(cls, name):
    model = _backbone("resnet_narrow", 32)
    method_from_yaml(cls, name, k=14).check_model(model)
    with pytest.raises(FamrError) as err:
        method_from_yaml(cls, name, k=15).check_model(model)
    assert_one_sentence_naming(err, "method.k")
    assert "has 14" in str(err.value) and "between 1 and 14" in str(err.value)


# --- CF-k and EU-k: schedule and training -------------------------------------------------------


def test_sgdr_factor_is_torchs_warm_restarts_with_doubling_cycles_stepped_per_epoch():
    lr, floor = 0.1, 0.05
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    official = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=1, T_mult=2, eta_min=lr * floor)
    for epoch in range(40):
        assert lr * sgdr_factor(epoch, floor) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9), epoch
        optimizer.step()
        official.step()
    # By hand: cycles start at epochs 0, 1, 3, 7; epoch 2 sits half-way down a 2-epoch cycle.
    assert [sgdr_factor(e, floor) for e in (0, 1, 3, 7)] == [1.0, 1.0, 1.0, 1.0]
    assert sgdr_factor(2, floor) == pytest.approx(0.525)


def test_the_sgdr_lr_holds_for_every_step_of_an_epoch():
    s = method_from_yaml(CFk, "cf_k", epochs=4).settings
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=s.lr)
    scheduler = last_layers_schedule(optimizer, s, epoch_steps=3)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1] * 6 + [0.0525] * 3 + [0.1] * 3)  # 5e-3 + 0.095 * (1 + cos(pi / 2)) / 2


def _two_layer() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))


def test_one_cf_1_step_moves_the_head_alone_by_its_cross_entropy_gradient_on_d_r():
    ctx = linear_problem()[-1]
    model = _two_layer()
    original = copy.deepcopy(model)
    lr = 0.5
    method_from_yaml(CFk, "cf_k", **PLAIN_SGD, k=1, lr=lr, batch_size=8, grad_clip=0.0).unlearn(model, ctx)
    w1, b1, w2, b2 = (p.detach().double() for p in original.parameters())
    features = torch.relu(X[RETAIN].double() @ w1.T + b1)  # the frozen layer's output
    g_w, g_b = _softmax_gradient(w2, b2, features, Y[RETAIN])
    assert torch.allclose(model[3].weight.detach().double(), w2 - lr * g_w, atol=1e-6)
    assert torch.allclose(model[3].bias.detach().double(), b2 - lr * g_b, atol=1e-6)
    assert torch.equal(model[1].weight, original[1].weight) and torch.equal(model[1].bias, original[1].bias)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again for whatever follows


def test_cf_k_clips_the_gradient_norm():
    ctx = linear_problem()[-1]
    model = _two_layer()
    original = copy.deepcopy(model)
    lr, clip = 0.5, 1e-3
    method_from_yaml(CFk, "cf_k", **PLAIN_SGD, k=1, lr=lr, batch_size=8, grad_clip=clip).unlearn(model, ctx)
    step = torch.cat([(a - b).flatten() for a, b in zip(model[3].parameters(), original[3].parameters())])
    assert step.norm().item() == pytest.approx(lr * clip, rel=1e-3)  # plain SGD: |step| = lr * |clipped gradient|


@pytest.mark.parametrize("bn", ["train", "eval"])
def test_cf_k_leaves_the_frozen_layers_bit_identical(bn):
    data, split, model = tiny_problem(fit_steps=5)  # conv (layer 2 from the top), BatchNorm, linear (layer 1)
    original = copy.deepcopy(model)
    method_from_yaml(CFk, "cf_k", k=1, lr=0.05, batch_size=16, epochs=2, bn=bn).unlearn(model, UnlearnContext(data, split, CPU, seed=0))
    assert not torch.equal(model[4].weight, original[4].weight)
    for i in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(model[i].parameters(), original[i].parameters()))
    # Official train mode updates every BatchNorm's running statistics, frozen ones too; eval keeps them.
    assert torch.equal(model[1].running_mean, original[1].running_mean) == (bn == "eval")


def test_cf_2_trains_the_conv_with_its_batchnorm():
    data, split, model = tiny_problem(fit_steps=5)
    original = copy.deepcopy(model)
    method_from_yaml(CFk, "cf_k", k=2, lr=0.05, batch_size=16, epochs=1).unlearn(model, UnlearnContext(data, split, CPU, seed=0))
    for i in (0, 1, 4):
        assert not torch.equal(model[i].weight, original[i].weight), i


# --- EU-k ---------------------------------------------------------------------------------------


def _deep() -> nn.Sequential:
    torch.manual_seed(2)
    hidden = [nn.Linear(3, 400), nn.BatchNorm1d(400), nn.ReLU(), nn.Linear(400, 300), nn.BatchNorm1d(300), nn.ReLU()]
    return nn.Sequential(nn.Flatten(), *hidden, nn.Linear(300, 3))


def test_eu_k_reinitialisation_redraws_the_last_k_layers_and_nothing_else():
    model = _deep()
    with torch.no_grad():
        for m in (model[2], model[5]):  # trained-looking norms, to see that they are kept
            m.weight.uniform_(0.5, 1.5)
            m.running_mean.uniform_(-1, 1)
    original = copy.deepcopy(model)
    layers, norms = last_layers(model, 2)
    assert (layers, norms) == ([model[7], model[4]], [model[5]])
    reinitialise_(layers, seed=0)
    for i in (4, 7):
        changed = model[i].weight != original[i].weight
        assert changed.float().mean().item() > 0.99 and torch.equal(model[i].bias, torch.zeros_like(model[i].bias))
    # Kaiming normal, fan-in, ReLU gain: std sqrt(2 / 400) over 120,000 draws.
    assert model[4].weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    assert model[4].weight.mean().abs().item() < 0.002
    kept = [model[1], model[2], model[5]]
    for new, old in zip(kept, (original[1], original[2], original[5])):
        assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))
    again, other = copy.deepcopy(original), copy.deepcopy(original)
    reinitialise_(last_layers(again, 2)[0], seed=0)
    reinitialise_(last_layers(other, 2)[0], seed=1)
    assert torch.equal(again[4].weight, model[4].weight) and not torch.equal(other[4].weight, model[4].weight)


def test_eu_k_unlearn_starts_from_the_seeded_reinitialisation_and_keeps_the_frozen_part():
    ctx = linear_problem(seed=7)[-1]
    model = _deep()
    original = copy.deepcopy(model)
    reinitialised = copy.deepcopy(model)
    reinitialise_(last_layers(reinitialised, 2)[0], seed=7)
    # A vanishing lr: the trained layers end where the re-initialisation put them.
    method_from_yaml(EUk, "eu_k", k=2, lr=1e-12, epochs=1, batch_size=8, bn="eval").unlearn(model, ctx)
    for i in (4, 7):
        assert torch.allclose(model[i].weight, reinitialised[i].weight, atol=1e-9)
        assert not torch.allclose(model[i].weight, original[i].weight, atol=1e-2)
    # Then real training: the last two layers and the norm between them move, the rest stays bit-identical.
    model = copy.deepcopy(original)
    method_from_yaml(EUk, "eu_k", k=2, lr=0.05, epochs=2, batch_size=4, bn="eval").unlearn(model, ctx)
    assert not torch.allclose(model[4].weight, reinitialised[4].weight) and not torch.equal(model[5].weight, original[5].weight)
    for i in (1, 2):
        assert all(torch.equal(a, b) for a, b in zip(model[i].state_dict().values(), original[i].state_dict().values()))


@pytest.mark.parametrize("cls, name", [(CFk, "cf_k"), (EUk, "eu_k")])
@pytest.mark.parametrize(
    "key, value",
    [
        ("k", 0),
        ("k", 2.5),
        ("k", "last"),
        ("schedule", "warm"),
        ("min_lr_factor", -0.1),
        ("min_lr_factor", 2),
        ("grad_clip", -1),
        ("grad_clip", "x"),
        ("bn", "frozen"),
    ],
)
def test_bad_last_layer_options_are_one_sentence_naming_the_key(cls, name, key, value):
    with pytest.raises(FamrError) as err:
        method_from_yaml(cls, name, **{key: value})
    assert_one_sentence_naming(err, f"method.{key}")


def test_the_other_schedules_remain_available():
    assert method_from_yaml(CFk, "cf_k", schedule="cosine").settings.schedule == "cosine"
    assert method_from_yaml(EUk, "eu_k", schedule="constant", grad_clip=0).settings.grad_clip == 0.0
