"""Every config value checked before work starts: one :class:`FamrError` sentence naming the fix, or nothing.

``validate_run_settings`` runs first in ``prepared.prepare``. It refuses keys no config file declares
(``famr_cli.config_schema``), then checks the root-level keys and the
``train`` and ``logger`` sections here, and asks each stage module to check its own section from the
config alone: the dataset (settings, paths, and the classes, channels and image size it will have),
the forget spec against those classes and channels, the method's options, and whether the backbone
can be built for those images (an untrained skeleton, no weights downloaded) with the method's
options. Nothing is decoded, trained or written to the cache, so a bad value costs seconds.
Device and precision are checked by ``prepare`` right after (``famr_cli.runtime``). The typed
settings it parsed on the way travel on in :class:`CheckedSettings`, so no section is parsed twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn
from omegaconf import DictConfig

from famr_cli.backbone import build_skeleton
from famr_cli.checks import flag, whole
from famr_cli.config_schema import check_known_keys
from famr_cli.dataset import describe_dataset
from famr_cli.errors import FamrError
from famr_cli.evaluate.report import EvalSettings
from famr_cli.forget import check_forget_config
from famr_cli.method import UnlearningMethod, build_method
from famr_cli.runtime import threads_per_job
from famr_cli.train.settings import TrainSettings

# wandb.init's modes (wandb 0.31: Settings.mode).
WANDB_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")


@dataclass(frozen=True)
class CheckedSettings:
    """The sections validation parsed, typed, and the untrained backbone skeleton built for the dataset's images."""

    train: TrainSettings
    eval: EvalSettings  # autocast None: the device, and so the precision, is resolved after validation
    method: UnlearningMethod
    skeleton: nn.Module


def validate_run_settings(cfg: DictConfig) -> CheckedSettings:
    """Raise :class:`FamrError` for the first bad value in ``cfg``; when every value is usable, return
    what was parsed on the way."""
    check_known_keys(cfg)
    _check_root_keys(cfg)
    _check_logger(cfg.logger)
    train = TrainSettings.from_config(cfg.train)
    evaluation = EvalSettings.from_config(cfg, None)
    method = build_method(cfg.method)  # the method's own option checks
    shape = describe_dataset(cfg.dataset)
    check_forget_config(cfg.forget, shape)
    method.check_forget(cfg.forget.name)
    skeleton = build_skeleton(cfg.backbone, shape.num_classes, shape.in_chans, shape.img_size)
    method.check_model(skeleton)
    return CheckedSettings(train, evaluation, method, skeleton)


def _check_root_keys(cfg: DictConfig) -> None:
    whole(cfg.seed, "seed", 0, minimum=0)
    if cfg.get("retrain_seed") is not None:
        whole(cfg.retrain_seed, "retrain_seed", 1, minimum=0)
    whole(cfg.eval_batch_size, "eval_batch_size", 1024, minimum=1)
    if not (isinstance(cfg.progress, bool) or cfg.progress == "auto"):
        raise FamrError(f"progress must be auto, true or false (got {cfg.progress}); use e.g. progress=auto.")
    flag(cfg.channels_last, "channels_last")
    threads_per_job(cfg.get("threads", "auto"), 1)
    if "deterministic" in cfg:
        flag(cfg.deterministic, "deterministic")
    if "compile" in cfg:
        flag(cfg.compile, "compile")
    if "skip_finished" in cfg:
        flag(cfg.skip_finished, "skip_finished")
    if "checkpoint_every" in cfg:
        whole(cfg.checkpoint_every, "checkpoint_every", 1, minimum=0)
    _check_objective(cfg.get("objective"))
    _check_original_weights(cfg.get("original_weights"))
    _check_cache_dir(cfg.get("cache_dir"))


def _check_objective(objective: object) -> None:
    parts = objective.split(".") if isinstance(objective, str) else []
    if not parts or not all(part.strip() for part in parts):
        raise FamrError(f"objective must be a dotted path into results.json (got {objective}); use e.g. objective=gaps.avg_gap.")


def _check_original_weights(setting: object) -> None:
    """Only that the file is there: reading and fitting it is ``famr_cli.weights``' job, in ``prepare``."""
    if not setting or Path(str(setting)).expanduser().is_file():
        return
    raise FamrError(f"original_weights={setting} is not a file; give the path of a trained model's .safetensors or .pt state dict.")


def _check_cache_dir(cache_dir: object) -> None:
    if not isinstance(cache_dir, str) or not cache_dir.strip():
        raise FamrError(f"cache_dir must be a folder path (got {cache_dir}); use e.g. cache_dir=outputs/cache.")
    path = Path(cache_dir).expanduser()
    # The folder need not exist yet, but the nearest existing path on the way to it must be a folder.
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is" if existing == path else f"lies under {existing}, which is"
        raise FamrError(f"cache_dir={cache_dir} {where} not a folder; point cache_dir (or FAMR_CACHE_DIR) at a folder.")


def _check_logger(cfg: DictConfig) -> None:
    if cfg.get("name") == "wandb" and cfg.get("mode") not in WANDB_MODES:
        raise FamrError(f"Unknown logger.mode '{cfg.get('mode')}': set logger.mode (or WANDB_MODE) to one of offline, online, disabled.")
