"""Which training rows a run uses: an optional class-balanced training subset and a held-out validation split.

Both are drawn per class with ``selection_seed`` alone, never with ``seed`` or a forget spec's seed,
so every method, forget spec and Retrain sees the same rows (SalUn's public code draws its
validation split with the forget seed, so some "forgotten" images were never trained on). Validation
rows are taken first and are never trained on; ``train_per_class`` then keeps that many of the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from omegaconf import DictConfig

from famr_cli.checks import whole
from famr_cli.errors import FamrError

# The keys and their "use everything" values: at these values a dataset section's cache key is unchanged.
DEFAULTS: dict[str, Any] = {"train_per_class": None, "val_per_class": 0, "selection_seed": 0}


@dataclass(frozen=True)
class RowSelection:
    train_per_class: int | None = None
    val_per_class: int = 0
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RowSelection:
        per_class = cfg.get("train_per_class")
        if per_class is not None:
            per_class = whole(per_class, "dataset.train_per_class", 2000, minimum=1)
        val = whole(cfg.get("val_per_class", 0), "dataset.val_per_class", 500, minimum=0)
        return cls(per_class, val, whole(cfg.get("selection_seed", 0), "dataset.selection_seed", 0, minimum=0))

    @property
    def active(self) -> bool:
        return self.train_per_class is not None or self.val_per_class > 0


def model_relevant(section: dict[str, Any]) -> dict[str, Any]:
    """``section`` without selection keys left at their defaults, so caches made before they existed still match."""
    return {k: v for k, v in section.items() if not (k in DEFAULTS and v == DEFAULTS[k])}


def select_rows(data, selection: RowSelection):
    """``data`` (an :class:`ImageData`) restricted to the selected training rows, with ``x_val``/``y_val`` set."""
    if not selection.active:
        return data
    if data.streamed:
        raise FamrError(
            "dataset.train_per_class and dataset.val_per_class need an in-memory dataset; this one is streamed from disk, "
            "so use dataset.fraction to shrink it."
        )
    generator = torch.Generator().manual_seed(selection.seed)
    train_rows, val_rows = [], []
    for cls in range(data.num_classes):
        rows = torch.nonzero(data.y_train == cls).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        need = selection.val_per_class + (selection.train_per_class or 1)
        if len(rows) < need:
            raise FamrError(
                f"class {data.class_names[cls]} has {len(rows)} training images, fewer than dataset.val_per_class + "
                f"dataset.train_per_class = {need}; lower them."
            )
        val_rows.append(rows[: selection.val_per_class])
        kept = rows[selection.val_per_class :]
        train_rows.append(kept if selection.train_per_class is None else kept[: selection.train_per_class])
    train = torch.cat(train_rows).sort().values  # dataset order kept, so forget=sample index files stay readable
    val = torch.cat(val_rows).sort().values
    provenance = {
        **data.provenance,
        "selection": {"train_per_class": selection.train_per_class, "val_per_class": selection.val_per_class, "seed": selection.seed},
    }
    return replace(
        data,
        x_train=data.x_train[train],
        y_train=data.y_train[train],
        x_val=data.x_train[val] if len(val) else None,
        y_val=data.y_train[val] if len(val) else None,
        provenance=provenance,
    )
