"""The scripts behind two of the docs' tables: official recipes beside famr's earlier ones, and class transfer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import compose_config
from famr_cli.config_schema import check_known_keys
from famr_cli.method import build_method

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recipe_comparison = _script("recipe_comparison")
class_transfer = _script("class_transfer")


@pytest.mark.parametrize("method", sorted(recipe_comparison.EARLIER))
def test_each_earlier_recipe_is_a_valid_set_of_options_that_changes_the_default(method):
    # Against the method's own YAML (no experiment, so no tuned file): the recipes the script compares.
    official = compose_config(["~experiment", f"method={method}"]).method
    earlier = compose_config(["~experiment", f"method={method}", *recipe_comparison.EARLIER[method]])
    check_known_keys(earlier)
    build_method(earlier.method)  # every value passes the method's own checks
    changed = [o.split("=", 1)[0].removeprefix("method.") for o in recipe_comparison.EARLIER[method]]
    assert all(earlier.method[key] != official[key] for key in changed), method


def test_the_recipe_comparison_refuses_a_method_without_an_earlier_recipe(capsys):
    assert recipe_comparison.main(["--methods", "famr"]) == 2
    assert "no earlier recipe is recorded for ['famr']" in capsys.readouterr().err


def _results(tmp_path: Path, job: int, method: str, cls: int, forget: float, retained: float, original_retained: float = 80.0):
    results = {
        "status": "ok",
        "method": method,
        "forget": {"classes": [cls]},
        "metrics": {
            "original": {"forget_test_acc": 90.0, "retain_test_acc": original_retained},
            "unlearned": {"forget_test_acc": forget, "retain_test_acc": retained},
        },
    }
    (tmp_path / str(job)).mkdir()
    (tmp_path / str(job) / "results.json").write_text(json.dumps(results))


def test_the_class_transfer_table_counts_the_classes_meeting_the_bar(tmp_path):
    _results(tmp_path, 0, "famr", 0, forget=9.9, retained=77.5)  # forgotten, 2.5 points lost: meets the bar
    _results(tmp_path, 1, "famr", 1, forget=10.5, retained=80.0)  # not forgotten enough
    _results(tmp_path, 2, "famr", 2, forget=0.0, retained=76.0)  # forgotten at 4 points: too costly
    _results(tmp_path, 3, "ssd", 0, forget=0.0, retained=80.5)
    table = class_transfer.markdown(class_transfer.collect(tmp_path), [0, 1, 2])
    lines = table.splitlines()
    assert lines[2] == "| original | 90.0 / 80.0 | 90.0 / 80.0 | 90.0 / 80.0 | – |"
    assert lines[3] == "| famr | 9.9 / 77.5 | 10.5 / 80.0 | 0.0 / 76.0 | 1 of 3 run |"
    assert lines[4] == "| ssd | 0.0 / 80.5 | – | – | 1 of 1 run |"


def test_the_class_transfer_merges_sweeps_run_side_by_side(tmp_path, capsys):
    first, second = tmp_path / "famr", tmp_path / "ssd"
    first.mkdir(), second.mkdir()
    _results(first, 0, "famr", 0, forget=9.9, retained=77.5)
    _results(second, 0, "ssd", 0, forget=0.0, retained=80.5)
    _results(second, 1, "famr", 1, forget=10.5, retained=80.0)
    assert class_transfer.main(["--classes", "0,1", "--table-only", str(first), str(second)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3] == "| famr | 9.9 / 77.5 | 10.5 / 80.0 | 1 of 2 run |"
    assert lines[4] == "| ssd | 0.0 / 80.5 | – | 1 of 1 run |"


def test_the_class_transfer_refuses_class_ids_that_are_not_numbers(capsys):
    assert class_transfer.main(["--classes", "cat,dog"]) == 2
    assert "--classes takes class ids" in capsys.readouterr().err
