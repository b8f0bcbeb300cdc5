"""Per-example scores of a trained model on D_f: the true class's log-odds, the statistic both privacy metrics read.

For softmax probabilities p, the log-odds of the true class y is log(p_y / (1 - p_y)) = z_y - logsumexp_{j != y} z_j
in the logits z. Computed from the logits, in float64, it keeps its precision where p_y rounds to 1 in float32 (a
model's confident training examples), which the probabilities famr's evaluation keeps would not. The result is
clipped to +-45 ln 10, the range the competition's ``log(p + 1e-45) - log(1 - p + 1e-45)`` can reach, so a score
is the official one wherever the official float computation is exact.

A run with ``evaluate.forget_scores=true`` writes ``forget_scores.safetensors`` in its run dir: ``indices`` (D_f's
training indices, int64) and one float64 vector per model the run holds (``unlearned``, ``original``, ``retrain``).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from famr_cli.batches import make_batches
from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError

FORGET_SCORES_FILE = "forget_scores.safetensors"
SCORE_LIMIT = 45.0 * math.log(10.0)  # log(1 / 1e-45): the competition's logit-scaled confidence never leaves this range


def log_odds_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_y - logsumexp of the other logits, per row, in float64 and clipped to +-SCORE_LIMIT."""
    z = logits.to(torch.float64)
    true = z.gather(1, labels.view(-1, 1)).squeeze(1)
    others = z.scatter(1, labels.view(-1, 1), float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).clamp(-SCORE_LIMIT, SCORE_LIMIT)


@torch.no_grad()
def true_class_log_odds(
    model: nn.Module,
    data: ImageData,
    indices: torch.Tensor,
    device: torch.device,
    batch_size: int,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """The model's true-class log-odds on the training images ``indices`` (eval mode, no augmentation), on the CPU."""
    was_training = model.training
    model.eval()
    batches = make_batches(data, data.x_train, data.y_train, batch_size=batch_size, device=device, train=False, indices=indices)
    amp = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()
    scores = []
    with amp:
        for xb, yb in batches:
            scores.append(log_odds_from_logits(model(xb).float(), yb).cpu())
    model.train(was_training)
    return torch.cat(scores) if scores else torch.empty(0, dtype=torch.float64)


def write_forget_scores(run_dir: Path, indices: torch.Tensor, scores: dict[str, torch.Tensor]) -> Path:
    """``forget_scores.safetensors`` in ``run_dir``: D_f's indices and each named model's scores."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / FORGET_SCORES_FILE
    tensors = {"indices": indices.to(torch.int64).contiguous(), **{k: v.to(torch.float64).contiguous() for k, v in scores.items()}}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    return path


def read_forget_scores(run_dir: Path) -> dict[str, torch.Tensor]:
    """What :func:`write_forget_scores` wrote in ``run_dir``."""
    path = Path(run_dir) / FORGET_SCORES_FILE
    if not path.is_file():
        raise FamrError(f"{path} is missing: run that job again with evaluate.forget_scores=true.")
    return load_file(str(path))
