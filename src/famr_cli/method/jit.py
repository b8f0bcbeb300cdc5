"""JiT: make the model locally flat around each forget sample with a Lipschitz penalty, reading D_f alone.

Foster, Fogarty, Schoepf, Oztireli & Brintrup, "Zero-Shot Machine Unlearning at Scale via Lipschitz
Regularization" (arXiv 2402.01401, 2024; its later versions are titled "An Information Theoretic
Approach to Machine Unlearning"; not "Loss-Free Machine Unlearning", arXiv 2402.19308, which is
LFSSD, a variant of SSD). Official code: github.com/jwf40/Zeroshot-Unlearning-At-Scale at
commit f7e3f20 (``src/lipschitz.py``: ``AddGaussianNoise`` and ``Lipschitz.modify_weight``;
``lipschitz_forgetting`` in ``src/forget_random_strategies.py`` and ``src/forget_full_class_strategies.py``;
the values in ``src/forget_random_main.py``, ``src/forget_full_class_main.py``,
``src/forget_subclass_main.py`` and ``src/cifar10_random_exps_vgg.sh``).

For each mini-batch x of D_f (dataset order, no augmentation) and N noisy copies
x~_n = clamp(x + sigma * z_n, min x, max x) (z_n standard normal, the bounds taken over the whole
normalised batch), one SGD step on

    L = (1 / N) * sum_n sum_i ||f(x_i) - f(x~_ni)||_2 / ||x_i - x~_ni||_2

with f the logits; only f(x_i) carries a gradient (the copies' outputs are computed without one), so
a step pulls each f(x_i) towards its copies' outputs as the model gave them before the step: it is not
the gradient of the ratio with both outputs moving (on a tiny random MLP that ratio even rises). The
sum runs over the batch (not a mean), and one pass over D_f is made. The official loop zeroes the
gradients once before the pass and never again, so step k moves along the sum of the gradients of
batches 1..k (plain SGD on accumulated gradients, i.e. SGD with momentum 1): ``accumulate_grads: true``.

Official values: N = 25, batches of 128 (full-class and random; the sub-class script keeps its
argument default of 64), plain SGD (no momentum, no weight decay) over all parameters, lr 3e-4 for
their CNN in every task, sigma 0.5 for full-class forgetting (their script runs CIFAR-100) and 0.01
for random-sample (CIFAR-10, a ``random_split`` fraction 0.00165 of 50,000, i.e. 83 samples, one
batch: their only CIFAR-10 entry) and sub-class forgetting
(their ViT: sigma 0.8 / lr 1.5, 0.5 / 0.1 and 1.5 / 0.5). famr's one default is the full-class CNN
recipe (sigma 0.5), since ``forget=class`` is famr's default forget spec; famr-tune searches sigma and lr.
Their ``n_epochs`` reaches the code but is never read; ``epochs`` here repeats the pass (official 1), each
pass starting from zeroed gradients as the official one does.

BatchNorm: their CNN has none. The default keeps their never-switched train mode (``bn: train``): on a
BatchNorm backbone each pass is normalised with its own batch's statistics, and every one of the N + 1
passes per batch, the noisy copies' included, moves the running statistics towards D_f and its copies.
``bn: eval`` instead normalises every pass with the running statistics and updates none, as a BatchNorm-free
model's per-sample forward would; famr-tune's CIFAR space searches both. On the quickstart's digits
(10 trials each, digits 3 and 8) ``bn: train`` kept 2 trials within 10 points of retained accuracy
(docs/tuning.md), while an earlier search with ``bn: eval``, its gradients also summed across passes,
kept none.

What still differs from the official code with the defaults:

- Their CNN (``VGG16``, in fact torchvision's vgg11 without BatchNorm, dropout active in train mode)
  has no BatchNorm; famr's backbones do, in train mode by default as above.
- The forward passes run in fp32 whatever the run's ``precision`` (the official code's too): the
  loss is a difference of two nearby outputs, which bf16's 8-bit mantissa would mostly round away.
- Random streams: the noise comes from famr's own seeded generator; their input transform normalises
  every dataset with CIFAR-100 statistics, famr with the dataset's own; their random forget set comes
  in ``random_split`` order, famr's in dataset order.
- famr offers momentum, weight decay and the adam/adamw optimizers beside the official plain SGD.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from famr_cli.checks import flag, number, whole
from famr_cli.errors import DivergedError, FamrError
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.pieces import mixed_seed
from famr_cli.method.shared.settings import TrainingSettings, bn_option, training_options
from famr_cli.method.shared.training import bn_mode, method_optimizer
from famr_cli.progress import progress_bar

_NOISE_STREAM = 0x4A49_5421  # purpose tag of the input noise's random stream


def perturbed(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """``x`` plus N(0, sigma^2) noise per element, clamped to the smallest and largest value of the whole batch."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp(min=x.min(), max=x.max())


