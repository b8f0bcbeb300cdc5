"""Run the enabled robustness checks on the original, unlearned and Retrain models of one run.

The original's and Retrain's figures (and the features cross-model figures need) are cached beside
their other evaluations, keyed by model, forget set and check settings: a cache hit costs nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from famr_cli.batches import make_batches
from famr_cli.cache import CacheEntry, build_once, cache_key
from famr_cli.checks import flag, whole
from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError
from famr_cli.evaluate.certificate.head import head_features
from famr_cli.evaluate.model_eval import Predictions
from famr_cli.evaluate.robustness import CHECKS
from famr_cli.evaluate.robustness.base import CheckContext, ModelView, RobustnessCheck
from famr_cli.evaluate.robustness.sets import HeldOutSets, build_sets
from famr_cli.forget import ForgetSplit

log = logging.getLogger("famr")

# Bump when what a cached robustness entry holds changes.
ROBUSTNESS_FORMAT = 1
FEATURE_SETS = ("probe", "pool", "forget", "retain", "anchor")


@dataclass(frozen=True)
class RobustnessSettings:
    """The ``evaluate.robustness`` section: the held-out sets' size and the enabled checks, built once."""

    holdout_per_class: int = 100
    checks: tuple[RobustnessCheck, ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, section: Any) -> RobustnessSettings:
        if section is None:
            return cls()
        values = dict(section)
        if not flag(values.pop("enabled", True), "evaluate.robustness.enabled"):
            return cls()
        per_class = whole(values.pop("holdout_per_class", 100), "evaluate.robustness.holdout_per_class", 100, minimum=1)
        checks = []
        for name, sub in values.items():
            check_cls = CHECKS.get(str(name))
            options = dict(sub or {})
            if not flag(options.pop("enabled", True), f"evaluate.robustness.{name}.enabled"):
                continue
            try:
                checks.append(check_cls(**options))
            except TypeError as err:
                raise FamrError(
                    f"evaluate.robustness.{name} got an unknown setting ({err}); see docs/robustness.md for its keys."
                ) from None
        return cls(per_class, tuple(checks))

    @property
    def enabled(self) -> bool:
        return bool(self.checks)

    @property
    def needs_features(self) -> bool:
        return any(c.needs_features for c in self.checks)

    @property
    def max_shots(self) -> int:
        return max((max(getattr(c, "shots", (1,))) for c in self.checks), default=1)

    def cache_inputs(self) -> dict[str, Any]:
        return {"holdout_per_class": self.holdout_per_class, "checks": {c.name: c.settings() for c in self.checks}}


def model_view(
    name: str, model: nn.Module, preds: Predictions, data: ImageData, split: ForgetSplit, ctx: CheckContext, features: bool
) -> ModelView:
    """``model``'s outputs on D_f and its matched held-out images, and (when needed) its features on the sets."""
    forget = split.forget_train
    outputs = {
        "forget_probs": preds.train_probs[forget],
        "forget_labels": data.y_train[forget],
        "retain_test_probs": preds.test_probs[split.retain_test],
        "retain_test_labels": data.y_test[split.retain_test],
    }
    kind = ctx.sets.kind
    if kind == "style":
        labels = data.y_test if split.relabel_to is None else torch.full_like(data.y_test, split.relabel_to)
        outputs["heldout_probs"] = _probs(model, ctx.batches(split.style(data.x_test)))
        outputs["heldout_labels"] = labels
    else:
        rows = split.forget_test if kind == "class" else torch.isin(data.y_test, data.y_train[forget].unique()).nonzero().squeeze(1)
        outputs["heldout_probs"], outputs["heldout_labels"] = preds.test_probs[rows], data.y_test[rows]
    view = ModelView(name, model, outputs=outputs)
    if features:
        sets = ctx.sets
        for set_name in FEATURE_SETS:
            x = getattr(sets, f"{set_name}_x")
            view.features[set_name] = head_features(model, ctx.batches(x)).cpu() if x is not None and len(x) else torch.zeros(0, 0)
    return view


