"""The results document a run writes as results.json: what each stage measured, in the public layout.

The layout is a contract (docs/results_json.md): keys are added, never renamed or dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from famr_cli.host import run_host
from famr_cli.method import UnlearnReport
from famr_cli.model_store import TrainedModel, versions
from famr_cli.prepared import Prepared
from famr_cli.runtime import describe_device


@dataclass
class RunRecord:
    """What one run measured, stage by stage, before it is laid out as results.json."""

    forget: dict[str, Any]
    original: TrainedModel
    retrain: TrainedModel | None
    report: UnlearnReport
    unlearn_s: float
    eval_s: float
    metrics: dict[str, dict[str, Any]]
    gaps: dict[str, Any]
    certificate: dict[str, Any]
    robustness: dict[str, Any]


def cache_section(p: Prepared, record: RunRecord) -> dict[str, Any]:
    original, retrain = record.original, record.retrain
    section: dict[str, Any] = {"original": {"key": original.key, "hit": original.hit}}
    if p.user_weights is not None:
        section["original"]["user_weights"] = {"path": str(p.user_weights.path), "sha256": p.user_weights.sha256}
    if retrain is not None:
        section["retrain"] = {"key": retrain.key, "hit": retrain.hit}
    return section


def timing_section(record: RunRecord) -> dict[str, Any]:
    retrain_s = None if record.retrain is None else record.retrain.recorded_train_s
    return {
        "train_s": record.original.seconds,
        "original_train_s": record.original.recorded_train_s,
        "unlearn_s": record.unlearn_s,
        "retrain_s": retrain_s,
        "rte_frac_of_retrain": None if not retrain_s else record.unlearn_s / retrain_s,
        "eval_s": record.eval_s,
        "robustness_s": sum((record.robustness.get("seconds") or {}).values()),  # inside eval_s
    }


def method_row_name(method: DictConfig) -> str:
    """What results.json's ``method`` says: a named variant's name (``famr_entropy``), else the method's."""
    return str(method.get("variant") or method.name)


def results_document(cfg: DictConfig, p: Prepared, record: RunRecord) -> dict[str, Any]:
    return {
        "status": "ok",
        "method": method_row_name(cfg.method),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "dataset": {
            "name": cfg.dataset.name,
            "class_names": p.data.class_names,
            "num_train": len(p.data.y_train),
            "num_test": len(p.data.y_test),
            "eval_split": p.eval.split,  # "val": every test figure is on the held-out validation images
            "provenance": p.data.provenance,
        },
        "forget": record.forget,
        "metrics": record.metrics,
        "gaps": record.gaps,
        "timing": timing_section(record),
        "certificate": record.certificate,
        "robustness": record.robustness,
        "curves": {"unlearn_epoch_loss": record.report.epoch_losses},
        "cache": cache_section(p, record),
        "versions": versions(),
        "device": str(p.device),
        "device_name": describe_device(p.device),
        "host": run_host(),  # the node, and the SLURM job as sacct names it when there is one
    }
