"""The experiment, one function per stage: original model -> unlearning -> evaluation -> results."""

from __future__ import annotations

import copy
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
from famr_cli.cache import CacheEntry, cache_key
from famr_cli.dataset import ImageData, load_dataset
from famr_cli.evaluate.metrics import parameter_distance
from famr_cli.evaluate.model_eval import Predictions, predict, predict_all, score, style_scores
from famr_cli.forget import ForgetSplit, make_forget_split, modifies_training_data
from famr_cli.logger import ExperimentLogger
from famr_cli.method import UnlearnContext, UnlearningMethod, UnlearnReport, build_method
from famr_cli.progress import progress_enabled
from famr_cli.runtime import autocast_dtype, resolve_device, seed_everything
from famr_cli.train.classifier import fit_classifier, validate_recipe

log = logging.getLogger("famr")


@dataclass
class OriginalModel:
    model: nn.Module
    key: str
    hit: bool
    seconds: float  # spent obtaining it in this run (training, or loading on a cache hit)
    recorded_train_s: float  # how long its training took when it was first trained


def _section(cfg: DictConfig, name: str) -> dict[str, Any]:
    return OmegaConf.to_container(cfg[name], resolve=True)


# Dataset keys that change how data is loaded, never which data: they stay out of model cache keys.
LOADING_ONLY_KEYS = ("num_workers", "download_dir")


def _model_inputs(cfg: DictConfig) -> dict[str, Any]:
    dataset = {k: v for k, v in _section(cfg, "dataset").items() if k not in LOADING_ONLY_KEYS}
    inputs = {"dataset": dataset, "backbone": _section(cfg, "backbone"), "train": _section(cfg, "train")}
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


def get_original_model(
    cfg: DictConfig,
    data: ImageData,
    device: torch.device,
    logger: ExperimentLogger,
    show_progress: bool,
    autocast: torch.dtype | None = None,
) -> OriginalModel:
    start = time.perf_counter()
    key = original_cache_key(cfg)
    entry = CacheEntry(root=_cache_root(cfg), kind="original", key=key)
    model = build_model(cfg, data, device)
    meta = entry.load(model, device)
    if meta is not None:
        log.info("Original model loaded from cache %s (trained earlier in %.1f s); no training needed.", entry.path, meta["train_s"])
        return OriginalModel(model, key, True, time.perf_counter() - start, float(meta["train_s"]))

    log.info("No cached original model for key %s; training it (%s epochs).", key, cfg.train.epochs)

    epochs = int(cfg.train.epochs)

    def on_epoch_end(epoch: int, loss: float) -> None:
        log.info("original model: epoch %d/%d, loss %.4f, %.0f s elapsed", epoch + 1, epochs, loss, time.perf_counter() - start)
        logger.log({"train/epoch": epoch + 1, "train/loss": loss})

    fit_classifier(
        model, data, None, cfg.train, device, show_progress=show_progress, on_epoch_end=on_epoch_end, desc="original", autocast=autocast
    )
    train_s = time.perf_counter() - start
    entry.save(
        model,
        {
            "train_s": train_s,
            "inputs": _model_inputs(cfg),
            "versions": versions(),
        },
    )
    log.info("Original model trained in %.1f s and cached at %s.", train_s, entry.path)
    return OriginalModel(model, key, False, train_s, train_s)


def original_predictions(cfg: DictConfig, original: OriginalModel, p: Prepared) -> Predictions:
    """The original model's predictions on every image, computed once per model and cached beside it.

    Every forget spec and sweep job scores the same original model, so this saves one full
    evaluation pass per job.
    """
    precision = "fp32" if p.autocast is None else str(p.autocast).removeprefix("torch.")
    entry = CacheEntry(root=_cache_root(cfg), kind="original-predictions", key=cache_key({"model": original.key, "precision": precision}))
    loaded = entry.load_tensors()
    if loaded is not None:
        tensors, _ = loaded
        return Predictions(train=tensors["train"], test=tensors["test"])
    preds = predict_all(original.model, p.data, p.device, int(cfg.eval_batch_size), p.autocast)
    entry.save_tensors({"train": preds.train, "test": preds.test}, {"model_key": original.key, "precision": precision})
    return preds


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


def prepare(cfg: DictConfig) -> Prepared:
    """Validate every config value and load the data; all bad input fails here, before training."""
    device = resolve_device(str(cfg.device))
    autocast = autocast_dtype(str(cfg.precision), device)
    method = build_method(cfg.method)
    validate_recipe(cfg.train)
    data = load_dataset(cfg.dataset, _cache_root(cfg))
    split = make_forget_split(cfg.forget, data)
    # An untrained skeleton (no weight download) lets the method reject options this backbone cannot honour.
    skeleton_cfg = OmegaConf.merge(cfg.backbone, {"pretrained": False})
    method.check_model(build_backbone(skeleton_cfg, data.num_classes, data.in_chans, data.img_size))
    if split.modifies_training_data:
        # Training, unlearning and evaluation all see the stylized (and possibly relabelled) training set.
        data = replace(data, x_train=split.x_train, y_train=split.y_train)
    return Prepared(device, method, data, split, progress_enabled(cfg.progress), autocast)


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
    original = get_original_model(cfg, p.data, p.device, logger, p.show_progress, p.autocast)
    augment = Augment(int(cfg.train.augment.crop_padding), bool(cfg.train.augment.hflip))
    ctx = UnlearnContext(p.data, p.split, p.device, int(cfg.seed), p.show_progress, logger.log, p.autocast, augment)
    unlearned, report, unlearn_s = unlearn(p.method, original.model, ctx)

    eval_start = time.perf_counter()
    batch = int(cfg.eval_batch_size)
    metrics = {
        "original": score(original_predictions(cfg, original, p), p.data, p.split),
        "unlearned": score(predict_all(unlearned, p.data, p.device, batch, p.autocast), p.data, p.split),
    }
    if p.split.style is not None:
        x_styled = p.split.style(p.data.x_test)  # the whole clean test set, stylized once for both models
        for name, model in (("original", original.model), ("unlearned", unlearned)):
            preds = predict(model, x_styled, p.data, p.device, batch, p.autocast)
            metrics[name].update(style_scores(preds, p.data.y_test, metrics[name]["test_acc"], p.split.relabel_to))
    params = [q.detach() for q in unlearned.parameters()]
    reference = [q.detach() for q in original.model.parameters()]
    certificate = {"param_dist": parameter_distance(params, reference), **report.certificate}
    eval_s = time.perf_counter() - eval_start

    return {
        "status": "ok",
        "method": cfg.method.name,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "dataset": {
            "name": cfg.dataset.name,
            "class_names": p.data.class_names,
            "num_train": len(p.data.y_train),
            "num_test": len(p.data.y_test),
            "provenance": p.data.provenance,
        },
        "forget": forget_info,
        "metrics": metrics,
        "gaps": {},
        "timing": {
            "train_s": original.seconds,
            "original_train_s": original.recorded_train_s,
            "unlearn_s": unlearn_s,
            "retrain_s": None,
            "eval_s": eval_s,
        },
        "certificate": certificate,
        "curves": {"unlearn_epoch_loss": report.epoch_losses},
        "cache": {"original": {"key": original.key, "hit": original.hit}},
        "versions": versions(),
        "device": str(p.device),
    }
