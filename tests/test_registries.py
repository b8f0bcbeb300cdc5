"""Every extension point is one registry of subclasses of one base class, filled the same way."""

from __future__ import annotations

import sys

import pytest
from omegaconf import OmegaConf

from famr_cli.backbone import BACKBONES, Backbone, build_backbone
from famr_cli.dataset import DATASETS, Dataset, DatasetShape, describe_dataset
from famr_cli.errors import FamrError
from famr_cli.evaluate.robustness import CHECKS, RobustnessCheck
from famr_cli.forget import FORGET_SPECS, ForgetSpec, check_forget_config, modifies_training_data
from famr_cli.logger import LOGGERS, ExperimentLogger, build_logger
from famr_cli.logger.none import NoLogger
from famr_cli.method import METHODS, UnlearningMethod
from famr_cli.registry import Registry, import_submodules

# registry, base class, the names it must list, and the override its error names.
REGISTRIES = {
    "dataset": (DATASETS, Dataset, ["cifar10", "digits", "imagenet100"], "dataset=<name>"),
    "forget spec": (FORGET_SPECS, ForgetSpec, ["class", "sample", "style"], "forget=<name>"),
    "backbone builder": (BACKBONES, Backbone, ["resnet", "timm", "vit"], "backbone.builder"),
    "logger": (LOGGERS, ExperimentLogger, ["none", "wandb"], "logger=<name>"),
    "method": (
        METHODS,
        UnlearningMethod,
        sorted(
            ["famr", "finetune", "grad_ascent", "l1_sparse", "random_label", "retrain", "salun", "scrub", "ssd"]
            + ["neggrad_plus", "bad_teacher", "cf_k", "eu_k", "boundary_shrink", "boundary_expand", "unsir", "fisher", "jit"]
        ),
        "method=<name>",
    ),
    "robustness check": (CHECKS, RobustnessCheck, ["calibration", "heldout", "probe", "relearn"], "evaluate.robustness.<check>"),
}


@pytest.mark.parametrize("kind", REGISTRIES)
def test_registry_lists_its_entries_each_a_subclass_of_the_base(kind):
    registry, base, names, _ = REGISTRIES[kind]
    assert registry.kind == kind
    assert registry.names() == names
    for name in names:
        entry = registry.get(name)
        assert isinstance(entry, type) and issubclass(entry, base), (kind, name, entry)


@pytest.mark.parametrize("kind", REGISTRIES)
def test_unknown_name_is_one_sentence_naming_the_choices(kind):
    registry, _, names, config_key = REGISTRIES[kind]
    with pytest.raises(FamrError) as err:
        registry.get("nope")
    assert str(err.value) == f"Unknown {kind} 'nope': set {config_key} to one of {', '.join(names)}."


def test_registering_a_name_twice_raises_and_keeps_the_first():
    first = DATASETS.get("digits")

    class Again(Dataset):
        def describe(self, cfg):
            raise AssertionError

        def load(self, cfg, cache_root):
            raise AssertionError

    with pytest.raises(ValueError, match="dataset 'digits' is registered twice"):
        DATASETS.register("digits")(Again)
    assert DATASETS.get("digits") is first


def test_a_dataset_without_describe_can_neither_register_nor_be_built():
    class LoadsOnly(Dataset):
        def load(self, cfg, cache_root):
            raise AssertionError

    with pytest.raises(TypeError, match="describe"):
        DATASETS.register("loads_only")(LoadsOnly)
    assert "loads_only" not in DATASETS
    with pytest.raises(TypeError):
        LoadsOnly()


@pytest.mark.parametrize(
    ("registry", "base"),
    [(DATASETS, Dataset), (FORGET_SPECS, ForgetSpec), (BACKBONES, Backbone), (LOGGERS, ExperimentLogger)],
)
def test_only_subclasses_of_the_base_register(registry, base):
    def function(*args):
        raise AssertionError

    with pytest.raises(TypeError, match=base.__name__):
        registry.register("function")(function)
    assert "function" not in registry


def test_a_registry_without_a_base_takes_any_entry():
    registry: Registry[object] = Registry("thing", "thing=<name>")
    registry.register("a")(len)
    assert registry.get("a") is len and "a" in registry and registry.names() == ["a"]


def test_forget_spec_defaults_check_nothing_and_keep_the_training_data():
    class Everything(ForgetSpec):
        def split(self, cfg, data):
            raise AssertionError

    shape = DatasetShape(["a", "b"], in_chans=1, img_size=8)
    assert Everything().check(OmegaConf.create({}), shape) is None
    assert Everything.modifies_training_data is False
    assert [n for n in FORGET_SPECS.names() if FORGET_SPECS.get(n).modifies_training_data] == ["style"]
    assert modifies_training_data(OmegaConf.create({"name": "style"}))
    assert not modifies_training_data(OmegaConf.create({"name": "class"}))
    assert not modifies_training_data(OmegaConf.create({"name": "nope"}))  # validation names the bad spec, not this


def test_module_helpers_go_through_the_registries():
    shape = describe_dataset(OmegaConf.create({"name": "digits", "test_fraction": 0.2, "split_seed": 0}))
    assert (shape.num_classes, shape.in_chans, shape.img_size) == (10, 1, 8)
    check_forget_config(OmegaConf.create({"name": "class", "classes": [0]}), shape)
    with pytest.raises(FamrError, match=r"^Unknown forget spec 'nope': set forget=<name>"):
        check_forget_config(OmegaConf.create({"name": "nope"}), shape)
    with pytest.raises(FamrError, match=r"^Unknown backbone builder 'nope': set backbone.builder"):
        build_backbone(OmegaConf.create({"builder": "nope"}), 10, 1, 8)
    logger = build_logger(OmegaConf.create({"name": "none"}))
    assert type(logger) is NoLogger and logger.cfg.name == "none"


def test_import_submodules_imports_every_module_but_the_skipped(tmp_path, monkeypatch):
    package = tmp_path / "plugpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("alpha", "beta", "shared"):
        (package / f"{name}.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import plugpkg

    try:
        import_submodules("plugpkg", plugpkg.__path__, skip={"shared"})
        assert "plugpkg.alpha" in sys.modules and "plugpkg.beta" in sys.modules
        assert "plugpkg.shared" not in sys.modules
    finally:
        for name in [m for m in sys.modules if m == "plugpkg" or m.startswith("plugpkg.")]:
            del sys.modules[name]
