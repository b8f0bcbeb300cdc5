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
from famr_cli.tune.space import declared_space
from famr_cli.tune.tuned_file import tuned_file_problems

TUNED = Path(CONFIG_DIR) / "method" / "tuned"
TUNED_FILES = sorted(TUNED.rglob("*.yaml"))


def _parts(path: Path) -> tuple[str, str, str]:
    experiment, forget, method = path.relative_to(TUNED).with_suffix("").parts
    return experiment, forget, method


def _conf_with_tuned_file(tmp_path: Path, relative: str, body: str) -> Path:
    """A copy of the shipped configs with one tuned file written into it (its path under conf/method/tuned/)."""
    conf = tmp_path / "conf"
    if not conf.exists():
        shutil.copytree(CONFIG_DIR, conf)
    path = conf / "method" / "tuned" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return conf


def _compose_in(conf: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _searched_file(experiment: str, method: str, values: dict, **tuned_by) -> str:
    """A tuned file as famr-tune writes it: the values its search chose and the search's provenance."""
    space = {p.key: p.as_dict() for p in declared_space(experiment, method)}
    provenance = {"protocol": "famr-tune", "split": "val", "space": space, "forget_sets": ["forget.classes=[3]", "forget.classes=[8]"]}
    provenance.update(trials=10, accepted=10, date="2026-12-06", commit="abc1234", **tuned_by)
    return yaml.safe_dump({**values, "tuned_by": provenance}, sort_keys=False)


@pytest.mark.parametrize("path", TUNED_FILES, ids=["/".join(_parts(p)) for p in TUNED_FILES])
def test_every_shipped_tuned_file_holds_only_what_its_validation_search_chose(path):
    assert tuned_file_problems(path, TUNED) == []
    experiment, forget, method = _parts(path)
    cfg = compose_config([f"experiment={experiment}", f"forget={forget}", f"method={method}"])
    declared = yaml.safe_load(path.read_text())
    for key, value in declared.items():
        assert OmegaConf.to_container(cfg.method)[key] == value, key
    # --cfg job prints what a job will use: no interpolation left in the method section.
    assert "${" not in OmegaConf.to_yaml(cfg.method)
    check_known_keys(cfg)


def test_every_method_of_one_experiment_and_forget_spec_had_the_same_budget():
    budgets: dict[tuple[str, str], set] = {}
    for path in TUNED_FILES:
        experiment, forget, _ = _parts(path)
        budgets.setdefault((experiment, forget), set()).add(yaml.safe_load(path.read_text())["tuned_by"]["trials"])
    assert all(len(trials) == 1 and min(trials) >= 10 for trials in budgets.values()), budgets


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"trainable": ["layer4", "fc"]}, "trainable is outside the search's space"),
        ({"loss": "entropy"}, "loss is outside the search's space"),
        ({"lam": 5000.0}, "lam=5000.0 lies outside its searched range"),
        ({"tuned_by": {"split": "test"}}, "did not select on the validation split"),
        ({"tuned_by": {"protocol": "hand sweep"}}, "not famr-tune"),
        ({"tuned_by": {"forget_sets": ["forget.classes=[3]"]}}, "fewer than two forget sets"),
        ({"tuned_by": {"space": {"method.lam": {"low": 0.01, "high": 10.0, "log": True}}}}, "not famr's declared space today"),
        ({"drop": "epochs"}, "the search's keys ['epochs'] are missing"),
    ],
)
def test_a_tuned_file_with_anything_its_search_did_not_choose_fails(tmp_path, edit, fragment):
    values = {"lam": 20.0, "lr": 1.0e-4, "epochs": 4}
    good = tmp_path / "tuned" / "cifar10_cpu" / "class" / "famr.yaml"
    good.parent.mkdir(parents=True)
    good.write_text(_searched_file("cifar10_cpu", "famr", values))
    assert tuned_file_problems(good, tmp_path / "tuned") == []
    written = yaml.safe_load(good.read_text())
    written["tuned_by"].update(edit.pop("tuned_by", {}))
    written.pop(edit.pop("drop", None), None)
    written.update(edit)
    good.write_text(yaml.safe_dump(written))
    problems = tuned_file_problems(good, tmp_path / "tuned")
    assert len(problems) == 1 and fragment in problems[0], problems


