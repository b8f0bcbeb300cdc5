"""FAMR (Forget-Aligned Model Reconstruction), as docs/theory.md defines it:

    theta* = argmin_theta  L_f(theta) + lam * ||theta - theta_0||^2,
    L_f = mean over D_f of KL(u || softmax(f_theta(x))),  u uniform over the K classes.

Only the forget set and theta_0 are used, so the cost scales with |D_f|, not |D|.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import ListConfig

from famr_cli.backbone import classifier_parameter_names
from famr_cli.checks import flag, is_whole, number, whole
from famr_cli.errors import FamrError
from famr_cli.evaluate.certificate.head import classifier_head, head_features
from famr_cli.evaluate.certificate.newton import (
    FamrHead,
    SolveOptions,
    famr_head_minimiser,
    famr_head_newton,
    head_delta,
    influence_removal_step,
    relative_distance,
)
from famr_cli.evaluate.certificate.run import mean_gradient, stationarity
from famr_cli.evaluate.metrics import parameter_distance
from famr_cli.method import METHODS, UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.method.shared.settings import TrainingSettings, bn_option, optimizer_option
from famr_cli.method.shared.training import add_to_grads_, bn_mode, method_optimizer
from famr_cli.train.loop import LoopHooks, run_loop


def kl_uniform_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(u || p) = CE(u, p) - log K: cross-entropy to the uniform target, zero at uniform."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return (-log_p.mean(dim=1) - math.log(logits.shape[1])).mean()


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(p || u) = log K - H(p): pushes the prediction's entropy to its maximum."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return ((log_p.exp() * log_p).sum(dim=1) + math.log(logits.shape[1])).mean()


FORGET_LOSSES = {"kl_uniform": kl_uniform_loss, "entropy": entropy_loss}
ANCHORS = ("all", "backbone", "head")


def anchor_penalty(params: list[torch.Tensor], theta0: list[torch.Tensor]) -> torch.Tensor:
    """||theta - theta_0||^2 summed over the anchored parameters, with fused multi-tensor ops."""
    diffs = torch._foreach_sub([p.detach() for p in params], theta0)
    return torch.stack(torch._foreach_norm(diffs)).square().sum()


def add_anchor_grad_(params: list[nn.Parameter], theta0: list[torch.Tensor], lam: float) -> None:
    """Add d/dtheta lam*||theta - theta_0||^2 = 2*lam*(theta - theta_0) to each parameter's grad.

    Folding the anchor into the gradient (instead of building it into the autograd graph) costs
    two fused ops per step whatever the parameter count.
    """
    if lam != 0.0:
        add_to_grads_(params, torch._foreach_sub([p.detach() for p in params], theta0), alpha=2.0 * lam)


@dataclass(frozen=True)
class FAMRSettings(TrainingSettings):
    loss: str
    lam: float
    anchor: str
    bn: str
    head_only: bool
    trainable: tuple[str, ...] | None  # parameter-name prefixes; None or () moves every parameter
    retain_kd: float
    retain_buffer: int | None  # None only when retain_kd is 0, which never reads it

    @classmethod
    def parse(cls, c: dict[str, Any]) -> FAMRSettings:
        if c["loss"] not in FORGET_LOSSES:
            raise FamrError(f"Unknown FAMR loss '{c['loss']}': set method.loss to one of {', '.join(FORGET_LOSSES)}.")
        if (lam := number(c["lam"], "method.lam", 0.1)) < 0:
            raise FamrError(f"method.lam must be >= 0 (got {c['lam']}); the anchor weight cannot be negative, try method.lam=0.01.")
        # Call arguments run left to right: the checks run, and fail first, in this order.
        checked = dict(
            lr=number(c["lr"], "method.lr", 0.001, positive=True),
            optimizer=optimizer_option(c["optimizer"]),
            momentum=number(c["momentum"], "method.momentum", 0.9, minimum=0),
            weight_decay=number(c["weight_decay"], "method.weight_decay", 0.0, minimum=0),
            epochs=whole(c["epochs"], "method.epochs", 100, minimum=1),
            batch_size=whole(c["batch_size"], "method.batch_size", 256, minimum=1),
            bn=bn_option(c["bn"]),
            head_only=flag(c["head_only"], "method.head_only"),
        )
        trainable = c["trainable"]
        if trainable is not None and not (isinstance(trainable, (list, tuple, ListConfig)) and all(isinstance(t, str) for t in trainable)):
            raise FamrError(
                f"method.trainable must be null or a list of parameter-name prefixes (got {trainable}); "
                "use e.g. method.trainable=[layer4,fc]."
            )
        if (retain_kd := number(c["retain_kd"], "method.retain_kd", 0.0)) < 0:
            raise FamrError(f"method.retain_kd must be >= 0 (got {c['retain_kd']}); 0 turns the retained-data term off.")
        buffer = c["retain_buffer"]
        if retain_kd > 0 and not (is_whole(buffer) and buffer >= 1):
            raise FamrError(f"method.retain_buffer must be at least 1 when method.retain_kd > 0 (got {buffer}); try 500.")
        if c["anchor"] not in ANCHORS:
            raise FamrError(f"Unknown method.anchor '{c['anchor']}': use one of {', '.join(ANCHORS)}.")
        prefixes, size = None if trainable is None else tuple(trainable), int(buffer) if is_whole(buffer) else None
        # loss and anchor passed their membership tests, so they are already strings.
        return cls(**checked, loss=c["loss"], lam=lam, anchor=c["anchor"], trainable=prefixes, retain_kd=retain_kd, retain_buffer=size)


@METHODS.register("famr")
class FAMR(UnlearningMethod[FAMRSettings]):
    @property
    def data_read(self) -> str:
        return "forget+retain" if self.settings.retain_kd > 0 else "forget"  # FAMR proper reads D_f alone

    def check_model(self, model: nn.Module) -> None:
        prefixes = self.settings.trainable
        if not prefixes or self.settings.head_only:
            return
        names = [n for n, _ in model.named_parameters()]
        unmatched = [prefix for prefix in prefixes if not any(n.startswith(prefix) for n in names)]
        if unmatched:
            tops = sorted({n.split(".")[0] for n in names})
            raise FamrError(
                f"method.trainable names no parameters of this backbone: {', '.join(unmatched)}; "
                f"use parameter-name prefixes such as {', '.join(tops)}."
            )

    def _trainable(self, model: nn.Module) -> list[nn.Parameter]:
        # head_only (ours, beyond the paper): the backbone's features stay fixed and only the
        # classifier head moves, so retained classes lose only what the head shares with D_f.
        if self.settings.head_only:
            head = classifier_parameter_names(model)
            return [p for n, p in model.named_parameters() if p.requires_grad and n in head]
        prefixes = self.settings.trainable
        if prefixes:
            return [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefixes)]
        return [p for p in model.parameters() if p.requires_grad]

    def _anchored(self, model: nn.Module) -> list[nn.Parameter]:
        trainable = {id(p) for p in self._trainable(model)}
        if self.settings.anchor == "all":
            return [p for p in model.parameters() if id(p) in trainable]
        head = classifier_parameter_names(model)
        want_head = self.settings.anchor == "head"
        return [p for n, p in model.named_parameters() if id(p) in trainable and (n in head) == want_head]

    def _retain_kd_term(self, model: nn.Module, ctx: UnlearnContext) -> Callable[[nn.Module], torch.Tensor] | None:
        """retain_kd (ours, beyond the paper): KL(original || current) on a fixed, seeded buffer of
        ``retain_buffer`` retained samples, one buffer chunk per step. The paper's FAMR reads no
        retained data; this option measures what a little of it buys."""
        size = self.settings.retain_buffer
        if self.settings.retain_kd == 0.0 or size is None:
            return None
        retain = ctx.split.retain_train
        generator = torch.Generator().manual_seed(ctx.seed)
        buffer = retain[torch.randperm(len(retain), generator=generator)[: min(size, len(retain))]]
        x_buf, _ = next(iter(ctx.batches(buffer, len(buffer), shuffle=False)))
        was_training = model.training
        model.eval()
        with torch.no_grad():
            teacher_log_p = F.log_softmax(model(x_buf).float(), dim=1)
        model.train(was_training)
        chunk = min(self.settings.batch_size, len(buffer))
        cursor = [0]

        def term(m: nn.Module) -> torch.Tensor:
            start = cursor[0]
            rows = torch.arange(start, start + chunk, device=x_buf.device) % len(buffer)
            cursor[0] = (start + chunk) % len(buffer)
            student_log_p = F.log_softmax(m(x_buf[rows]).float(), dim=1)
            return F.kl_div(student_log_p, teacher_log_p[rows], log_target=True, reduction="batchmean")

        return term

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        s = self.settings
        lam = s.lam
        params = self._trainable(model)
        anchored = self._anchored(model)
        theta0 = [p.detach().clone() for p in anchored]
        batches = ctx.batches(ctx.split.forget_train, s.batch_size)
        optimizer = method_optimizer(params, s)
        forget_loss = FORGET_LOSSES[s.loss]
        retain_term = self._retain_kd_term(model, ctx)

        def objective(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            loss = forget_loss(m(x))
            return loss if retain_term is None else loss + s.retain_kd * retain_term(m)

        def on_epoch_end(epoch: int, mean_forget_loss: float) -> None:
            anchor = float(anchor_penalty(anchored, theta0))
            ctx.log_metrics(
                {
                    "unlearn/epoch": epoch + 1,
                    "unlearn/forget_loss": mean_forget_loss,
                    "unlearn/anchor": anchor,
                    "unlearn/objective": mean_forget_loss + lam * anchor,
                }
            )

        # Parameters FAMR may not move get no gradient at all, so head_only skips the backbone's backward.
        moving = {id(p) for p in params}
        frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in moving]
        for p in frozen:
            p.requires_grad_(False)
        try:
            result = run_loop(
                model,
                batches,
                objective,
                optimizer,
                epochs=s.epochs,
                hooks=LoopHooks(
                    after_backward=lambda: add_anchor_grad_(anchored, theta0, lam), on_epoch_end=on_epoch_end, set_mode=bn_mode(s.bn)
                ),
                desc="FAMR",
                show_progress=ctx.show_progress,
                divergence_hint="lower method.lr or raise method.lam",
                autocast=ctx.autocast,
            )
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return UnlearnReport(
            epoch_losses=result.epoch_losses,
            certificate={"anchored_param_dist": parameter_distance([p.detach() for p in anchored], theta0), "steps": result.steps},
        )

    def certify(self, model: nn.Module, original: nn.Module, ctx: UnlearnContext, settings: Any) -> dict[str, Any]:
        """g* = ‖∇L_f(θ*)‖ over one un-augmented eval-mode pass of D_f and the stationarity identity (docs/theory.md).
        With retain_kd the objective has a third term, so the residual measures FAMR's own terms only."""
        s = self.settings
        params = self._trainable(model)
        anchored = {id(p) for p in self._anchored(model)}
        names = {id(p): n for n, p in model.named_parameters()}
        reference = dict(original.named_parameters())
        theta0 = [reference[names[id(p)]].detach() if id(p) in anchored else None for p in params]
        # Eval mode: a deterministic function (no dropout), the same one FAMR minimised when BN is
        # frozen (method.bn=eval, the default) and the backbone has no dropout.
        model.eval()
        batches = ctx.batches(ctx.split.forget_train, s.batch_size, shuffle=False)
        grad_f = mean_gradient(model, params, FORGET_LOSSES[s.loss], batches)
        figures = stationarity(grad_f, params, theta0, s.lam)
        if s.head_only:
            figures.update(self._head_predictions(model, original, ctx, settings))
        return figures

    def _head_predictions(self, model: nn.Module, original: nn.Module, ctx: UnlearnContext, settings: Any) -> dict[str, Any]:
        """head_only: FAMR's head update against the exact damped-Newton step of its own objective and the
        influence step that approximates retraining the head without D_f, on the original backbone's
        eval-mode features (it does not move); HVPs + CG, no dense Hessian (certificate/newton.py)."""
        s, split, batch = self.settings, ctx.split, self.settings.batch_size
        before, after = classifier_head(original), classifier_head(model)
        moved, w0, b0 = head_delta(before, after), before.weight, before.bias
        feats_f = head_features(original, ctx.batches(split.forget_train, batch, shuffle=False))
        solve = SolveOptions(tol=settings.newton_tol, max_iter=settings.newton_max_iter)
        objective = FamrHead(feats_f, w0, b0, s.lam, s.loss)
        newton = famr_head_newton(objective, solve=solve)
        exact = famr_head_minimiser(objective, solve=solve) if s.lam > 0 else None
        feats_r = head_features(original, ctx.batches(split.retain_train, batch, shuffle=False))
        labels = ctx.data.y_train.to(feats_r.device)
        y_r, y_f = labels[split.retain_train.to(labels.device)], labels[split.forget_train.to(labels.device)]
        influence = influence_removal_step(feats_r, y_r, feats_f, y_f, w0, b0, damping=settings.influence_damping, solve=solve)

        def compare(step: torch.Tensor | None) -> tuple[float, float]:
            if step is None:  # CG met negative curvature: no step to compare with
                return math.nan, math.nan
            cosine = float(F.cosine_similarity(moved.to(step), step.reshape(-1), dim=0))
            return relative_distance(moved, step), cosine

        newton_dist, newton_cos = compare(newton.delta)
        influence_dist, influence_cos = compare(influence.delta)
        exact_dist = math.nan if exact is None else relative_distance(moved, exact.delta)
        return {
            "head_update_norm": float(moved.norm()),
            # FAMR's head against the exact minimiser of its own head objective (Newton-CG to convergence):
            # how far FAMR's optimizer stopped from the solution it approximates.
            "exact_rel_dist": exact_dist,
            "exact": None if exact is None else {"newton_steps": exact.newton_steps, "grad_norm": exact.grad_norm},
            "newton_rel_dist": newton_dist,
            "newton_cosine": newton_cos,
            "influence_rel_dist": influence_dist,
            # The removal step's length is ill-defined when a whole class leaves (L_r has no finite
            # minimiser), so its direction is the meaningful comparison.
            "influence_cosine": influence_cos,
            "newton": newton.as_dict(),
            "influence": influence.as_dict(),
        }
