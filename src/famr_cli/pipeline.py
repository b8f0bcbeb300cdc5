"""The experiment, one function per stage: original model -> unlearning -> evaluation -> results."""

from __future__ import annotations

import copy
import hashlib
import logging
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

import famr_cli
from famr_cli.backbone import build_backbone
from famr_cli.batches import Augment
from famr_cli.cache import CacheEntry, build_once, cache_key, cache_lock
from famr_cli.dataset import ImageData, load_dataset
from famr_cli.dataset.subsets import model_relevant
from famr_cli.errors import DivergedError, FamrError
from famr_cli.evaluate.certificate.run import output_drift
from famr_cli.evaluate.metrics import parameter_distance
from famr_cli.evaluate.model_eval import Predictions, predict_all
from famr_cli.evaluate.report import EvalSettings, compare_to_reference, evaluate_model_scores
from famr_cli.evaluate.robustness.run import RobustnessRun
from famr_cli.evaluate.robustness.run import assess as assess_checks
from famr_cli.forget import ForgetSplit, make_forget_split, modifies_training_data
from famr_cli.logger import ExperimentLogger
from famr_cli.method import UnlearnContext, UnlearningMethod, UnlearnReport, build_method
from famr_cli.progress import progress_enabled
from famr_cli.runtime import autocast_dtype, describe_device, resolve_device, seed_everything
from famr_cli.train.checkpoint import TrainingCheckpoint
from famr_cli.train.classifier import fit_classifier
from famr_cli.train.distributed import Shard, broadcast_flag, current_shard, local_device
from famr_cli.validate import validate_run_settings
from famr_cli.weights import UserWeights, load_into, read_user_weights

log = logging.getLogger("famr")


@dataclass
class TrainedModel:
    """A model trained with the ``train`` recipe (the original, or the retrain reference), maybe from the cache."""

    model: nn.Module
    key: str
    hit: bool
    seconds: float  # spent obtaining it in this run (training, or loading on a cache hit)
    recorded_train_s: float  # how long its training took when it was first trained


OriginalModel = TrainedModel  # the name earlier code and tests use


def _section(cfg: DictConfig, name: str) -> dict[str, Any]:
    return OmegaConf.to_container(cfg[name], resolve=True)


# Dataset keys that change how data is loaded, never which data: they stay out of model cache keys.
LOADING_ONLY_KEYS = ("num_workers", "download_dir")
NEUTRAL_AUGMENT = {"padding_mode": "zeros", "cutout": 0}


def _model_inputs(cfg: DictConfig) -> dict[str, Any]:
    dataset = model_relevant({k: v for k, v in _section(cfg, "dataset").items() if k not in LOADING_ONLY_KEYS})
    train = _section(cfg, "train")
    # Augmentation keys added after models were cached: at their "off" values they leave the key unchanged.
    train["augment"] = {k: v for k, v in train.get("augment", {}).items() if NEUTRAL_AUGMENT.get(k, object()) != v}
    inputs = {"dataset": dataset, "backbone": _section(cfg, "backbone"), "train": train}
    if modifies_training_data(cfg.forget):
        # forget=style trains the original model on stylized (maybe relabelled) images: the spec is an input.
        # Other specs only choose among training samples and keep their keys unchanged.
        inputs["forget"] = _section(cfg, "forget")
    return inputs


def original_cache_key(cfg: DictConfig) -> str:
    """Everything that determines the original model, and nothing that does not (e.g. method)."""
    return cache_key(_model_inputs(cfg))


def build_model(cfg: DictConfig, data: ImageData, device: torch.device) -> nn.Module:
    seed_everything(int(cfg.train.seed))  # same seed -> same initial weights
    model = build_backbone(cfg.backbone, data.num_classes, data.in_chans, data.img_size).to(device)
    if cfg.channels_last:
        # NHWC convolutions are faster on CUDA tensor cores and on CPU (oneDNN); inputs follow the weights.
        model = model.to(memory_format=torch.channels_last)
    return model


def retrain_inputs(cfg: DictConfig, split: ForgetSplit) -> dict[str, Any]:
    """The original model's inputs plus D_f itself: the retrain reference depends on which samples left.

    The forget set is hashed by its indices rather than by the ``forget`` section, so two specs that
    pick the same samples (e.g. a seed and the index file it produced) share one reference.
    """
    digest = hashlib.sha256(split.forget_train.to(torch.int64).numpy().tobytes()).hexdigest()
    return {**_model_inputs(cfg), "retrain_without": {"num_forget": len(split.forget_train), "indices_sha256": digest}}


