"""The shared fixtures and helpers of the methods' mechanics tests.

A 60-image, 3-class problem with a tiny conv net (:func:`tiny_problem`), an eight-sample linear problem whose
gradients the tests work out by hand (:func:`linear_problem`), and what every such test reads a method through:
its shipped YAML (:func:`method_from_yaml`) and its one-sentence errors (:func:`assert_one_sentence_naming`).
The tests that use them run torch at one thread (conftest's ``one_torch_thread``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from omegaconf import OmegaConf

from famr_cli.dataset import ImageData
from famr_cli.forget import ForgetSplit
from famr_cli.method import UnlearnContext

CPU = torch.device("cpu")
METHOD_CONF = Path(__file__).resolve().parents[1] / "conf" / "method"


def shipped_method_config(name: str) -> dict:
    """conf/method/<name>.yaml as shipped."""
    return yaml.safe_load((METHOD_CONF / f"{name}.yaml").read_text())


def method_from_yaml(cls, name: str, **overrides):
    """Method class ``cls`` built from conf/method/<name>.yaml, with ``overrides`` replacing its keys."""
    return cls(OmegaConf.create({**shipped_method_config(name), **overrides}))


def assert_one_sentence_naming(err: pytest.ExceptionInfo, naming: str) -> None:
    """The raised error's message is one sentence (one line, one full stop) that contains ``naming``, e.g. ``method.lr``."""
    message = str(err.value)
    assert naming in message, message
    assert message.endswith(".") and "\n" not in message, message
    assert ". " not in message.replace("e.g. ", ""), message


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


# Eight 3-feature samples of 3 interleaved classes; class 0 (rows 1, 4, 7) is forgotten, D_r = rows 0, 2, 3, 5, 6.
LINEAR_X = torch.tensor(
    [
        [0.5, -1.0, 2.0],
        [1.5, 0.0, -0.5],
        [-1.0, 1.0, 0.5],
        [0.0, 2.0, -1.5],
        [2.0, -0.5, 1.0],
        [-0.5, -1.5, 0.0],
        [1.0, 1.0, 1.0],
        [-2.0, 0.5, -1.0],
    ]
)
LINEAR_Y = torch.tensor([1, 0, 2, 1, 0, 2, 1, 0])
LINEAR_FORGET, LINEAR_RETAIN = torch.tensor([1, 4, 7]), torch.tensor([0, 2, 3, 5, 6])


def linear_problem(seed: int = 0) -> tuple[ImageData, ForgetSplit, nn.Sequential, UnlearnContext]:
    """The eight samples as 1x1x3 images, their forget-class-0 split, a 3-class linear model (seeded, with timm's
    ``get_classifier()``) and a CPU context of ``seed``."""
    torch.manual_seed(3)
    # Float images with mean 0 and std 1 reach the model unchanged (famr_cli.augment.normalize).
    x, y = LINEAR_X.view(8, 1, 1, 3), LINEAR_Y
    data = ImageData(x, y, x[:2], y[:2], ["a", "b", "c"], (0.0,), (1.0,))
    split = ForgetSplit(LINEAR_FORGET, LINEAR_RETAIN, torch.tensor([1]), torch.tensor([0]), "class a", [0])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3))
    model.get_classifier = lambda: model[1]
    return data, split, model, UnlearnContext(data, split, CPU, seed=seed)
