"""Every model's assessment in a run: its scores (cached for the original and Retrain), the certificate and the robustness checks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig

from famr_cli.cache import CacheEntry, build_once, cache_key, cache_root
from famr_cli.errors import DivergedError, FamrError
from famr_cli.evaluate.model_eval import Predictions, predict_all
from famr_cli.evaluate.report import evaluate_model_scores
from famr_cli.evaluate.robustness.run import RobustnessRun, RobustnessSettings
from famr_cli.evaluate.robustness.run import assess as assess_checks
from famr_cli.method import UnlearnContext
from famr_cli.model_store import TrainedModel, retrain_inputs
from famr_cli.prepared import Prepared

log = logging.getLogger("famr")

# Bump when what a cached evaluation holds changes (2: softmax probabilities and the model's scores).
EVALUATION_FORMAT = 2


@dataclass
class Evaluation:
    preds: Predictions
    scores: dict[str, Any]


def evaluate(model: nn.Module, p: Prepared, name: str = "unlearned") -> Evaluation:
    preds = predict_all(model, p.data, p.device, p.eval.batch_size, p.autocast)
    if not (torch.isfinite(preds.train_probs).all() and torch.isfinite(preds.test_probs).all()):
        # Finite weights can still overflow in the forward pass (e.g. after a gradient-ascent blow-up).
        raise DivergedError(f"The {name} model's outputs are not finite (NaN or inf); lower method.lr or use fewer epochs.")
    return Evaluation(preds, evaluate_model_scores(model, preds, p.data, p.split, p.device, p.eval))


def cached_evaluation(cfg: DictConfig, trained: TrainedModel, p: Prepared, kind: str) -> Evaluation:
    """A cached model's predictions and scores, computed once per model and forget set and saved beside it.

    Every sweep job scores the same original and retrain models, so this saves their evaluation
    passes (and membership-inference fits) in every job after the first.
    """
    digest = retrain_inputs(cfg, p.split)["retrain_without"]  # the forget set decides the forget/retain scores
    precision = "fp32" if p.autocast is None else str(p.autocast).removeprefix("torch.")
    inputs = {"model": trained.key, "forget": digest, "precision": precision, "eval": p.eval.cache_inputs(), "format": EVALUATION_FORMAT}
    entry = CacheEntry(root=cache_root(cfg), kind=f"{kind}-evaluation", key=cache_key(inputs))

    def load() -> Evaluation | None:
        loaded = entry.load_tensors()
        if loaded is None:
            return None
        tensors, meta = loaded
        return Evaluation(Predictions.from_probs(tensors["train_probs"], tensors["test_probs"]), meta["scores"])

    def compute() -> Evaluation:
        result = evaluate(trained.model, p, kind)
        entry.save_tensors(
            {"train_probs": result.preds.train_probs, "test_probs": result.preds.test_probs},
            {"model_key": trained.key, "inputs": inputs, "scores": result.scores},
        )
        return result

    return build_once(entry.path, f"{kind} model's evaluation", load, compute)


def original_predictions(cfg: DictConfig, original: TrainedModel, p: Prepared) -> Predictions:
    return cached_evaluation(cfg, original, p, "original").preds


def certify(p: Prepared, unlearned: nn.Module, original: nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
    """The method's certificate figures; a diagnostic, so a failure here is reported and never costs the results."""
    try:
        return p.method.certify(unlearned, original, ctx, p.eval)
    except Exception as err:  # e.g. a backbone without a linear head, or out of memory for the feature pass
        log.warning("The certificate could not be computed (%s: %s); the run's metrics are unaffected.", type(err).__name__, err)
        return {"certificate_error": f"{type(err).__name__}: {err}"}


def robustness_run(cfg: DictConfig, p: Prepared, settings: RobustnessSettings | None = None) -> RobustnessRun:
    """The robustness checks' view of this run (``settings`` in place of ``evaluate.robustness`` when given)."""
    digest = retrain_inputs(cfg, p.split)["retrain_without"]
    checks = p.eval.robustness if settings is None else settings
    return RobustnessRun(p.data, p.split, p.device, p.eval.batch_size, p.eval.seed, checks, cache_root(cfg), digest, p.eval.split)


def assess_robustness(
    cfg: DictConfig,
    p: Prepared,
    original: TrainedModel,
    retrain: TrainedModel | None,
    unlearned: nn.Module,
    evaluations: dict[str, Evaluation],
) -> dict[str, Any]:
    """The robustness checks (relearning, probe, held-out, calibration); a diagnostic, so an unexpected
    failure is reported in the section and never costs the run's metrics."""
    if not p.eval.robustness.enabled:
        return {}
    run = robustness_run(cfg, p)
    cached = {"original": (original.model, original.key, evaluations["original"].preds)}
    if retrain is not None:
        cached["retrain"] = (retrain.model, retrain.key, evaluations["retrain"].preds)
    try:
        return assess_checks(run, (unlearned, evaluations["unlearned"].preds), cached)
    except FamrError:
        raise
    except Exception as err:  # e.g. a backbone without timm's forward_head
        log.warning("The robustness checks could not be computed (%s: %s); the run's metrics are unaffected.", type(err).__name__, err)
        return {"error": f"{type(err).__name__}: {err}"}