def get_trained_model(
    cfg: DictConfig,
    data: ImageData,
    device: torch.device,
    logger: ExperimentLogger,
    *,
    kind: str,
    inputs: dict[str, Any],
    indices: torch.Tensor | None,
    show_progress: bool = False,
    autocast: torch.dtype | None = None,
) -> TrainedModel:
    """The model the ``train`` recipe gives on the training rows ``indices`` (all when None), trained once.

    ``kind`` names the cache folder and the log lines ("original", "retrain"); ``inputs`` is everything
    that determines the model, hashed into its cache key.
    """
    start = time.perf_counter()
    key = cache_key(inputs)
    entry = CacheEntry(root=_cache_root(cfg), kind=kind, key=key)
    shard = current_shard()
    main = shard is None or shard.is_main
    model = build_model(cfg, data, device)  # same seed as the original: same initial weights

    def load() -> TrainedModel | None:
        meta = entry.load(model, device)
        if meta is None:
            return None
        trained_s = float(meta["train_s"])
        log.info("%s model loaded from cache %s (trained earlier in %.1f s); no training needed.", kind.capitalize(), entry.path, trained_s)
        return TrainedModel(model, key, True, time.perf_counter() - start, trained_s)

    def train() -> TrainedModel:
        epochs = int(cfg.train.epochs)
        samples = len(data.y_train) if indices is None else len(indices)
        log.info("No cached %s model for key %s; training it (%d epochs on %d samples).", kind, key, epochs, samples)
        # Beside the entry, hidden like its lock: an interrupted training resumes from here.
        state = TrainingCheckpoint(entry.path.with_name(f".{key}.training"), int(cfg.checkpoint_every), f"{kind} model", writer=main)
        started = time.perf_counter()

        def on_epoch_end(epoch: int, loss: float) -> None:
            elapsed = time.perf_counter() - started
            log.info("%s model: epoch %d/%d, loss %.4f, %.0f s elapsed", kind, epoch + 1, epochs, loss, elapsed)
            prefix = "train" if kind == "original" else kind  # the original's curves keep their published names
            logger.log({f"{prefix}/epoch": epoch + 1, f"{prefix}/loss": loss})

        fitted = fit_classifier(
            model,
            data,
            indices,
            cfg.train,
            device,
            show_progress=show_progress,
            on_epoch_end=on_epoch_end,
            desc=kind,
            autocast=autocast,
            checkpoint=state,
            compile_model=bool(cfg.get("compile", False)),
        )
        # The loop's own clock, so it covers epochs run before an interruption and never time spent waiting for a lock.
        train_s = fitted.seconds
        at_save = {"final_epoch_loss": fitted.epoch_losses[-1], "epoch_losses": fitted.epoch_losses}
        if fitted.resumed_from_epoch:
            at_save["resumed_from_epoch"] = fitted.resumed_from_epoch
        if shard is not None:
            at_save["ddp_processes"] = shard.world_size
        if main:
            entry.save(model, {"train_s": train_s, "inputs": inputs, "versions": versions(), "metrics": at_save})
        state.clear()
        log.info("%s model trained in %.1f s and cached at %s.", kind.capitalize(), train_s, entry.path)
        return TrainedModel(model, key, False, train_s, train_s)

    if shard is None:
        return build_once(entry.path, f"{kind} model", load, train)
    return _train_distributed(entry.path, f"{kind} model", load, train, shard)


def _train_distributed(path: Path, what: str, load, train, shard: Shard) -> TrainedModel | None:
    """``build_once`` for DDP: rank 0 checks the cache and holds the lock; every process trains on a miss.

    On a hit the other processes have nothing to do (only rank 0 unlearns and evaluates), so they get None.
    """
    if not shard.is_main:
        return None if broadcast_flag(False, shard) else train()
    with cache_lock(path, what):
        found = load()
        if broadcast_flag(found is not None, shard):
            return found
        return train()


def user_original_model(cfg: DictConfig, data: ImageData, device: torch.device, weights: UserWeights) -> TrainedModel:
    """The model ``original_weights`` names, in place of training one; keyed by its sha256 for the evaluation cache."""
    start = time.perf_counter()
    model = build_model(cfg, data, device)
    load_into(model, weights, str(cfg.backbone.name))
    key = cache_key({"dataset": _model_inputs(cfg)["dataset"], "backbone": _section(cfg, "backbone"), "weights_sha256": weights.sha256})
    log.info("Original model loaded from original_weights=%s (sha256 %s…); no training needed.", weights.path, weights.sha256[:12])
    return TrainedModel(model, key, False, time.perf_counter() - start, 0.0)


