"""A 60-image, 3-class problem with a tiny conv net: the shared fixture of the methods' mechanics tests."""

from __future__ import annotations

import torch
import torch.nn as nn

from famr_cli.dataset import ImageData
from famr_cli.forget import ForgetSplit


def tiny_problem(fit_steps: int = 0) -> tuple[ImageData, ForgetSplit, nn.Module]:
    """Data, a forget-class-0 split and a model; ``fit_steps`` SGD steps on all labels first (none by default)."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (60, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(60) % 3
    data = ImageData(x, y, x[:6], y[:6], ["a", "b", "c"], (0.5,), (0.25,))
    forget = (y == 0).nonzero().squeeze(1)
    retain = (y != 0).nonzero().squeeze(1)
    split = ForgetSplit(forget, retain, torch.tensor([0, 3]), torch.tensor([1, 2, 4, 5]), "class a", [0])
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    model.get_classifier = lambda: model[-1]  # what timm models expose; head_only and SalUn's head lookups use it
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    xf = (x.float() / 255 - 0.5) / 0.25
    for _ in range(fit_steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xf), y).backward()
        optimizer.step()
    return data, split, model
