"""What two or more methods share; registers no method, so no method module imports another.

The optimizer options and their checks (:class:`TrainingSettings`, :func:`training_options`), the
BatchNorm mode, the cross-entropy objective, the random-label core of random_label and salun
(:func:`relabel_options`, :func:`random_label_batches`: how D_f is relabelled and in which order D_f
and D_r are passed) and :func:`train_with_ce` / :func:`train_on_batches`, which set up optimizer and
schedule around the one training loop for the retain-based baselines and gradient ascent, and
CF-k's and EU-k's training of the last k layers (:class:`LastLayersSettings`, :func:`last_layers`,
:func:`train_last_layers`, :func:`unlearn_last_layers`); and the small pieces several methods use: a
frozen copy of the model (:func:`frozen_copy`), the run's autocast for a forward pass
(:func:`run_autocast`) and the timm head lookup with the method's own error (:func:`classifier_head`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli.checks import flag, number, whole
from famr_cli.errors import FamrError
from famr_cli.method import MethodSettings, UnlearnContext, UnlearnReport
from famr_cli.train.loop import LoopHooks, LoopResult, run_loop
from famr_cli.train.optim import build_optimizer, build_schedule, optimizer_name, schedule_name

BN_MODES = ("eval", "train")
# How random_label and salun relabel D_f: fresh labels from all K classes for every batch (the
# official CIFAR-10 recipe), or one wrong label per sample fixed for the run (famr's earlier default).
RELABEL_MODES = ("per_batch", "fixed_wrong")
# How they pass over the data each epoch: all of D_f then all of D_r (the official CIFAR-10 recipe),
# or D_f and D_r shuffled together into one set (famr's earlier default).
PASS_MODES = ("sequential", "mixed")
# The label of a forget row whose label is drawn afresh for each batch (no class is negative).
FRESH_LABEL = -1


@dataclass(frozen=True)
class TrainingSettings(MethodSettings):
    """The options of every method that takes optimizer steps."""

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    epochs: int
    batch_size: int


@dataclass(frozen=True)
class ScheduledSettings(TrainingSettings):
    """The options of the methods that train through :func:`train_with_ce`, which also schedules the lr."""

    schedule: str


@dataclass(frozen=True)
class RetainTrainingSettings(ScheduledSettings):
    """FT's and RL's options: the shared training options, and whether their D_r batches are augmented."""

    augment: bool

    @classmethod
    def parse(cls, c: dict[str, Any]) -> RetainTrainingSettings:
        return cls(**training_options(c, suggested_lr=0.01))


def optimizer_option(value: Any) -> str:
    return optimizer_name(value, "method")


def bn_option(value: Any) -> str:
    if value not in BN_MODES:
        raise FamrError(f"method.bn must be 'eval' (freeze BatchNorm statistics) or 'train' (got '{value}').")
    return str(value)


def relabel_options(c: Mapping[str, Any]) -> dict[str, str]:
    """random_label's and salun's ``relabel`` and ``passes`` of ``c``, checked in this order."""
    if c["relabel"] not in RELABEL_MODES:
        raise FamrError(
            f"method.relabel must be 'per_batch' (fresh labels from all classes for every D_f batch) or 'fixed_wrong' "
            f"(one wrong label per forget sample for the whole run) (got '{c['relabel']}'); use method.relabel=per_batch."
        )
    if c["passes"] not in PASS_MODES:
        raise FamrError(
            f"method.passes must be 'sequential' (all of D_f, then all of D_r, each epoch) or 'mixed' "
            f"(D_f and D_r shuffled together) (got '{c['passes']}'); use method.passes=sequential."
        )
    return {"relabel": str(c["relabel"]), "passes": str(c["passes"])}


def training_options(c: Mapping[str, Any], *, suggested_lr: float) -> dict[str, Any]:
    """The baselines' shared options of ``c`` (raw values by field name), checked in this order and typed.

    ``schedule`` and ``augment`` are checked when the settings declare them (``c`` holds exactly
    their fields). Errors name ``method.<key>`` and suggest the method's own ``suggested_lr``.
    """
    values: dict[str, Any] = {"optimizer": optimizer_option(c["optimizer"])}
    if (lr := number(c["lr"], "method.lr", f"{suggested_lr:g}")) <= 0:
        raise FamrError(f"method.lr must be positive (got {c['lr']}); try method.lr={suggested_lr:g}.")
    if not 0 <= (momentum := number(c["momentum"], "method.momentum", 0.9)) < 1:
        raise FamrError(f"method.momentum must be in [0, 1) (got {c['momentum']}); try method.momentum=0.9.")
    if (weight_decay := number(c["weight_decay"], "method.weight_decay", "5e-4")) < 0:
        raise FamrError(f"method.weight_decay must be >= 0 (got {c['weight_decay']}); try method.weight_decay=5e-4.")
    values.update(lr=lr, momentum=momentum, weight_decay=weight_decay)
    values["epochs"] = whole(c["epochs"], "method.epochs", 10, minimum=1)
    values["batch_size"] = whole(c["batch_size"], "method.batch_size", 256, minimum=1)
    if "schedule" in c:
        values["schedule"] = schedule_name(c["schedule"], "method")
    if "augment" in c:
        values["augment"] = flag(c["augment"], "method.augment")
    return values


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def method_optimizer(params: Iterable[nn.Parameter], s: TrainingSettings) -> torch.optim.Optimizer:
    return build_optimizer(params, s.optimizer, s.lr, key="method", momentum=s.momentum, weight_decay=s.weight_decay)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with every parameter's ``requires_grad`` off (a teacher, an attacked original)."""
    copied = copy.deepcopy(model).eval()
    copied.requires_grad_(False)
    return copied


