"""Every method's options are one typed, frozen settings object whose keys, and only whose defaults, are its YAML."""

from __future__ import annotations

import ast
import dataclasses
import re
import typing
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

import famr_cli.method as method_package
from famr_cli.errors import FamrError
from famr_cli.method import METHODS, MethodSettings
from famr_cli.method.shared.settings import TrainingSettings

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
METHOD_DIR = Path(method_package.__file__).parent
REPO = Path(__file__).resolve().parents[1]
# The methods: a named variant's file (conf/method/famr_entropy.yaml) changes a method's values, not its code.
NAMES = sorted(path.stem for path in CONF.glob("*.yaml") if yaml.safe_load(path.read_text()).get("name") == path.stem)
# Keys of a method section that say where values came from, or what its rows are called, rather than what the method does.
PROVENANCE = {"name", "tuned_by", "variant"}


def _yaml(name: str) -> dict:
    return yaml.safe_load((CONF / f"{name}.yaml").read_text())


def _keys(settings_type: type[MethodSettings]) -> set[str]:
    return {settings_type.KEYS.get(f.name, f.name) for f in dataclasses.fields(settings_type)}


@pytest.mark.parametrize("name", NAMES)
def test_settings_fields_are_exactly_the_yaml_keys(name):
    settings_type = METHODS.get(name).settings_type
    assert _keys(settings_type) == set(_yaml(name)) - PROVENANCE


@pytest.mark.parametrize("name", NAMES)
def test_settings_have_no_defaults_of_their_own(name):
    """The YAML is the one place a default lives; a second copy in the dataclass would drift from it."""
    for f in dataclasses.fields(METHODS.get(name).settings_type):
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f.name


@pytest.mark.parametrize("name", NAMES)
def test_shipped_defaults_parse_to_the_declared_types(name):
    method = METHODS.get(name)(OmegaConf.create(_yaml(name)))
    settings = method.settings
    assert type(settings) is type(method).settings_type
    assert dataclasses.is_dataclass(settings)
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        # A union allows each member; any other hint (tuple[int, ...] included) is one type.
        union = typing.get_origin(hints[f.name]) in (typing.Union, type(int | None))
        allowed = typing.get_args(hints[f.name]) if union else (hints[f.name],)
        allowed = tuple(typing.get_origin(t) or t for t in allowed)
        assert isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed), (f.name, value)
        if f.name in _yaml(name) and not isinstance(value, tuple):
            assert value == _yaml(name)[f.name]


def test_settings_are_frozen():
    settings = METHODS.get("finetune")(OmegaConf.create(_yaml("finetune"))).settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 1.0


def test_whole_numbers_in_a_float_option_become_floats_and_lists_become_tuples():
    cfg = OmegaConf.create({**_yaml("famr"), "lr": 1, "lam": 0, "epochs": 3.0, "trainable": ["0.", "4."]})
    settings = METHODS.get("famr")(cfg).settings
    assert (type(settings.lr), type(settings.lam), type(settings.epochs)) == (float, float, int)
    assert settings.trainable == ("0.", "4.")


def test_ssd_reads_lambda_into_a_field_python_can_name():
    cfg = OmegaConf.create({**_yaml("ssd"), "lambda": 0.5})
    assert METHODS.get("ssd")(cfg).settings.lam == 0.5


def test_retain_buffer_is_not_read_while_retain_kd_is_off():
    cfg = OmegaConf.create({**_yaml("famr"), "retain_kd": 0.0, "retain_buffer": None})
    assert METHODS.get("famr")(cfg).settings.retain_buffer is None


@pytest.mark.parametrize("name", [n for n in NAMES if set(_yaml(n)) - PROVENANCE])
def test_a_missing_key_is_named_with_where_its_default_lives(name):
    section = _yaml(name)
    key = sorted(set(section) - PROVENANCE)[0]
    del section[key]
    with pytest.raises(FamrError) as err:
        METHODS.get(name)(OmegaConf.create(section))
    assert str(err.value) == (
        f"method={name} needs method.{key}, which the config does not set; restore it (its default is in conf/method/{name}.yaml)."
    )


def test_provenance_keys_are_ignored():
    cfg = OmegaConf.create({**_yaml("scrub"), "tuned_by": {"protocol": "by hand"}})
    assert not hasattr(METHODS.get("scrub")(cfg).settings, "tuned_by")


def test_a_method_without_options_gets_the_empty_base_settings():
    assert METHODS.get("retrain").settings_type is MethodSettings
    assert dataclasses.fields(METHODS.get("retrain")(OmegaConf.create(_yaml("retrain"))).settings) == ()


def test_settings_that_declare_options_must_check_them():
    @dataclasses.dataclass(frozen=True)
    class Unchecked(MethodSettings):
        lr: float

    with pytest.raises(NotImplementedError, match="parse"):
        Unchecked.from_config(OmegaConf.create({"lr": 0.1}))


def test_the_readmes_new_method_is_a_whole_method():
    """README's "Adding a method" block, run as written: a settings dataclass and one class make a method."""
    block = re.search(r"## Adding a method\n.*?```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S).group(1)
    namespace: dict = {}
    try:
        exec(compile(block, "README.md", "exec"), namespace)
        noise = METHODS.get("noise")(OmegaConf.create({"name": "noise", "scale": 2}))
        assert noise.settings == namespace["NoiseSettings"](scale=2.0)
        model = torch.nn.Linear(3, 2)
        before = [p.detach().clone() for p in model.parameters()]
        noise.unlearn(model, None)
        assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
        with pytest.raises(FamrError, match=r"method\.scale must be positive \(got 0\); use e\.g\. method\.scale=0\.01\."):
            METHODS.get("noise")(OmegaConf.create({"name": "noise", "scale": 0}))
    finally:
        METHODS._entries.pop("noise", None)  # the example must not leak into the other tests' registry


@pytest.mark.parametrize("name", [n for n in NAMES if issubclass(METHODS.get(n).settings_type, TrainingSettings)])
def test_every_training_method_rejects_an_unknown_optimizer_with_one_sentence(name):
    with pytest.raises(FamrError) as err:
        METHODS.get(name)(OmegaConf.create({**_yaml(name), "optimizer": "lion"}))
    assert str(err.value) == "Unknown optimizer 'lion': set method.optimizer to one of sgd, adam, adamw."


def test_no_method_module_imports_another():
    """Shared code lives in method/shared/, so a method module can change without breaking a sibling."""
    modules = {path.stem for path in METHOD_DIR.glob("*.py")} - {"__init__"}
    for path in [*METHOD_DIR.glob("*.py"), *(METHOD_DIR / "shared").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("famr_cli.method."):
                assert node.module.split(".")[2] not in modules, f"{path.name} imports {node.module}"


def test_unknown_optimizer_and_schedule_are_worded_in_one_place():
    """train.* and method.* name a bad optimizer or schedule with the one sentence of train/optim.py."""
    sources = {path.relative_to(METHOD_DIR.parent).as_posix(): path.read_text() for path in METHOD_DIR.parent.rglob("*.py")}
    for phrase in ("Unknown optimizer", "Unknown schedule"):
        assert [name for name, text in sources.items() if phrase in text] == ["train/optim.py"], phrase
