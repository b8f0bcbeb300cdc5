"""The held-out images every robustness check shares, drawn once per run so every model sees the same ones.

Held-out means never trained on by any model: the evaluated test split (the validation split under
``evaluate.split=val``). Per class, a seeded permutation puts the first ``per_class`` images (at most
half the class) into the *probe set*; the rest are scored. What is "forgotten" depends on the spec:

- class: relearning draws its k shots from the probe set's forgotten-class images and is scored on
  the forgotten-class images outside it, so no attack image is ever scored;
- sample: relearning draws its k shots per class from D_f itself (the forgotten training samples)
  and is scored on the rest of D_f;
- style: no class or sample to relearn; only the held-out and calibration checks apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from famr_cli.dataset import ImageData
from famr_cli.forget import ForgetSplit


@dataclass
class HeldOutSets:
    kind: str  # "class" | "sample" | "style"
    probe_x: torch.Tensor
    probe_y: torch.Tensor
    pool_x: torch.Tensor  # relearning's attack images, the first k of each class being the k-shot set
    pool_y: torch.Tensor
    forget_x: torch.Tensor  # scored as forgotten: disjoint from the pool and the probe set
    forget_y: torch.Tensor
    retain_x: torch.Tensor  # retained-class held-out images outside the probe set
    retain_y: torch.Tensor
    sources: dict[str, str]
    # Labelled held-out images of the retained classes (the probe set's): what a relearning attack with
    # relearn.with_retained mixes into its batch, k per class.
    anchor_x: torch.Tensor | None = None
    anchor_y: torch.Tensor | None = None

    @property
    def relearnable(self) -> bool:
        return self.kind in ("class", "sample") and len(self.pool_y) > 0 and len(self.forget_y) > 0


def spec_kind(split: ForgetSplit) -> str:
    if split.style is not None:
        return "style"
    return "class" if split.forgotten_classes else "sample"


def first_per_class(order: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Positions into ``order``'s rows: for each class, its first ``k`` in ``order``'s order."""
    ranks = torch.zeros(len(order), dtype=torch.long)
    seen: dict[int, int] = {}
    for pos, label in enumerate(labels[order].tolist()):
        ranks[pos] = seen.get(label, 0)
        seen[label] = ranks[pos].item() + 1
    return (ranks < k).nonzero().squeeze(1)


def build_sets(data: ImageData, split: ForgetSplit, *, per_class: int, max_shots: int, seed: int) -> HeldOutSets:
    kind = spec_kind(split)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.y_test), generator=gen)
    y = data.y_test[order]
    probe_rows, scored_rows = [], []
    for c in range(data.num_classes):
        rows = (y == c).nonzero().squeeze(1)
        take = min(per_class, len(rows) // 2)
        probe_rows.append(rows[:take])
        scored_rows.append(rows[take : take + per_class])  # retained images scored: capped like the probe set
    probe = order[torch.cat(probe_rows)]
    forgotten = torch.tensor(split.forgotten_classes, dtype=torch.long)
    evaluated = "validation split" if data.provenance.get("evaluated_on") == "val" else "test split"
    sources = {"probe": f"{evaluated}: up to {per_class} images per class (at most half of each class), seeded permutation"}
    if kind == "class":
        in_forgotten = torch.isin(data.y_test, forgotten)
        pool = probe[in_forgotten[probe]]
        probe_set = set(probe.tolist())
        scored_forget = torch.tensor([i for i in order.tolist() if in_forgotten[i] and i not in probe_set], dtype=torch.long)
        retained_scored = order[torch.cat([r for c, r in enumerate(scored_rows) if c not in split.forgotten_classes])]
        sources["pool"] = f"{evaluated}: the probe set's forgotten-class images"
        sources["forget"] = f"{evaluated}: forgotten-class images outside the probe set"
        anchor = probe[~in_forgotten[probe]]
        return HeldOutSets(
            kind,
            data.x_test[probe],
            data.y_test[probe],
            data.x_test[pool],
            data.y_test[pool],
            data.x_test[scored_forget],
            data.y_test[scored_forget],
            data.x_test[retained_scored],
            data.y_test[retained_scored],
            {**sources, "retain": f"{evaluated}: retained-class images outside the probe set, up to {per_class} per class"},
            data.x_test[anchor],
            data.y_test[anchor],
        )
    retained_scored = order[torch.cat(scored_rows)]
    sources["retain"] = f"{evaluated}: images outside the probe set, up to {per_class} per class"
    empty_x, empty_y = data.x_test[:0], data.y_test[:0]
    if kind == "style":
        return HeldOutSets(
            kind,
            data.x_test[probe],
            data.y_test[probe],
            empty_x,
            empty_y,
            empty_x,
            empty_y,
            data.x_test[retained_scored],
            data.y_test[retained_scored],
            sources,
        )
    forget = split.forget_train[torch.randperm(len(split.forget_train), generator=gen)]
    # At most half of each class's forgotten samples go to the pool, so every class keeps samples to score.
    per_class_f = torch.bincount(data.y_train[forget], minlength=data.num_classes)
    take = min(max_shots, max(1, int(per_class_f[per_class_f > 0].min()) // 2)) if len(forget) else 0
    shots = first_per_class(forget, data.y_train, take)
    rest = torch.ones(len(forget), dtype=torch.bool)
    rest[shots] = False
    sources["pool"] = f"D_f (training split): the first {take} forgotten samples per class of a seeded permutation (at most half)"
    sources["forget"] = "D_f (training split): the forgotten samples outside the pool"
    return HeldOutSets(
        kind,
        data.x_test[probe],
        data.y_test[probe],
        data.x_train[forget[shots]],
        data.y_train[forget[shots]],
        data.x_train[forget[rest]],
        data.y_train[forget[rest]],
        data.x_test[retained_scored],
        data.y_test[retained_scored],
        sources,
        data.x_test[probe],
        data.y_test[probe],
    )