def run_autocast(ctx: UnlearnContext, device_type: str) -> torch.autocast:
    """The run's autocast for a forward pass on ``device_type``: ``ctx.autocast``'s dtype, off when it is None."""
    return torch.autocast(device_type, dtype=ctx.autocast or torch.bfloat16, enabled=ctx.autocast is not None)


def classifier_head(model: nn.Module, message: str, *, linear: bool = False) -> nn.Module:
    """The model's classifier through timm's ``get_classifier()``, or :class:`FamrError` with ``message``
    (its ``{model}`` filled with the model's class name) when it has none or, with ``linear``, when it is not one ``nn.Linear``."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if not callable(get_classifier) or (linear and not isinstance(head, nn.Linear)):
        raise FamrError(message.format(model=type(model).__name__))
    return head


def add_to_grads_(params: list[nn.Parameter], tensors: list[torch.Tensor], *, alpha: float) -> None:
    """``p.grad += alpha * t`` for each parameter, a zero gradient first where there is none, in one fused op.

    Penalties whose gradient is known in closed form (FAMR's anchor, l1-sparse's l1 term) add it
    here instead of through the autograd graph, whose per-parameter nodes would cost a backward
    pass over every weight.
    """
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    torch._foreach_add_([p.grad for p in params], tensors, alpha=alpha)


def cross_entropy(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # fp32 loss even under bf16 autocast: the log-softmax of confident logits loses precision otherwise.
    return F.cross_entropy(m(x).float(), y)


def freeze_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def bn_mode(bn: str) -> Callable[[nn.Module], None]:
    """The loop's ``set_mode`` hook: train mode, with BatchNorm statistics frozen when ``bn`` is 'eval'."""

    def set_mode(m: nn.Module) -> None:
        m.train()
        if bn == "eval":
            freeze_batchnorm(m)

    return set_mode


