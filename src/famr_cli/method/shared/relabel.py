"""Random-label unlearning's core, shared by random_label and salun: how D_f is relabelled (fresh labels
from all K classes for every batch, or one wrong label per sample for the run) and in which order D_f and
D_r are passed each epoch (:func:`relabel_options`, :func:`random_label_batches`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import torch

from famr_cli.errors import FamrError
from famr_cli.method import UnlearnContext
from famr_cli.method.shared.pieces import mixed_seed
from famr_cli.method.shared.training import Batches

# How random_label and salun relabel D_f: fresh labels from all K classes for every batch (the
# official CIFAR-10 recipe), or one wrong label per sample fixed for the run (famr's earlier default).
RELABEL_MODES = ("per_batch", "fixed_wrong")

# How they pass over the data each epoch: all of D_f then all of D_r (the official CIFAR-10 recipe),
# or D_f and D_r shuffled together into one set (famr's earlier default).
PASS_MODES = ("sequential", "mixed")

# The label of a forget row whose label is drawn afresh for each batch (no class is negative).
FRESH_LABEL = -1


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


class RandomLabelBatches:
    """Each epoch, the passes' batches in turn; in a pass marked for it, rows labelled
    :data:`FRESH_LABEL` get labels drawn for that batch by :func:`batch_random_labels`.

    Re-iterable like the batches it chains (one iteration = one epoch); ``step`` counts the batches
    yielded so far in the run, i.e. the 0-based optimizer step that the next batch feeds.
    """

    def __init__(self, passes: list[tuple[Batches, bool]], num_classes: int, seed: int):
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