def test_scrub_max_steps_must_stay_below_the_epochs_its_search_chose(tmp_path):
    path = tmp_path / "tuned" / "cifar10_cpu" / "class" / "scrub.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(_searched_file("cifar10_cpu", "scrub", {"epochs": 3, "max_steps": 2, "lr": 1.0e-3}))
    assert tuned_file_problems(path, tmp_path / "tuned") == []
    path.write_text(_searched_file("cifar10_cpu", "scrub", {"epochs": 2, "max_steps": 2, "lr": 1.0e-3}))
    assert "breaks its bound below method.epochs" in tuned_file_problems(path, tmp_path / "tuned")[0]


def test_ssd_lambda_must_stay_at_most_the_alpha_its_search_chose(tmp_path):
    path = tmp_path / "tuned" / "cifar10_cpu" / "class" / "ssd.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(_searched_file("cifar10_cpu", "ssd", {"alpha": 10.0, "lambda": 1.0}))
    assert tuned_file_problems(path, tmp_path / "tuned") == []
    path.write_text(_searched_file("cifar10_cpu", "ssd", {"alpha": 0.5, "lambda": 2.0}))
    assert "breaks its bound at most method.alpha" in tuned_file_problems(path, tmp_path / "tuned")[0]


def test_the_command_line_beats_the_tuned_file(tmp_path):
    body = _searched_file("cifar10_cpu", "scrub", {"epochs": 4, "max_steps": 2, "lr": 1.0e-3})
    conf = _conf_with_tuned_file(tmp_path, "cifar10_cpu/class/scrub.yaml", body)
    cfg = _compose_in(conf, ["experiment=cifar10_cpu", "method=scrub", "method.max_steps=3", "method.lr=0.5"])
    assert (cfg.method.max_steps, cfg.method.lr, cfg.method.epochs) == (3, 0.5, 4)


def test_tuned_values_stay_with_their_experiment_forget_spec_and_method(tmp_path):
    shipped = yaml.safe_load((Path(CONFIG_DIR) / "method" / "scrub.yaml").read_text())
    conf = _conf_with_tuned_file(
        tmp_path, "quickstart/class/scrub.yaml", _searched_file("quickstart", "scrub", {"epochs": 5, "max_steps": 1, "lr": 0.01})
    )
    assert _compose_in(conf, ["method=scrub"]).method.lr == 0.01  # quickstart, class
    assert _compose_in(conf, ["method=scrub", "forget=sample"]).method.lr == shipped["lr"]
    assert "tuned_by" not in _compose_in(conf, ["method=ssd", "forget=sample"]).method  # no file: the method's own defaults
    # Every key the file does not hold is the method's own default: nothing carried over.
    assert _compose_in(conf, ["method=scrub"]).method.forget_batch_size == shipped["forget_batch_size"]
    # A named variant of FAMR reads its own file, never FAMR's.
    conf = _conf_with_tuned_file(
        tmp_path, "quickstart/class/famr.yaml", _searched_file("quickstart", "famr", {"lam": 3.0, "lr": 1e-3, "epochs": 50})
    )
    assert _compose_in(conf, ["method=famr"]).method.lam == 3.0
    conf = _conf_with_tuned_file(
        tmp_path, "quickstart/class/famr_entropy.yaml", _searched_file("quickstart", "famr_entropy", {"lam": 7.0, "lr": 1e-3, "epochs": 50})
    )
    assert _compose_in(conf, ["method=famr_entropy"]).method.lam == 7.0
    (conf / "method" / "tuned" / "quickstart" / "class" / "famr_entropy.yaml").unlink()
    famr_default = yaml.safe_load((Path(CONFIG_DIR) / "method" / "famr.yaml").read_text())["lam"]
    assert _compose_in(conf, ["method=famr_entropy"]).method.lam == famr_default != 3.0


def test_a_misspelt_key_in_a_tuned_file_fails_naming_the_valid_keys(tmp_path):
    conf = _conf_with_tuned_file(tmp_path, "quickstart/class/famr.yaml", "lamm: 0.1\n")
    cfg = _compose_in(conf, ["evaluate.reference=none"])
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