def mixed_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (e.g. the run's seed, a purpose tag and a step)."""
    return int(np.random.SeedSequence([v % 2**63 for v in values]).generate_state(1, dtype=np.uint64)[0] >> 1)


# Purpose tags mixed into the run's seed, so each random stream below is independent of the others.
_LABEL_STREAM = 0x5245_4C42  # per-batch random labels
_RETAIN_STREAM = 0x5245_5441  # the order and augmentation of the retain pass


def batch_random_labels(n: int, num_classes: int, seed: int, step: int) -> torch.Tensor:
    """``n`` labels drawn uniformly from all ``num_classes`` classes (a sample's own class included),
    a pure function of (``seed``, ``step``): the same run redraws the same labels, on any device."""
    generator = torch.Generator().manual_seed(mixed_seed(seed, _LABEL_STREAM, step))
    return torch.randint(0, num_classes, (n,), generator=generator)


def _need_two_classes(num_classes: int, method: str) -> None:
    if num_classes < 2:
        raise FamrError(
            f"method={method} needs at least two classes to give the forget set random labels (got {num_classes}); use another method."
        )


def random_wrong_labels(
    y_train: torch.Tensor, forget: torch.Tensor, num_classes: int, seed: int, *, method: str = "random_label"
) -> torch.Tensor:
    """A copy of ``y_train`` whose ``forget`` rows hold a label drawn uniformly from the other classes.

    Adding an offset in [1, K-1] modulo K maps each true label onto every other class with equal
    probability and never onto itself. This is ``relabel=fixed_wrong``: drawn once, kept for the run.
    """
    _need_two_classes(num_classes, method)
    generator = torch.Generator().manual_seed(seed)
    forget = forget.cpu()
    offsets = torch.randint(1, num_classes, (len(forget),), generator=generator)
    labels = y_train.clone()
    labels[forget] = ((y_train[forget].cpu() + offsets) % num_classes).to(labels.dtype).to(labels.device)
    return labels


class _Batches(Sized, Protocol):
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class RandomLabelBatches:
    """Each epoch, the passes' batches in turn; in a pass marked for it, rows labelled
    :data:`FRESH_LABEL` get labels drawn for that batch by :func:`batch_random_labels`.

    Re-iterable like the batches it chains (one iteration = one epoch); ``step`` counts the batches
    yielded so far in the run, i.e. the 0-based optimizer step that the next batch feeds.
    """

    def __init__(self, passes: list[tuple[_Batches, bool]], num_classes: int, seed: int):
        self.passes = passes
        self.num_classes = num_classes
        self.seed = seed
        self.step = 0

    def __len__(self) -> int:
        return sum(len(batches) for batches, _ in self.passes)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batches, fresh in self.passes:
            for x, y in batches:
                if fresh:
                    drawn = batch_random_labels(len(y), self.num_classes, self.seed, self.step).to(y.device, y.dtype)
                    y = torch.where(y == FRESH_LABEL, drawn, y)
                self.step += 1
                yield x, y


def random_label_batches(
    ctx: UnlearnContext, *, relabel: str, passes: str, batch_size: int, augment: bool, method: str
) -> RandomLabelBatches:
    """The batches of random-label unlearning (random_label, and salun under its mask): D_f with random
    labels and D_r with its true labels, augmented when ``augment``.

    ``relabel``: 'per_batch' draws every D_f batch's labels afresh from all K classes, from
    (ctx.seed, step); 'fixed_wrong' gives each forget sample one wrong label for the whole run
    (:func:`random_wrong_labels`). ``passes``: 'sequential' runs one pass over D_f, then one over D_r,
    each epoch (the retain pass shuffled and augmented from its own seed); 'mixed' shuffles D_f and
    D_r together into one set, whose batches hold rows of both.
    """
    split, num_classes = ctx.split, ctx.data.num_classes
    _need_two_classes(num_classes, method)
    forget, retain = split.forget_train, split.retain_train
    if relabel == "fixed_wrong":
        labels = random_wrong_labels(ctx.data.y_train, forget, num_classes, ctx.seed, method=method)
    else:
        labels = ctx.data.y_train.to(torch.long, copy=True)
        labels[forget.to(labels.device)] = FRESH_LABEL
    fresh = relabel == "per_batch"
    if passes == "mixed":
        both = ctx.batches(torch.cat([forget, retain]), batch_size, augment=augment, labels=labels)
        return RandomLabelBatches([(both, fresh)], num_classes, ctx.seed)
    retain_ctx = replace(ctx, seed=mixed_seed(ctx.seed, _RETAIN_STREAM))
    forget_pass = ctx.batches(forget, batch_size, augment=augment, labels=labels)
    retain_pass = retain_ctx.batches(retain, batch_size, augment=augment)
    return RandomLabelBatches([(forget_pass, fresh), (retain_pass, False)], num_classes, ctx.seed)


def train_with_ce(
    model: nn.Module,
    ctx: UnlearnContext,
    s: ScheduledSettings,
    indices: torch.Tensor,
    *,
    augment: bool,
    bn: str,
    desc: str,
    divergence_hint: str,
    objective: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    labels: torch.Tensor | None = None,
    after_backward: Callable[[int, int], None] | None = None,
    epoch_metrics: Callable[[], dict[str, float]] | None = None,
) -> LoopResult:
    """Train ``model`` on training rows ``indices`` (``labels`` replacing the true ones) with ``s``'s
    optimizer and schedule: :func:`train_on_batches` on ``ctx.batches(indices, ...)``.

    ``augment`` and ``bn`` are arguments, not settings, because some methods fix them (finetune always
    updates BatchNorm statistics) instead of offering the option.
    """
    batches = ctx.batches(indices, s.batch_size, augment=augment, labels=labels)
    return train_on_batches(
        model,
        ctx,
        s,
        batches,
        bn=bn,
        desc=desc,
        divergence_hint=divergence_hint,
        objective=objective,
        after_backward=after_backward,
        epoch_metrics=epoch_metrics,
    )


def train_on_batches(
    model: nn.Module,
    ctx: UnlearnContext,
    s: ScheduledSettings,
    batches: _Batches,
    *,
    bn: str,
    desc: str,
    divergence_hint: str,
    objective: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
    after_backward: Callable[[int, int], None] | None = None,
    epoch_metrics: Callable[[], dict[str, float]] | None = None,
) -> LoopResult:
    """``s.epochs`` passes over ``batches`` with ``s``'s optimizer and schedule, BatchNorm as ``bn`` says.

    ``after_backward(step, total_steps)`` receives the 0-based global step about to be taken and the
    run's step count (schedules such as l1-sparse's decaying penalty need both); ``epoch_metrics``
    adds figures to each epoch's log line.
    """
    optimizer = method_optimizer(model.parameters(), s)
    total_steps = s.epochs * len(batches)
    scheduler = build_schedule(optimizer, s.schedule, total_steps, key="method")
    step = 0

    def on_backward() -> None:
        nonlocal step
        if after_backward is not None:
            after_backward(step, total_steps)
        step += 1

    def on_epoch_end(epoch: int, mean_loss: float) -> None:
        ctx.log_metrics(
            {
                "unlearn/epoch": epoch + 1,
                "unlearn/loss": mean_loss,
                "unlearn/lr": optimizer.param_groups[0]["lr"],
                **(epoch_metrics() if epoch_metrics is not None else {}),
            }
        )

    return run_loop(
        model,
        batches,
        objective,
        optimizer,
        epochs=s.epochs,
        scheduler=scheduler,
        hooks=LoopHooks(after_backward=on_backward, on_epoch_end=on_epoch_end, set_mode=bn_mode(bn)),
        desc=desc,
        show_progress=ctx.show_progress,
        divergence_hint=divergence_hint,
        autocast=ctx.autocast,
    )


# --- The last k layers: CF-k and EU-k (Goel et al.) ----------------------------------------------

# What CF-k and EU-k count as a layer (their official code counts nn.Conv2d and nn.Linear modules), and
# the normalisation layers that train along with the counted layer they follow (theirs: nn.BatchNorm2d;
# LayerNorm and GroupNorm are ours, so that a ViT's norms train like a ResNet's BatchNorms).
COUNTED_LAYERS = (nn.Conv2d, nn.Linear)
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
# The lr schedules of the last-k training: SGDR (theirs) and famr's per-step schedules.
LAST_LAYERS_SCHEDULES = ("sgdr", "constant", "cosine", "step")


@dataclass(frozen=True)
class LastLayersSettings(ScheduledSettings):
    """CF-k's and EU-k's options: how many layers train, and their official SGDR schedule, clipping and BatchNorm mode."""

    k: int
    min_lr_factor: float
    grad_clip: float
    augment: bool
    bn: str

    @classmethod
    def parse(cls, c: dict[str, Any]) -> LastLayersSettings:
        k = whole(c["k"], "method.k", 10, minimum=1)
        if c["schedule"] not in LAST_LAYERS_SCHEDULES:
            raise FamrError(
                f"method.schedule must be 'sgdr' (cosine from method.lr with warm restarts, cycles doubling from one epoch), "
                f"'constant', 'cosine' or 'step' (got '{c['schedule']}'); use method.schedule=sgdr."
            )
        shared = training_options({key: value for key, value in c.items() if key != "schedule"}, suggested_lr=0.1)
        if not 0 <= (floor := number(c["min_lr_factor"], "method.min_lr_factor", 0.05)) <= 1:
            raise FamrError(
                f"method.min_lr_factor must be in [0, 1], SGDR's lowest lr as a fraction of method.lr (got {c['min_lr_factor']}); "
                "try method.min_lr_factor=0.05."
            )
        grad_clip = number(c["grad_clip"], "method.grad_clip", 10, minimum=0)
        return cls(**shared, schedule=str(c["schedule"]), k=k, min_lr_factor=floor, grad_clip=grad_clip, bn=bn_option(c["bn"]))


def counted_layers(model: nn.Module) -> list[nn.Module]:
    """``model``'s convolutions and linear layers, in module-registration order."""
    return [m for m in model.modules() if isinstance(m, COUNTED_LAYERS)]


def last_layers(model: nn.Module, k: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """The last ``k`` counted layers and the normalisation layers met on the way to the k-th.

    The walk goes from the output through the modules in reverse registration order, as the official
    ``resetFinalResnet``: a norm registered after a counted layer (a ResNet's bn2 after conv2, a ViT's
    final norm before its head) is met first, so it trains with that layer; the walk stops at the k-th.
    """
    layers: list[nn.Module] = []
    norms: list[nn.Module] = []
    for module in reversed([m for m in model.modules() if isinstance(m, COUNTED_LAYERS + NORM_LAYERS)]):
        if len(layers) == k:
            break
        (layers if isinstance(module, COUNTED_LAYERS) else norms).append(module)
    return layers, norms


def check_last_layers(model: nn.Module, k: int, method: str) -> None:
    if k > (count := len(counted_layers(model))):
        raise FamrError(
            f"method={method} cannot train the last {k} layers of this backbone, which has {count} (convolutions and linear layers); "
            f"use method.k between 1 and {count}."
        )


def sgdr_factor(epoch: int, floor: float) -> float:
    """SGDR's lr multiplier in 0-based ``epoch``: a cosine from 1 down to ``floor`` over cycles of 1, 2, 4, ...
    epochs, back to 1 at each cycle's start (torch's CosineAnnealingWarmRestarts(T_0=1, T_mult=2), stepped per epoch)."""
    start, length = 0, 1
    while epoch >= start + length:
        start, length = start + length, 2 * length
    return float(floor + (1 - floor) * (1 + np.cos(np.pi * (epoch - start) / length)) / 2)


def last_layers_schedule(optimizer: torch.optim.Optimizer, s: LastLayersSettings, epoch_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step scheduler: SGDR holds each epoch's lr for all its steps; the others are famr's per-step schedules."""
    if s.schedule != "sgdr":
        return build_schedule(optimizer, s.schedule, s.epochs * epoch_steps, key="method")
    per_epoch = max(epoch_steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: sgdr_factor(step // per_epoch, s.min_lr_factor))


def train_last_layers(model: nn.Module, ctx: UnlearnContext, s: LastLayersSettings, trained: list[nn.Module], *, desc: str) -> LoopResult:
    """Cross-entropy on D_r for the parameters of the ``trained`` modules, every other parameter frozen
    (its ``requires_grad`` is restored afterwards); BatchNorm everywhere as ``s.bn`` says."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    for module in trained:
        module.requires_grad_(True)
    try:
        optimizer = method_optimizer(trainable_parameters(model), s)
        batches = ctx.batches(ctx.split.retain_train, s.batch_size, augment=s.augment)
        scheduler = last_layers_schedule(optimizer, s, len(batches))

        def on_epoch_end(epoch: int, mean_loss: float) -> None:
            ctx.log_metrics({"unlearn/epoch": epoch + 1, "unlearn/loss": mean_loss, "unlearn/lr": optimizer.param_groups[0]["lr"]})

        return run_loop(
            model,
            batches,
            cross_entropy,
            optimizer,
            epochs=s.epochs,
            scheduler=scheduler,
            hooks=LoopHooks(on_epoch_end=on_epoch_end, set_mode=bn_mode(s.bn)),
            desc=desc,
            show_progress=ctx.show_progress,
            grad_clip=s.grad_clip or None,
            divergence_hint="lower method.lr or method.grad_clip",
            autocast=ctx.autocast,
        )
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def unlearn_last_layers(
    model: nn.Module,
    ctx: UnlearnContext,
    s: LastLayersSettings,
    *,
    desc: str,
    reinitialise: Callable[[list[nn.Module], int], None] | None = None,
) -> UnlearnReport:
    """CF-k's and EU-k's unlearning: train the last ``s.k`` layers (and the norms met on the way) on D_r,
    after ``reinitialise(layers, ctx.seed)`` where one is given (EU-k's fresh draw of those layers)."""
    layers, norms = last_layers(model, s.k)
    if reinitialise is not None:
        reinitialise(layers, ctx.seed)
    result = train_last_layers(model, ctx, s, layers + norms, desc=desc)
    trained = sum(p.numel() for module in layers + norms for p in module.parameters())
    return UnlearnReport(
        epoch_losses=result.epoch_losses,
        certificate={"steps": result.steps, "retain_samples": len(ctx.split.retain_train), "trained_parameters": trained},
    )
