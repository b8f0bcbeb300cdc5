"""The trained-model store: the original model and the Retrain reference, each trained once per key and cached."""

from __future__ import annotations

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
from famr_cli.cache import CacheEntry, build_once, cache_key, cache_lock, cache_root
from famr_cli.dataset import ImageData
from famr_cli.dataset.subsets import model_relevant
from famr_cli.forget import ForgetSplit, modifies_training_data
from famr_cli.logger import ExperimentLogger
from famr_cli.prepared import Prepared
from famr_cli.runtime import seed_everything
from famr_cli.source_commit import current_commit
from famr_cli.train.checkpoint import TrainingCheckpoint
from famr_cli.train.classifier import fit_classifier
from famr_cli.train.distributed import Shard, broadcast_flag, current_shard
from famr_cli.train.settings import TrainSettings
from famr_cli.weights import UserWeights, load_into

log = logging.getLogger("famr")


@dataclass
class TrainedModel:
    """A model trained with the ``train`` recipe (the original, or the retrain reference), maybe from the cache."""

    model: nn.Module
    key: str
    hit: bool
    seconds: float  # spent obtaining it in this run (training, or loading on a cache hit)
    recorded_train_s: float  # how long its training took when it was first trained


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


def build_model(cfg: DictConfig, data: ImageData, device: torch.device, seed: int | None = None) -> nn.Module:
    """The backbone with the initial weights of ``seed`` (``train.seed`` when None): same seed, same weights."""
    seed_everything(int(cfg.train.seed) if seed is None else seed)
    model = build_backbone(cfg.backbone, data.num_classes, data.in_chans, data.img_size).to(device)
    if cfg.channels_last:
        # NHWC convolutions are faster on CUDA tensor cores and on CPU (oneDNN); inputs follow the weights.
        model = model.to(memory_format=torch.channels_last)
    return model


def retrain_seed(cfg: DictConfig) -> int:
    """The training seed of Retrain: ``retrain_seed`` when set, else ``train.seed`` (the original's)."""
    chosen = cfg.get("retrain_seed")
    return int(cfg.train.seed) if chosen is None else int(chosen)


def retrain_inputs(cfg: DictConfig, split: ForgetSplit) -> dict[str, Any]:
    """The original model's inputs, with Retrain's training seed, plus D_f itself: the retrain reference
    depends on which samples left.

    The forget set is hashed by its indices rather than by the ``forget`` section, so two specs that
    pick the same samples (e.g. a seed and the index file it produced) share one reference. Retrain's seed
    goes in as ``train.seed``, so ``retrain_seed=3`` beside one original finds the Retrain that
    ``train.seed=3`` trains (famr-privacy's populations share their models that way).
    """
    inputs = _model_inputs(cfg)
    inputs["train"]["seed"] = retrain_seed(cfg)
    digest = hashlib.sha256(split.forget_train.to(torch.int64).numpy().tobytes()).hexdigest()
    return {**inputs, "retrain_without": {"num_forget": len(split.forget_train), "indices_sha256": digest}}


def get_trained_model(
    cfg: DictConfig,
    data: ImageData,
    device: torch.device,
    logger: ExperimentLogger,
    *,
    kind: str,
    inputs: dict[str, Any],
    indices: torch.Tensor | None,
    recipe: TrainSettings,
    show_progress: bool = False,
    autocast: torch.dtype | None = None,
) -> TrainedModel:
    """The model the ``train`` recipe gives on the training rows ``indices`` (all when None), trained once.

    ``kind`` names the cache folder and the log lines ("original", "retrain"); ``inputs`` is everything
    that determines the model, hashed into its cache key; ``recipe`` is the ``train`` section, parsed.
    """
    start = time.perf_counter()
    key = cache_key(inputs)
    entry = CacheEntry(root=cache_root(cfg), kind=kind, key=key)
    shard = current_shard()
    main = shard is None or shard.is_main
    model = build_model(cfg, data, device, recipe.seed)  # Retrain with the original's seed starts from the same weights

    def load() -> TrainedModel | None:
        meta = entry.load(model, device)
        if meta is None:
            return None
        trained_s = float(meta["train_s"])
        log.info("%s model loaded from cache %s (trained earlier in %.1f s); no training needed.", kind.capitalize(), entry.path, trained_s)
        return TrainedModel(model, key, True, time.perf_counter() - start, trained_s)

    def train() -> TrainedModel:
        epochs = recipe.epochs
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
            recipe,
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
    cfg: DictConfig, p: Prepared, logger: ExperimentLogger, show_progress: bool, autocast: torch.dtype | None = None
) -> TrainedModel:
    """The original model: the ``train`` recipe on the whole training set, trained once per key.

    ``show_progress`` and ``autocast`` are the caller's, not ``p``'s: DDP followers train without bars.
    """
    return get_trained_model(
        cfg,
        p.data,
        p.device,
        logger,
        kind="original",
        inputs=_model_inputs(cfg),
        indices=None,
        recipe=p.train,
        show_progress=show_progress,
        autocast=autocast,
    )


def get_retrain_model(cfg: DictConfig, p: Prepared, logger: ExperimentLogger) -> TrainedModel:
    """Retrain, the gold standard: the same recipe on D_r = D \\ D_f, trained once per forget set and seed
    (the original's seed unless ``retrain_seed`` is set)."""
    return get_trained_model(
        cfg,
        p.data,
        p.device,
        logger,
        kind="retrain",
        inputs=retrain_inputs(cfg, p.split),
        indices=p.split.retain_train,
        recipe=replace(p.train, seed=retrain_seed(cfg)),
        show_progress=p.show_progress,
        autocast=p.autocast,
    )


def versions() -> dict[str, str]:
    return {
        "famr": famr_cli.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "commit": current_commit(),  # the checkout's HEAD, "unknown" for an installed wheel
    }
