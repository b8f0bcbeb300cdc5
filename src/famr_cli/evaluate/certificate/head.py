"""A timm model's linear classifier head as one flat vector, and its losses over fixed features.

The head theta = (W, b), logits = features @ W.T + b, is laid out flat as [W.flatten(), b] so the
Newton and influence solves (:mod:`famr_cli.evaluate.certificate.newton`) can treat it as a plain
vector: each loss here is one matmul plus a log-softmax over all features, a function of theta alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from famr_cli.errors import FamrError

HEAD_LOSSES = ("kl_uniform", "entropy", "cross_entropy")


# --------------------------------------------------------------------------------------------
# The head and its features
# --------------------------------------------------------------------------------------------


def classifier_head(model: nn.Module) -> nn.Linear:
    """The model's classifier head through timm's ``get_classifier`` (ResNet ``fc``, ViT ``head``)."""
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is None:
        raise FamrError(
            f"{type(model).__name__} has no get_classifier(); the head certificate needs a timm model whose classifier is nn.Linear."
        )
    head = get_classifier()
    if not isinstance(head, nn.Linear):
        raise FamrError(
            f"The classifier of {type(model).__name__} is {type(head).__name__}, not nn.Linear; "
            "the head certificate needs a linear head (build the model with num_classes > 0)."
        )
    return head


def head_features(model: nn.Module, x_batches: Iterable[torch.Tensor | tuple | list]) -> torch.Tensor:
    """Pre-logit features ``forward_head(forward_features(x), pre_logits=True)``, in eval mode, no grad.

    ``x_batches`` yields input tensors, or ``(x, y, ...)`` tuples whose first item is the input.
    Each batch is moved to the model's device; the model's train/eval mode is restored afterwards.
    Returns an (N, D) tensor with ``classifier_head(model)(features) == model(x)``.
    """
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        raise FamrError(f"{type(model).__name__} lacks timm's forward_features/forward_head; the head certificate needs a timm model.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.no_grad():
            for batch in x_batches:
                x = batch[0] if isinstance(batch, tuple | list) else batch
                chunks.append(model.forward_head(model.forward_features(x.to(device)), pre_logits=True))
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("head_features got no batches.")
    features = torch.cat(chunks)
    if features.ndim != 2:
        shape = tuple(features.shape)
        raise FamrError(f"{type(model).__name__}'s pre-logit features have shape {shape}, not (N, D); no linear head certificate.")
    return features


# --------------------------------------------------------------------------------------------
# Flat head parameters and the losses over fixed features
# --------------------------------------------------------------------------------------------


def flatten_head(weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """theta = [W.flatten(), b]: the flat layout every function here uses."""
    flat = weight.detach().reshape(-1)
    return flat if bias is None else torch.cat([flat, bias.detach().reshape(-1).to(flat)])


def unflatten_head(theta: torch.Tensor, weight_shape: tuple[int, int], has_bias: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inverse of :func:`flatten_head`: views (W, b) into ``theta``."""
    k, d = weight_shape
    expected = k * d + (k if has_bias else 0)
    if theta.numel() != expected:
        raise ValueError(f"flat head has {theta.numel()} entries, expected {expected} for W {k}x{d}{' + b' if has_bias else ''}.")
    return theta[: k * d].view(k, d), (theta[k * d :] if has_bias else None)


def head_logits(theta: torch.Tensor, features: torch.Tensor, num_classes: int, has_bias: bool = True) -> torch.Tensor:
    weight, bias = unflatten_head(theta, (num_classes, features.shape[1]), has_bias)
    logits = features @ weight.T
    return logits if bias is None else logits + bias


# Same formulas as famr_cli.method.famr's FORGET_LOSSES, but those cast logits to float32 for
# mixed-precision training; these keep the input dtype so the solve can run in float64.
def _kl_uniform(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1)
    return (-log_p.mean(dim=1) - math.log(logits.shape[1])).mean()


def _entropy(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=1)
    return ((log_p.exp() * log_p).sum(dim=1) + math.log(logits.shape[1])).mean()


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None:
        raise ValueError("loss='cross_entropy' needs labels.")
    return F.nll_loss(F.log_softmax(logits, dim=1), labels)


_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "kl_uniform": _kl_uniform,
    "entropy": _entropy,
    "cross_entropy": _cross_entropy,
}


def head_loss(
    features: torch.Tensor, num_classes: int, loss: str = "kl_uniform", labels: torch.Tensor | None = None, has_bias: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The mean ``loss`` over ``features`` as a function of the flat head theta (one matmul + log-softmax)."""
    if loss not in _LOSSES:
        raise ValueError(f"Unknown head loss '{loss}': use one of {', '.join(HEAD_LOSSES)}.")
    fn = _LOSSES[loss]
    if labels is not None:
        labels = labels.to(features.device, torch.long)

    def loss_fn(theta: torch.Tensor) -> torch.Tensor:
        return fn(head_logits(theta, features, num_classes, has_bias), labels)

    return loss_fn