def get_original_model(
    cfg: DictConfig,
    data: ImageData,
    device: torch.device,
    logger: ExperimentLogger,
    show_progress: bool,
    autocast: torch.dtype | None = None,
) -> TrainedModel:
    return get_trained_model(
        cfg, data, device, logger, kind="original", inputs=_model_inputs(cfg), indices=None, show_progress=show_progress, autocast=autocast
    )


def get_retrain_model(cfg: DictConfig, p: Prepared, logger: ExperimentLogger) -> TrainedModel:
    """Retrain, the gold standard: the same recipe and seed on D_r = D \\ D_f, trained once per forget set."""
    return get_trained_model(
        cfg,
        p.data,
        p.device,
        logger,
        kind="retrain",
        inputs=retrain_inputs(cfg, p.split),
        indices=p.split.retain_train,
        show_progress=p.show_progress,
        autocast=p.autocast,
    )


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
    entry = CacheEntry(root=_cache_root(cfg), kind=f"{kind}-evaluation", key=cache_key(inputs))

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


def _cache_root(cfg: DictConfig) -> Path:
    return Path(cfg.cache_dir).expanduser()


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


def certify(p: Prepared, unlearned: nn.Module, original: nn.Module, ctx: UnlearnContext) -> dict[str, Any]:
    """The method's certificate figures; a diagnostic, so a failure here is reported and never costs the results."""
    try:
        return p.method.certify(unlearned, original, ctx, p.eval)
    except Exception as err:  # e.g. a backbone without a linear head, or out of memory for the feature pass
        log.warning("The certificate could not be computed (%s: %s); the run's metrics are unaffected.", type(err).__name__, err)
        return {"certificate_error": f"{type(err).__name__}: {err}"}


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
    run = RobustnessRun(
        p.data,
        p.split,
        p.device,
        p.eval.batch_size,
        p.eval.seed,
        p.eval.robustness,
        _cache_root(cfg),
        retrain_inputs(cfg, p.split)["retrain_without"],
        p.eval.split,
    )
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


