"""Every backbone builds from its YAML and runs a forward pass at the resolutions it is meant for."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from omegaconf import OmegaConf

from famr_cli.backbone import build_backbone, classifier_parameter_names
from famr_cli.cli import CONFIG_DIR
from famr_cli.errors import FamrError

BACKBONE_DIR = Path(CONFIG_DIR) / "backbone"
# (option, image size, channels): the small variants at their datasets' sizes; the paper-scale
# ones at 32 px (CIFAR-10) and 224 px (ImageNet-100).
CASES = [
    ("resnet_mini", 8, 1),
    ("vit_mini", 8, 1),
    ("resnet_narrow", 32, 3),
    ("vit_shallow", 32, 3),
    ("resnet18", 32, 3),
    ("resnet18", 224, 3),
    ("vit_tiny", 32, 3),
    ("vit_tiny", 224, 3),
    ("vit_small", 32, 3),
    ("vit_small", 224, 3),
]


def load(option: str):
    return OmegaConf.load(BACKBONE_DIR / f"{option}.yaml")


def test_every_backbone_option_is_covered():
    assert {p.stem for p in BACKBONE_DIR.glob("*.yaml")} == {option for option, _, _ in CASES}


@pytest.mark.parametrize("option, size, chans", CASES)
def test_backbone_builds_and_runs_forward(option, size, chans):
    model = build_backbone(load(option), num_classes=7, in_chans=chans, img_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, chans, size, size))
    assert out.shape == (2, 7)
    assert classifier_parameter_names(model), "the classifier head must be identifiable (FAMR's anchor=head)"


def test_resnet18_stem_follows_resolution():
    small = build_backbone(load("resnet18"), 10, 3, 32)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    large = build_backbone(load("resnet18"), 10, 3, 224)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert not isinstance(large.maxpool, torch.nn.Identity)


def test_vit_patch_follows_resolution():
    assert build_backbone(load("vit_tiny"), 10, 3, 32).patch_embed.patch_size == (4, 4)
    assert build_backbone(load("vit_tiny"), 10, 3, 224).patch_embed.patch_size == (16, 16)


def test_bad_backbone_values_are_rejected():
    cfg = load("vit_tiny")
    cfg.patch_size = 5
    with pytest.raises(FamrError, match="does not divide"):
        build_backbone(cfg, 10, 3, 32)
    cfg = load("resnet18")
    cfg.timm_name = "resnet_does_not_exist"
    with pytest.raises(FamrError, match="timm has no model"):
        build_backbone(cfg, 10, 3, 32)


def test_pretrained_offline_fails_with_one_sentence(monkeypatch):
    # The hub reads this flag when it is asked for a file: offline, it fails at once instead of retrying.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = OmegaConf.load(BACKBONE_DIR / "resnet18.yaml")
    cfg.pretrained = True
    with pytest.raises(FamrError, match=r"backbone\.pretrained=true needs timm's weights") as err:
        build_backbone(cfg, 10, 3, 32)
    assert "pretrained=false" in str(err.value)
