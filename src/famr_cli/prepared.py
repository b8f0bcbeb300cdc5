"""An experiment's validated inputs: every config value checked and the data loaded, before any training."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
from omegaconf import DictConfig

from famr_cli.cache import cache_root
from famr_cli.dataset import ImageData, load_dataset
from famr_cli.errors import FamrError
from famr_cli.evaluate.report import EvalSettings
from famr_cli.forget import ForgetSplit, make_forget_split
from famr_cli.method import UnlearningMethod
from famr_cli.progress import progress_enabled
from famr_cli.runtime import autocast_dtype, resolve_device
from famr_cli.train.distributed import local_device
from famr_cli.train.settings import TrainSettings
from famr_cli.validate import validate_run_settings
from famr_cli.weights import UserWeights, load_into, read_user_weights

log = logging.getLogger("famr")


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
    train: TrainSettings  # the recipe of the original model and Retrain, and of the methods' D_r augmentation
    user_weights: UserWeights | None = None  # original_weights: a model the user trained, unlearned instead of ours


def prepare(cfg: DictConfig) -> Prepared:
    """Validate every config value and load the data; all bad input fails here, before training."""
    # From the config alone, before any data is decoded: a bad value costs seconds.
    checked = validate_run_settings(cfg)
    device = local_device(resolve_device(str(cfg.device)))
    autocast = autocast_dtype(str(cfg.precision), device)
    settings = replace(checked.eval, autocast=autocast)
    user_weights = read_user_weights(cfg.original_weights) if cfg.get("original_weights") else None
    if user_weights is not None:
        load_into(checked.skeleton, user_weights, str(cfg.backbone.name))  # a misfit fails now, before any decoding or training
    data = on_evaluation_split(load_dataset(cfg.dataset, cache_root(cfg)), settings.split)
    split = make_forget_split(cfg.forget, data)
    if split.modifies_training_data:
        # Training, unlearning and evaluation all see the stylized (and possibly relabelled) training set.
        data = replace(data, x_train=split.x_train, y_train=split.y_train)
    show_progress = progress_enabled(cfg.progress)
    return Prepared(device, checked.method, data, split, show_progress, autocast, settings, checked.train, user_weights)


def on_evaluation_split(data: ImageData, split: str) -> ImageData:
    """``data`` with the validation split in the test split's place when ``evaluate.split=val``: every
    test-set figure (TA, forget-test accuracy, the MIA's shadow non-members) is then a validation figure."""
    if split == "test":
        return data
    if data.x_val is None:
        raise FamrError("evaluate.split=val needs a validation split: set dataset.val_per_class (e.g. dataset.val_per_class=100).")
    return replace(data, x_test=data.x_val, y_test=data.y_val, provenance={**data.provenance, "evaluated_on": "val"})
