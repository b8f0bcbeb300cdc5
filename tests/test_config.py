"""Every config composes; groups mirror the registries; command-line choices beat experiments."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from famr_cli.backbone import BACKBONES
from famr_cli.cli import CONFIG_DIR
from famr_cli.dataset import DATASETS
from famr_cli.forget import FORGET_SPECS
from famr_cli.logger import LOGGERS
from famr_cli.method import METHODS

GROUPS = ["dataset", "backbone", "forget", "method", "train", "logger", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def test_every_group_exists_with_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS if g != "experiment" for o in options(g)])
def test_every_option_composes_and_resolves(group, option):
    cfg = compose_config([f"{group}={option}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # A named variant (method=famr_entropy) runs its base method's code under its own name.
    assert resolved[group].get("variant") or resolved[group]["name"] == option
    assert (resolved[group].get("variant") or option) == option
    assert resolved["train"]["seed"] == resolved["seed"]


@pytest.mark.parametrize("override", [f"experiment={e}" for e in options("experiment")] + ["~experiment"])
def test_every_experiment_composes_and_none_is_optional(override):
    cfg = compose_config([override])
    OmegaConf.to_container(cfg, resolve=True)


def test_command_line_group_choice_beats_the_experiment():
    cfg = compose_config(["experiment=quickstart", "backbone=vit_mini", "method.lam=0.5"])
    assert cfg.backbone.name == "vit_mini"
    assert cfg.method.lam == 0.5


def test_config_names_match_registries():
    """A group option's `name` must be something the code can build (the one-to-one mirror)."""
    registries = {"dataset": DATASETS, "forget": FORGET_SPECS, "method": METHODS, "logger": LOGGERS}
    for group, registry in registries.items():
        for option in options(group):
            cfg = compose_config([f"{group}={option}"])[group]  # a named variant takes its name from its base file
            assert cfg.name in registry, f"conf/{group}/{option}.yaml names unknown {group} {cfg.name}"
    for option in options("backbone"):
        assert OmegaConf.load(Path(CONFIG_DIR) / "backbone" / f"{option}.yaml").builder in BACKBONES
