"""The one evaluation every model goes through (original, unlearned, retrain), and the comparison to Retrain.

docs/results_json.md's definitions: accuracies on the forget/retain parts, UA/RA/TA, MIA-Efficacy, the style extras for
forget=style; then Avg. Gap and JS divergence between a method and the retrained gold standard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig

from famr_cli.checks import flag, number, whole
from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError
from famr_cli.evaluate.model_eval import Predictions, predict, score, style_scores
from famr_cli.evaluate.robustness.run import RobustnessSettings
from famr_cli.evaluate.unlearning_metrics import avg_gap, js_divergence, mia_efficacy, unlearning_scores
from famr_cli.forget import ForgetSplit

log = logging.getLogger("famr")

REFERENCES = ("retrain", "none")
EVAL_SPLITS = ("test", "val")


@dataclass(frozen=True)
class EvalSettings:
    """The ``evaluate`` config section, validated; its defaults live in conf/evaluate/default.yaml alone."""

    reference: str
    mia: bool
    mia_max_shadow: int
    batch_size: int  # the root key eval_batch_size
    autocast: torch.dtype | None
    seed: int  # the root key seed
    certificate: bool
    newton_tol: float
    newton_max_iter: int
    influence_damping: float
    split: str  # "val": score on dataset.val_per_class's held-out images instead of the test set
    robustness: RobustnessSettings
    forget_scores: bool = False  # write each model's per-example log-odds on D_f (famr-privacy's populations)

    @classmethod
    def from_config(cls, cfg: DictConfig, autocast: torch.dtype | None) -> EvalSettings:
        section = cfg.evaluate
        for key in ("reference", "mia", "mia_max_shadow", "certificate", "newton", "split", "robustness", "forget_scores"):
            if key not in section:
                raise FamrError(
                    f"evaluate needs evaluate.{key}, which the config does not set; "
                    "restore it (its default is in conf/evaluate/default.yaml)."
                )
        if section.reference not in REFERENCES:
            raise FamrError(f"Unknown evaluate.reference '{section.reference}': use retrain (train the gold standard once) or none.")
        mia = flag(section.mia, "evaluate.mia")
        if whole(section.mia_max_shadow, "evaluate.mia_max_shadow", 5000) < 1:
            raise FamrError(f"evaluate.mia_max_shadow must be at least 1 (got {section.mia_max_shadow}); try 5000.")
        batch_size = whole(cfg.eval_batch_size, "eval_batch_size", 1024, minimum=1)
        seed = whole(cfg.seed, "seed", 0, minimum=0)
        certificate = flag(section.certificate, "evaluate.certificate")
        newton = section.newton
        tol = number(newton.tol, "evaluate.newton.tol", "1e-8")
        max_iter = whole(newton.max_iter, "evaluate.newton.max_iter", 1000)
        damping = number(newton.influence_damping, "evaluate.newton.influence_damping", "1e-3")
        if not (0 < tol < 1) or max_iter < 1 or damping < 0:
            raise FamrError(
                "evaluate.newton needs 0 < tol < 1, max_iter >= 1 and influence_damping >= 0 "
                f"(got tol={tol}, max_iter={max_iter}, influence_damping={damping}); the defaults are 1e-8, 1000, 1e-3."
            )
        shadow = int(section.mia_max_shadow)
        split = section.split
        if split not in EVAL_SPLITS:
            raise FamrError(f"Unknown evaluate.split '{split}': use test (the tables' figures) or val (famr-tune's selection).")
        robustness = RobustnessSettings.from_config(section.robustness)
        forget_scores = flag(section.forget_scores, "evaluate.forget_scores")
        return cls(
            str(section.reference),
            mia,
            shadow,
            batch_size,
            autocast,
            seed,
            certificate,
            tol,
            max_iter,
            damping,
            str(split),
            robustness,
            forget_scores,
        )

    def cache_inputs(self) -> dict[str, Any]:
        """What changes a cached model's scores (not the reference choice: scores never depend on it)."""
        inputs = {"mia": self.mia, "mia_max_shadow": self.mia_max_shadow, "seed": self.seed}
        return inputs if self.split == "test" else {**inputs, "split": self.split}


def membership_attack(preds: Predictions, data: ImageData, split: ForgetSplit, settings: EvalSettings) -> dict[str, float]:
    """MIA-Efficacy (SalUn's recipe): shadow members are the first N_test retained training samples,
    shadow non-members the test samples outside the forgotten classes; the targets are D_f."""
    if preds.train_probs is None or preds.test_probs is None:
        raise ValueError("membership_attack needs softmax probabilities (Predictions.from_probs)")
    nonmembers = split.retain_test
    members = split.retain_train[: len(nonmembers)]
    forget = split.forget_train
    return mia_efficacy(
        preds.train_probs[members],
        data.y_train[members],
        preds.test_probs[nonmembers],
        data.y_test[nonmembers],
        preds.train_probs[forget],
        data.y_train[forget],
        max_shadow=settings.mia_max_shadow,
        seed=settings.seed,
    )


def evaluate_model_scores(
    model: nn.Module, preds: Predictions, data: ImageData, split: ForgetSplit, device: torch.device, settings: EvalSettings
) -> dict[str, Any]:
    """Every figure results.json reports for one model, from its predictions (and the model itself for
    the stylized test set)."""
    scores: dict[str, Any] = score(preds, data, split)
    # TA is the retained-class test accuracy: for sample and style specs retain_test is the whole (clean) test set.
    scores.update(unlearning_scores(scores["forget_train_acc"], scores["retain_train_acc"], scores["retain_test_acc"]))
    if settings.mia:
        attack = membership_attack(preds, data, split, settings)
        scores["mia_efficacy"] = attack["mia_efficacy"]
        scores["mia"] = {k: v for k, v in attack.items() if k != "mia_efficacy"}
    if split.style is not None:
        stylized = predict(model, split.style(data.x_test), data, device, settings.batch_size, settings.autocast)
        scores.update(style_scores(stylized, data.y_test, scores["test_acc"], split.relabel_to))
    return scores


def gap_keys(settings: EvalSettings) -> tuple[str, ...]:
    return ("UA", "RA", "TA", "MIA") if settings.mia else ("UA", "RA", "TA")


def compare_to_reference(
    method_scores: dict[str, Any],
    method_preds: Predictions,
    reference_scores: dict[str, Any],
    reference_preds: Predictions,
    split: ForgetSplit,
    settings: EvalSettings,
) -> dict[str, Any]:
    """|method − Retrain| per metric, their mean (Avg. Gap), and the JS divergence of the two models'
    outputs on D_f and on the test set."""

    def figures(scores: dict[str, Any]) -> dict[str, Any]:
        return {"UA": scores["UA"], "RA": scores["RA"], "TA": scores["TA"], "MIA": scores.get("mia_efficacy")}

    gaps: dict[str, Any] = avg_gap(figures(method_scores), figures(reference_scores), keys=gap_keys(settings))
    gaps["avg_gap_over"] = list(gap_keys(settings))
    forget = split.forget_train
    gaps["js_forget"] = js_divergence(method_preds.train_probs[forget], reference_preds.train_probs[forget])
    gaps["js_test"] = js_divergence(method_preds.test_probs, reference_preds.test_probs)
    return gaps
