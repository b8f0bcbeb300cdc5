"""Every key of a composed config must be one the shipped config files declare.

Hydra's struct mode already refuses ``method.lamm=5``, but ``+method.lamm=5``, a typo in an
experiment or tuned file, or a key meant for another option are merged in silently and then never
read. The shipped YAML of each option is the schema (its keys, with their defaults, in one place):
a section's keys are checked against the file of the option it names (``conf/<group>/<name>.yaml``;
for ``evaluate``, which has no name, against its shipped files). An option of the user's own, from
another config dir, has no schema here and is left to its own code.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from famr_cli.errors import FamrError

CONFIG_DIR = Path(__file__).resolve().parent / "conf"
# Config groups whose section is checked, by the group's folder under conf/.
GROUPS = ("dataset", "backbone", "forget", "method", "train", "logger", "evaluate")
# Subtrees passed through to a library as keyword arguments (timm.create_model): any key is valid there.
FREE_FORM = {("backbone", "kwargs")}
# Keys every option of a group may carry beyond its own file's: where tuned method values came from.
EXTRA_KEYS = {"method": {"tuned_by"}}
# Root keys removed in a release, with the sentence that says what replaced them.
REMOVED_ROOT_KEYS = {
    "tuned": (
        "the root key tuned.<method>.<key> was removed: set method.<key>=... on the command line, or put the values in "
        "conf/method/tuned/<experiment>/<forget>/<method>.yaml (docs/tuning.md)."
    ),
}


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("defaults", None)
    return data


@cache
def _root_schema() -> frozenset[str]:
    return frozenset(_load_yaml(CONFIG_DIR / "config.yaml")) | frozenset(GROUPS) | {"hydra"}


@cache
def _group_schema(group: str, name: str | None) -> tuple[dict[str, Any], str] | None:
    """The declared keys of ``group``'s option ``name`` and where they come from (for the message);
    None for a named option that famr does not ship."""
    folder = CONFIG_DIR / group
    if name:
        own = folder / f"{name}.yaml"
        return (_load_yaml(own), f"{group}={name}") if own.is_file() else None
    merged: dict[str, Any] = {}
    for path in sorted(folder.glob("*.yaml")):
        for key, value in _load_yaml(path).items():
            merged.setdefault(key, value)
    return merged, f"any {group} option"


def check_known_keys(cfg: DictConfig) -> None:
    """Raise :class:`FamrError` naming the first key of ``cfg`` that no config file declares, and the valid keys."""
    for key in cfg:
        if key in REMOVED_ROOT_KEYS:
            raise FamrError(f"{key} is no longer read: {REMOVED_ROOT_KEYS[key]}")
        if key not in _root_schema():
            raise FamrError(_unknown(str(key), sorted(_root_schema() - {"hydra"}), "the top level"))
    for group in GROUPS:
        section = cfg.get(group)
        if not isinstance(section, DictConfig):
            continue
        name = section.get("name") if group != "evaluate" else None
        found = _group_schema(group, None if name is None else str(name))
        if found is None:
            continue
        schema, owner = found
        allowed = {**schema, **dict.fromkeys(EXTRA_KEYS.get(group, ()))}
        _check_section(OmegaConf.to_container(section, resolve=False), allowed, (group,), owner)


def _check_section(values: Mapping[str, Any], schema: Mapping[str, Any], path: tuple[str, ...], owner: str) -> None:
    for key, value in values.items():
        if key not in schema:
            raise FamrError(_unknown(".".join((*path, str(key))), sorted(schema), owner))
        sub = schema[key]
        if isinstance(sub, Mapping) and isinstance(value, Mapping) and (*path, key) not in FREE_FORM and len(path) == 1:
            _check_section(value, sub, (*path, str(key)), owner)


def _unknown(dotted: str, valid: list[str], owner: str) -> str:
    return f"{dotted} is not a setting of {owner}; check its spelling (valid keys: {', '.join(valid)})."
