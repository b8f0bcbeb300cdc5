"""Sample forgetting: D_f is a seeded subset of training samples (a fraction, N per class, or an index file).

The spec only chooses among the training indices the dataset already fixed: the train/test split
depends on the dataset's split seed alone, so ``forget.seed`` can never move a sample between
training and test, and every forget sample is one the original model was trained on. The test set
holds no forgotten samples, so ``forget_test`` is empty and ``retain_test`` is the whole test set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from famr_cli.dataset import DatasetShape, ImageData
from famr_cli.errors import FamrError
from famr_cli.forget import FORGET_SPECS, ForgetSpec, ForgetSplit

log = logging.getLogger("famr")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _generator(seed) -> torch.Generator:
    check_seed(seed)
    return torch.Generator().manual_seed(int(seed))


def check_seed(seed) -> None:
    if not _is_int(seed):
        raise FamrError(f"forget.seed must be an integer (got {seed!r}); e.g. forget.seed=0.")


def check_fraction(fraction) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) < 1.0:
        raise FamrError(f"forget.fraction must lie strictly between 0 and 1 (got {fraction!r}); e.g. forget.fraction=0.1.")


def check_per_class(per_class) -> None:
    if not _is_int(per_class) or per_class < 1:
        raise FamrError(f"forget.per_class must be a whole number of at least 1 (got {per_class!r}); e.g. forget.per_class=10.")


def draw_fraction(fraction, num_train: int, seed) -> torch.Tensor:
    """round(fraction * N) training indices drawn uniformly without replacement."""
    check_fraction(fraction)
    count = round(float(fraction) * num_train)
    if count == 0:
        raise FamrError(
            f"forget.fraction={fraction} of {num_train:,} training samples rounds to an empty forget set; "
            f"raise forget.fraction to at least {0.5 / num_train:.2g}."
        )
    if count == num_train:
        raise FamrError(
            f"forget.fraction={fraction} of {num_train:,} training samples rounds to the whole training set, "
            "which leaves nothing to retain; lower forget.fraction."
        )
    return torch.randperm(num_train, generator=_generator(seed))[:count]


def draw_per_class(per_class, y_train: torch.Tensor, num_classes: int, seed) -> torch.Tensor:
    """``per_class`` training indices of every class, each class drawn uniformly from one seeded generator."""
    counts = torch.bincount(y_train, minlength=num_classes)
    smallest = int(counts.min())
    check_per_class(per_class)
    if per_class > smallest:
        raise FamrError(
            f"forget.per_class={per_class} exceeds the smallest class, which has {smallest} training samples; "
            f"set forget.per_class to at most {smallest}."
        )
    if per_class == smallest and bool((counts == smallest).all()):
        raise FamrError(
            f"forget.per_class={per_class} takes every training sample, which leaves nothing to retain; "
            f"set forget.per_class below {smallest}."
        )
    gen = _generator(seed)
    chosen = []
    for cls in range(num_classes):
        members = (y_train == cls).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(chosen)


def _read_text_indices(path: Path) -> list[int]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise FamrError(f"forget.indices_file {path} cannot be read ({err}); point it at a readable text or .npy file.") from None
    indices: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            indices.append(int(line))
        except ValueError:
            raise FamrError(
                f"forget.indices_file {path} line {number} is not an integer ({raw.strip()!r}); "
                "write one training index per line ('#' starts a comment)."
            ) from None
    return indices


def _read_npy_indices(path: Path) -> list[int]:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise FamrError(f"forget.indices_file {path} is not a readable .npy array ({err}); save it with numpy.save.") from None
    if not isinstance(array, np.ndarray) or array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        shape = getattr(array, "shape", None)
        dtype = getattr(array, "dtype", type(array).__name__)
        raise FamrError(f"forget.indices_file {path} holds a {dtype} array of shape {shape}; save a 1-D integer array of training indices.")
    return [int(i) for i in array.tolist()]


def indices_path(indices_file) -> Path:
    """forget.indices_file as a path to an existing file."""
    path = Path(str(indices_file)).expanduser()
    if not path.is_file():
        raise FamrError(
            f"forget.indices_file {path} does not exist (relative paths start from the directory famr-run runs in); give an existing file."
        )
    return path


def read_indices_file(indices_file, num_train: int) -> torch.Tensor:
    """Training indices from a text file (one per line) or a .npy array, checked for range and duplicates."""
    path = indices_path(indices_file)
    indices = _read_npy_indices(path) if path.suffix.lower() == ".npy" else _read_text_indices(path)
    if not indices:
        raise FamrError(f"forget.indices_file {path} lists no indices, so the forget set would be empty; list at least one training index.")
    bad = [i for i in indices if not 0 <= i < num_train]
    if bad:
        raise FamrError(
            f"forget.indices_file {path} has index {bad[0]} out of range ({len(bad)} in all); "
            f"training indices run from 0 to {num_train - 1}."
        )
    chosen = torch.tensor(indices, dtype=torch.long)
    unique, counts = torch.unique(chosen, return_counts=True)
    if bool((counts > 1).any()):
        duplicate = int(unique[counts > 1][0])
        raise FamrError(f"forget.indices_file {path} lists index {duplicate} more than once; list each training index once.")
    if len(indices) == num_train:
        raise FamrError(
            f"forget.indices_file {path} lists all {num_train:,} training samples, which leaves nothing to retain; list fewer indices."
        )
    return chosen


def _percent(fraction: float) -> str:
    return f"{float(fraction) * 100:g}%"


@FORGET_SPECS.register("sample")
class SampleForget(ForgetSpec):
    def check(self, cfg: DictConfig, shape: DatasetShape) -> None:
        """The checks :meth:`split` makes that need no data: the chosen way of picking D_f, and the seed."""
        if cfg.get("indices_file") is not None:
            indices_path(cfg.indices_file)
            return
        check_seed(cfg.get("seed"))
        if cfg.get("per_class") is not None:
            check_per_class(cfg.per_class)
        else:
            check_fraction(cfg.get("fraction"))

    def split(self, cfg: DictConfig, data: ImageData) -> ForgetSplit:
        num_train = len(data.y_train)
        indices_file = cfg.get("indices_file")
        per_class = cfg.get("per_class")
        if indices_file is not None:
            if per_class is not None:
                log.warning("forget.indices_file is set, so forget.per_class=%s is ignored.", per_class)
            chosen = read_indices_file(indices_file, num_train)
            description = f"{len(chosen):,} samples from {Path(str(indices_file)).name}"
        elif per_class is not None:
            chosen = draw_per_class(per_class, data.y_train, data.num_classes, cfg.seed)
            description = f"{per_class} samples per class × {data.num_classes} classes (seed {cfg.seed})"
        else:
            chosen = draw_fraction(cfg.fraction, num_train, cfg.seed)
            description = f"{num_train:,} × {_percent(cfg.fraction)} = {len(chosen):,} samples (seed {cfg.seed})"

        in_forget = torch.zeros(num_train, dtype=torch.bool)
        in_forget[chosen] = True
        return ForgetSplit(
            forget_train=in_forget.nonzero().squeeze(1),  # sorted
            retain_train=(~in_forget).nonzero().squeeze(1),
            forget_test=torch.empty(0, dtype=torch.long),
            retain_test=torch.arange(len(data.y_test)),
            description=description,
            forgotten_classes=[],
        )