def lipschitz_loss(model: nn.Module, x: torch.Tensor, copies: Iterable[torch.Tensor]) -> torch.Tensor:
    """(1 / N) * sum over the N ``copies`` of sum_i ||f(x_i) - f(copy_i)|| / ||x_i - copy_i||, the gradient through f(x) only."""
    out = model(x).float()
    total, count = torch.zeros((), device=x.device), 0
    for noisy in copies:
        with torch.no_grad():
            out_noisy = model(noisy).float()
        in_norm = torch.linalg.vector_norm((x - noisy).flatten(1).float(), dim=1)
        out_norm = torch.linalg.vector_norm((out - out_noisy).flatten(1), dim=1)
        total = total + (out_norm / in_norm).sum()
        count += 1
    if count == 0:
        raise ValueError("lipschitz_loss needs at least one perturbed copy")
    return total / count


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@dataclass(frozen=True)
class JiTSettings(TrainingSettings):
    sigma: float
    perturbations: int
    bn: str
    accumulate_grads: bool

    @classmethod
    def parse(cls, c: dict[str, Any]) -> JiTSettings:
        shared = training_options(c, suggested_lr=3e-4)
        if (sigma := number(c["sigma"], "method.sigma", 0.5)) <= 0:
            raise FamrError(f"method.sigma must be positive (got {c['sigma']}); try method.sigma=0.5.")
        perturbations = whole(c["perturbations"], "method.perturbations", 25, minimum=1)
        return cls(
            **shared,
            sigma=sigma,
            perturbations=perturbations,
            bn=bn_option(c["bn"]),
            accumulate_grads=flag(c["accumulate_grads"], "method.accumulate_grads"),
        )


@METHODS.register("jit")
class JiT(UnlearningMethod[JiTSettings]):
    @property
    def data_read(self) -> str:
        return "forget"  # zero-shot: D_f and the model, nothing of D_r

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        optimizer = method_optimizer(model.parameters(), s)
        batches = ctx.batches(ctx.split.forget_train, s.batch_size, shuffle=False, augment=False)
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(mixed_seed(ctx.seed, _NOISE_STREAM))
        set_mode = bn_mode(s.bn)
        losses: list[float] = []
        bar = progress_bar(s.epochs * len(batches), "jit", ctx.show_progress)
        try:
            for epoch in range(s.epochs):
                set_mode(model)
                optimizer.zero_grad(set_to_none=True)  # the official pass's only zero_grad with accumulate_grads
                loss_sum = torch.zeros((), device=ctx.device)
                for x, _ in batches:
                    if not s.accumulate_grads:
                        optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(x.device.type, enabled=False):
                        copies = (perturbed(x, s.sigma, generator) for _ in range(s.perturbations))
                        loss = lipschitz_loss(model, x, copies)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.detach()
                    bar.update(1)
                mean_loss = float(loss_sum) / max(len(batches), 1)
                if not math.isfinite(mean_loss) or not _weights_finite(model):
                    raise DivergedError(
                        f"jit diverged: the Lipschitz loss or a weight became NaN or infinite in epoch {epoch + 1}; lower method.lr."
                    )
                losses.append(mean_loss)
                ctx.log_metrics({"unlearn/epoch": epoch + 1, "unlearn/loss": mean_loss, "unlearn/lr": s.lr})
        finally:
            bar.close()
        return UnlearnReport(
            epoch_losses=losses,
            certificate={"steps": s.epochs * len(batches), "forget_samples": len(ctx.split.forget_train)},
        )