def versions() -> dict[str, str]:
    return {
        "famr": famr_cli.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


@dataclass
class Prepared:
    """The validated inputs of an experiment: nothing expensive has run yet."""

    device: torch.device
    method: UnlearningMethod
    data: ImageData
    split: ForgetSplit
    show_progress: bool
    autocast: torch.dtype | None
    eval: EvalSettings
    user_weights: UserWeights | None = None  # original_weights: a model the user trained, unlearned instead of ours


def prepare(cfg: DictConfig) -> Prepared:
    """Validate every config value and load the data; all bad input fails here, before training."""
    # From the config alone, before any data is decoded: a bad value costs seconds.
    skeleton = validate_run_settings(cfg)
    device = local_device(resolve_device(str(cfg.device)))
    autocast = autocast_dtype(str(cfg.precision), device)
    method = build_method(cfg.method)
    settings = EvalSettings.from_config(cfg, autocast)
    user_weights = read_user_weights(cfg.original_weights) if cfg.get("original_weights") else None
    if user_weights is not None and skeleton is not None:
        load_into(skeleton, user_weights, str(cfg.backbone.name))  # a misfit fails now, before any decoding or training
    data = on_evaluation_split(load_dataset(cfg.dataset, _cache_root(cfg)), settings.split)
    split = make_forget_split(cfg.forget, data)
    if skeleton is None:
        # A dataset that cannot describe itself from its config: check the backbone against the loaded data.
        skeleton = build_backbone(OmegaConf.merge(cfg.backbone, {"pretrained": False}), data.num_classes, data.in_chans, data.img_size)
        method.check_model(skeleton)
        if user_weights is not None:
            load_into(skeleton, user_weights, str(cfg.backbone.name))
    if split.modifies_training_data:
        # Training, unlearning and evaluation all see the stylized (and possibly relabelled) training set.
        data = replace(data, x_train=split.x_train, y_train=split.y_train)
    return Prepared(device, method, data, split, progress_enabled(cfg.progress), autocast, settings, user_weights)


def on_evaluation_split(data: ImageData, split: str) -> ImageData:
    """``data`` with the validation split in the test split's place when ``evaluate.split=val``: every
    test-set figure (TA, forget-test accuracy, the MIA's shadow non-members) is then a validation figure."""
    if split == "test":
        return data
    if data.x_val is None:
        raise FamrError("evaluate.split=val needs a validation split: set dataset.val_per_class (e.g. dataset.val_per_class=100).")
    return replace(data, x_test=data.x_val, y_test=data.y_val, provenance={**data.provenance, "evaluated_on": "val"})


def train_models_only(cfg: DictConfig) -> None:
    """A DDP process other than rank 0: join the trainings rank 0's run_experiment asks for, in its order, then stop."""
    p = prepare(cfg)
    logger = ExperimentLogger()
    if p.user_weights is None:
        get_original_model(cfg, p.data, p.device, logger, False, p.autocast)
    if p.eval.reference == "retrain" or cfg.method.name == "retrain":
        get_retrain_model(cfg, p, logger)


FORGET_INDICES_FILE = "forget_indices.txt"


def write_forget_indices(run_dir: Path, split: ForgetSplit) -> Path:
    """D_f's training indices, one per line: a later run can reuse them with forget=sample forget.indices_file=..."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FORGET_INDICES_FILE
    path.write_text("".join(f"{i}\n" for i in split.forget_train.tolist()))
    return path


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
    if p.user_weights is not None:
        original = user_original_model(cfg, p.data, p.device, p.user_weights)
    else:
        original = get_original_model(cfg, p.data, p.device, logger, p.show_progress, p.autocast)
    retrain: TrainedModel | None = None

    def retrain_reference() -> tuple[nn.Module, float]:
        nonlocal retrain
        if retrain is None:
            retrain = get_retrain_model(cfg, p, logger)
        return retrain.model, retrain.recorded_train_s

    if p.eval.reference == "retrain":
        retrain_reference()  # trained (or loaded) before unlearning starts, so it never counts in RTE
    augment = Augment.from_config(cfg.train.augment)
    ctx = UnlearnContext(p.data, p.split, p.device, int(cfg.seed), p.show_progress, logger.log, p.autocast, augment, retrain_reference)
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
    metrics = {name: e.scores for name, e in evaluations.items()}
    gaps: dict[str, Any] = {}
    if "retrain" in evaluations:
        reference = evaluations["retrain"]
        gaps = compare_to_reference(
            metrics["unlearned"], evaluations["unlearned"].preds, reference.scores, reference.preds, p.split, p.eval
        )
    params = [q.detach() for q in unlearned.parameters()]
    theta0 = [q.detach() for q in original.model.parameters()]
    certificate = {"param_dist": parameter_distance(params, theta0), **report.certificate, **diagnostics}
    if p.eval.certificate:
        before, after = evaluations["original"].preds.test_probs, evaluations["unlearned"].preds.test_probs
        certificate.update(output_drift(before, after, p.split.retain_test))
        certificate["certify_s"] = certify_s
    robustness = assess_robustness(cfg, p, original, retrain, unlearned, evaluations)
    eval_s = time.perf_counter() - eval_start
    retrain_s = None if retrain is None else retrain.recorded_train_s
    cache_info: dict[str, Any] = {"original": {"key": original.key, "hit": original.hit}}
    if p.user_weights is not None:
        cache_info["original"]["user_weights"] = {"path": str(p.user_weights.path), "sha256": p.user_weights.sha256}
    if retrain is not None:
        cache_info["retrain"] = {"key": retrain.key, "hit": retrain.hit}

    return {
        "status": "ok",
        "method": cfg.method.name,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "dataset": {
            "name": cfg.dataset.name,
            "class_names": p.data.class_names,
            "num_train": len(p.data.y_train),
            "num_test": len(p.data.y_test),
            "eval_split": p.eval.split,  # "val": every test figure above is on the held-out validation images
            "provenance": p.data.provenance,
        },
        "forget": forget_info,
        "metrics": metrics,
        "gaps": gaps,
        "timing": {
            "train_s": original.seconds,
            "original_train_s": original.recorded_train_s,
            "unlearn_s": unlearn_s,
            "retrain_s": retrain_s,
            "rte_frac_of_retrain": None if not retrain_s else unlearn_s / retrain_s,
            "eval_s": eval_s,
            "robustness_s": sum((robustness.get("seconds") or {}).values()),  # inside eval_s
        },
        "certificate": certificate,
        "robustness": robustness,
        "curves": {"unlearn_epoch_loss": report.epoch_losses},
        "cache": cache_info,
        "versions": versions(),
        "device": str(p.device),
        "device_name": describe_device(p.device),
    }
