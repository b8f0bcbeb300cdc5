"""Per-experiment tuned values as Hydra config: applied, visible, overridable, and checked for typos."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import compose_config, run_cli
from famr_cli.cli import CONFIG_DIR
from famr_cli.config_schema import check_known_keys
from famr_cli.errors import FamrError

TUNED = Path(CONFIG_DIR) / "method" / "tuned"
TUNED_FILES = sorted(TUNED.rglob("*.yaml"))


def _parts(path: Path) -> tuple[str, str, str]:
    experiment, forget, method = path.relative_to(TUNED).with_suffix("").parts
    return experiment, forget, method


@pytest.mark.parametrize("path", TUNED_FILES, ids=["/".join(_parts(p)) for p in TUNED_FILES])
def test_every_tuned_file_is_applied_with_plain_values_and_names_its_search(path):
    experiment, forget, method = _parts(path)
    cfg = compose_config([f"experiment={experiment}", f"forget={forget}", f"method={method}"])
    declared = yaml.safe_load(path.read_text())
    for key, value in declared.items():
        assert OmegaConf.to_container(cfg.method)[key] == value, key
    # --cfg job prints what a job will use: no interpolation left in the method section.
    assert "${" not in OmegaConf.to_yaml(cfg.method)
    assert {"protocol", "trials", "date", "commit"} <= set(declared["tuned_by"])
    check_known_keys(cfg)


def test_the_command_line_beats_the_tuned_file():
    cfg = compose_config(["experiment=cifar10_cpu", "method=scrub", "method.max_steps=3", "method.lr=0.5"])
    assert (cfg.method.max_steps, cfg.method.lr, cfg.method.epochs) == (3, 0.5, 2)


def test_tuned_values_stay_with_their_experiment_forget_spec_and_method():
    shipped = yaml.safe_load((Path(CONFIG_DIR) / "method" / "scrub.yaml").read_text())
    assert compose_config(["method=scrub"]).method.lr == 0.01  # quickstart, class
    assert compose_config(["method=scrub", "forget=sample"]).method.lr == shipped["lr"]
    assert "tuned_by" not in compose_config(["method=ssd"]).method  # no file: the method's own defaults
    famr = compose_config(["experiment=cifar10_cpu"]).method
    assert list(famr.trainable) == ["layer4", "fc"]
    finetune = yaml.safe_load((Path(CONFIG_DIR) / "method" / "tuned" / "cifar10_cpu" / "class" / "finetune.yaml").read_text())
    published = yaml.safe_load((Path(CONFIG_DIR) / "method" / "finetune.yaml").read_text())["lr"]
    assert compose_config(["experiment=cifar10_cpu", "method=finetune"]).method.lr == finetune["lr"] != published


def test_a_misspelt_key_in_a_tuned_file_fails_naming_the_valid_keys(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    bad = conf / "method" / "tuned" / "quickstart" / "class" / "famr.yaml"
    bad.write_text(bad.read_text().replace("lam: 0.1", "lamm: 0.1"))
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["evaluate.reference=none"])
    with pytest.raises(FamrError) as err:
        check_known_keys(cfg)
    message = str(err.value)
    assert message.startswith("method.lamm is not a setting of method=famr") and message.endswith(".")
    assert "lam, loss, lr" in message and message.count(".") <= 4


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("+method.lamm=5", "method.lamm is not a setting of method=famr"),
        ("+evaluate.newton.tolerance=1", "evaluate.newton.tolerance is not a setting of any evaluate option"),
        ("+forget.fraction=0.1", "forget.fraction is not a setting of forget=class"),
        ("+logger.project=x", "logger.project is not a setting of logger=none"),
    ],
)
def test_unknown_keys_in_any_section_are_refused(override, fragment):
    with pytest.raises(FamrError, match=fragment.replace(".", r"\.")):
        check_known_keys(compose_config([override]))


def test_timm_keyword_arguments_stay_free_form():
    check_known_keys(compose_config(["+backbone.kwargs.drop_rate=0.1"]))


@pytest.mark.slow
def test_famr_run_refuses_an_added_unknown_key_before_any_work(tmp_path):
    proc = run_cli(["+method.lamm=5"], tmp_path)
    assert proc.returncode == 2
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "valid keys: anchor, batch_size, bn, epochs" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cache" / "original").exists()  # nothing was trained


def test_an_option_famr_does_not_ship_is_left_to_its_own_code(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    (conf / "logger" / "mine.yaml").write_text("name: mine\nendpoint: http://localhost\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["logger=mine", "evaluate.reference=none"])
    check_known_keys(cfg)  # no schema for logger=mine here; the shipped sections are still checked
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["logger=mine", "+method.lamm=1"])
    with pytest.raises(FamrError, match="method.lamm"):
        check_known_keys(cfg)