@torch.no_grad()
def _probs(model: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    was_training = model.training
    model.eval()
    probs = torch.cat([torch.softmax(model(xb).float(), dim=1).cpu() for xb in batches])
    model.train(was_training)
    return probs


def measure(view: ModelView, ctx: CheckContext, settings: RobustnessSettings) -> dict[str, Any]:
    return {check.name: check.measure(view, ctx) for check in settings.checks}


@dataclass
class RobustnessRun:
    """What :func:`assess` needs about the run; ``cache_root`` None keeps nothing on disk."""

    data: ImageData
    split: ForgetSplit
    device: torch.device
    batch_size: int
    seed: int
    settings: RobustnessSettings
    cache_root: Path | None
    forget_digest: dict[str, Any]
    eval_split: str = "test"

    def context(self) -> CheckContext:
        sets = build_sets(
            self.data, self.split, per_class=self.settings.holdout_per_class, max_shots=self.settings.max_shots, seed=self.seed
        )

        def batches(x: torch.Tensor) -> list[torch.Tensor]:
            labels = torch.zeros(len(x), dtype=torch.long)
            return [xb for xb, _ in make_batches(self.data, x, labels, batch_size=self.batch_size, device=self.device, train=False)]

        return CheckContext(sets, self.device, batches, self.seed)


def _cached(run: RobustnessRun, ctx: CheckContext, kind: str, model: nn.Module, model_key: str, preds: Predictions):
    """(view, figures, seconds) of a cached model (original, Retrain), computed once per model and forget set."""
    start = time.perf_counter()
    settings = run.settings

    def compute() -> tuple[ModelView, dict[str, Any]]:
        view = model_view(kind, model, preds, run.data, run.split, ctx, settings.needs_features)
        return view, measure(view, ctx, settings)

    if run.cache_root is None:
        view, figures = compute()
        return view, figures, time.perf_counter() - start
    inputs = {
        "model": model_key,
        "forget": run.forget_digest,
        "split": run.eval_split,
        "seed": run.seed,
        "robustness": settings.cache_inputs(),
        "format": ROBUSTNESS_FORMAT,
    }
    entry = CacheEntry(root=run.cache_root, kind=f"{kind}-robustness", key=cache_key(inputs))

    def load() -> tuple[ModelView, dict[str, Any]] | None:
        loaded = entry.load_tensors()
        if loaded is None:
            return None
        tensors, meta = loaded
        return ModelView(kind, None, features=dict(tensors)), meta["figures"]

    def build() -> tuple[ModelView, dict[str, Any]]:
        view, figures = compute()
        kept = {"forget": view.features["forget"]} if "forget" in view.features else {"none": torch.zeros(0)}
        entry.save_tensors(kept, {"model_key": model_key, "inputs": inputs, "figures": figures})
        return view, figures

    view, figures = build_once(entry.path, f"{kind} model's robustness checks", load, build)
    return view, figures, time.perf_counter() - start


def assess(
    run: RobustnessRun,
    unlearned: tuple[nn.Module, Predictions],
    cached: dict[str, tuple[nn.Module, str, Predictions]],
) -> dict[str, Any]:
    """The ``robustness`` section of results.json: every enabled check on every model, then vs Retrain.

    ``cached`` maps "original" (and "retrain", when it is the reference) to (model, cache key, predictions).
    """
    settings = run.settings
    if not settings.enabled:
        return {}
    ctx = run.context()
    views: dict[str, ModelView] = {}
    figures: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for kind, (model, key, preds) in cached.items():
        views[kind], figures[kind], seconds[kind] = _cached(run, ctx, kind, model, key, preds)
    start = time.perf_counter()
    views["unlearned"] = model_view("unlearned", unlearned[0], unlearned[1], run.data, run.split, ctx, settings.needs_features)
    figures["unlearned"] = measure(views["unlearned"], ctx, settings)
    seconds["unlearned"] = time.perf_counter() - start
    vs_retrain = {}
    if "retrain" in figures:
        for check in settings.checks:
            vs_retrain[check.name] = check.compare(figures["unlearned"][check.name], figures["retrain"][check.name], views)
    headline: dict[str, Any] = {}
    for check in settings.checks:
        headline.update(check.headline(figures["unlearned"][check.name], vs_retrain.get(check.name, {})))
    return {
        "kind": ctx.sets.kind,
        "headline": headline,
        "sets": {**ctx.sets.sources, "sizes": _sizes(ctx.sets)},
        "settings": settings.cache_inputs(),
        **figures,
        "vs_retrain": vs_retrain,
        "seconds": seconds,
    }


def _sizes(sets: HeldOutSets) -> dict[str, int]:
    return {name: len(y) for name in FEATURE_SETS if (y := getattr(sets, f"{name}_y")) is not None}
