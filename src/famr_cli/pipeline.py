"""The experiment, one function per stage: original model -> unlearning -> evaluation -> results."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig

from famr_cli.assessment import assess_robustness, cached_evaluation, certify, evaluate
from famr_cli.errors import FamrError
from famr_cli.evaluate.certificate.run import output_drift
from famr_cli.evaluate.metrics import parameter_distance
from famr_cli.evaluate.report import compare_to_reference
from famr_cli.forget import ForgetSplit
from famr_cli.logger import ExperimentLogger
from famr_cli.method import UnlearnContext, UnlearningMethod, UnlearnReport
from famr_cli.model_store import get_original_model, get_retrain_model, user_original_model
from famr_cli.prepared import Prepared, prepare
from famr_cli.privacy.scores import true_class_log_odds, write_forget_scores
from famr_cli.results_document import RunRecord, results_document
from famr_cli.runtime import seed_everything

log = logging.getLogger("famr")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unlearn(method: UnlearningMethod, original: nn.Module, ctx: UnlearnContext) -> tuple[nn.Module, UnlearnReport, float]:
    """Run ``method`` on a copy of the original; the wall time covers the unlearning step alone."""
    model = copy.deepcopy(original)
    seed_everything(ctx.seed)
    _sync(ctx.device)
    start = time.perf_counter()
    report = method.unlearn(model, ctx)
    _sync(ctx.device)
    return model, report, time.perf_counter() - start


def models_needed(cfg: DictConfig, p: Prepared) -> tuple[str, ...]:
    """The trained models a run asks the store for, in order: the run and every DDP process follow this list."""
    needed = () if p.user_weights is not None else ("original",)
    if p.eval.reference == "retrain" or cfg.method.name == "retrain":
        needed += ("retrain",)
    return needed


def train_models_only(cfg: DictConfig) -> None:
    """A DDP process other than rank 0: join the trainings rank 0's run_experiment asks for, in its order, then stop."""
    p = prepare(cfg)
    logger = ExperimentLogger()
    for kind in models_needed(cfg, p):
        if kind == "original":
            get_original_model(cfg, p, logger, False, p.autocast)
        else:
            get_retrain_model(cfg, p, logger)


FORGET_INDICES_FILE = "forget_indices.txt"


def write_forget_indices(run_dir: Path, split: ForgetSplit) -> Path:
    """D_f's training indices, one per line: a later run can reuse them with forget=sample forget.indices_file=..."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FORGET_INDICES_FILE
    path.write_text("".join(f"{i}\n" for i in split.forget_train.tolist()))
    return path


def save_forget_scores(run_dir: Path | None, p: Prepared, models: dict[str, nn.Module]) -> Path:
    """Each model's true-class log-odds on every D_f image, in the run dir (famr-privacy's population members)."""
    if run_dir is None:
        raise FamrError("evaluate.forget_scores=true writes a file into the run dir; run through famr-run, or set it to false.")
    forget = p.split.forget_train
    scores = {name: true_class_log_odds(m, p.data, forget, p.device, p.eval.batch_size, p.autocast) for name, m in models.items()}
    return write_forget_scores(Path(run_dir), forget, scores)


def run_experiment(cfg: DictConfig, logger: ExperimentLogger, run_dir: Path | None = None) -> dict[str, Any]:
    """The whole experiment; with ``run_dir`` (a Hydra run) the forget set's indices are saved there too."""
    p = prepare(cfg)
    forget_info: dict[str, Any] = {
        "description": p.split.description,
        "classes": p.split.forgotten_classes,
        "num_forget_train": len(p.split.forget_train),
    }
    if run_dir is not None:
        forget_info["indices_file"] = write_forget_indices(Path(run_dir), p.split).name
    log.info(
        "Forgetting %s: %d of %d training samples; device %s.",
        p.split.description,
        len(p.split.forget_train),
        len(p.data.y_train),
        p.device,
    )
    needed = models_needed(cfg, p)
    if "original" in needed:
        original = get_original_model(cfg, p, logger, p.show_progress, p.autocast)
    else:
        original = user_original_model(cfg, p.data, p.device, p.user_weights)
    # Trained (or loaded) before unlearning starts, so it never counts in RTE; method=retrain hands it out.
    retrain = get_retrain_model(cfg, p, logger) if "retrain" in needed else None

    def retrain_reference() -> tuple[nn.Module, float]:
        nonlocal retrain
        if retrain is None:
            retrain = get_retrain_model(cfg, p, logger)
        return retrain.model, retrain.recorded_train_s

    ctx = UnlearnContext(
        p.data, p.split, p.device, int(cfg.seed), p.show_progress, logger.log, p.autocast, p.train.augment, retrain_reference
    )
    unlearned, report, unlearn_s = unlearn(p.method, original.model, ctx)
    if report.recorded_s is not None:
        unlearn_s = report.recorded_s
    certify_start = time.perf_counter()
    diagnostics = certify(p, unlearned, original.model, ctx) if p.eval.certificate else {}
    certify_s = time.perf_counter() - certify_start

    eval_start = time.perf_counter()
    evaluations = {"original": cached_evaluation(cfg, original, p, "original"), "unlearned": evaluate(unlearned, p)}
    if retrain is not None:
        evaluations["retrain"] = cached_evaluation(cfg, retrain, p, "retrain")
    gaps: dict[str, Any] = {}
    if "retrain" in evaluations:
        reference = evaluations["retrain"]
        unlearned_eval = evaluations["unlearned"]
        gaps = compare_to_reference(unlearned_eval.scores, unlearned_eval.preds, reference.scores, reference.preds, p.split, p.eval)
    params = [q.detach() for q in unlearned.parameters()]
    theta0 = [q.detach() for q in original.model.parameters()]
    certificate = {"param_dist": parameter_distance(params, theta0), **report.certificate, **diagnostics}
    if p.eval.certificate:
        before, after = evaluations["original"].preds.test_probs, evaluations["unlearned"].preds.test_probs
        certificate.update(output_drift(before, after, p.split.retain_test))
        certificate["certify_s"] = certify_s
    robustness = assess_robustness(cfg, p, original, retrain, unlearned, evaluations)
    if p.eval.forget_scores:
        models = {"unlearned": unlearned, "original": original.model, **({"retrain": retrain.model} if retrain is not None else {})}
        forget_info["scores_file"] = save_forget_scores(run_dir, p, models).name
    record = RunRecord(
        forget_info,
        original,
        retrain,
        report,
        unlearn_s,
        time.perf_counter() - eval_start,
        {name: e.scores for name, e in evaluations.items()},
        gaps,
        certificate,
        robustness,
    )
    return results_document(cfg, p, record)
