"""The retrain reference: trained once per forget set, reused, compared against."""

from __future__ import annotations

import math
import shutil

import pytest

from conftest import NO_ROBUSTNESS, UNLEARN_THREADS, read_results, run_cli
from famr_cli.results import summary_table


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory, quickstart_runs, quickstart_cache):
    """famr against Retrain (the quickstart's second run, a cache hit for both models), then retrain and famr
    with no reference from a copy of the quickstart's cache; and a pair on a 3-epoch recipe (forget class 0,
    then class 1), where a second forget set's Retrain costs seconds instead of the quickstart's 80 epochs."""
    tmp = tmp_path_factory.mktemp("reference")
    shutil.copytree(quickstart_cache, tmp / "cache")
    runs = {"famr": quickstart_runs[1]}
    short = ["evaluate.reference=retrain", "train.epochs=3", "method.epochs=5"]
    for name, args in {
        "retrain": ["method=retrain", "evaluate.reference=retrain"],
        "none": ["evaluate.reference=none"],
        "class0": [*short, "forget.classes=[0]"],
        "class1": [*short, "forget.classes=[1]"],
    }.items():
        # The robustness checks beside Retrain are tested in tests/test_robustness.py.
        proc = run_cli([*args, NO_ROBUSTNESS, UNLEARN_THREADS, f"hydra.run.dir={tmp / name}"], cwd=tmp)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = (proc, read_results(tmp / name))
    yield runs
    shutil.rmtree(tmp, ignore_errors=True)


def test_reference_is_evaluated_and_compared(reference_runs):
    proc, results = reference_runs["famr"]
    retrain, unlearned = results["metrics"]["retrain"], results["metrics"]["unlearned"]
    # Retrain never saw class 0: it cannot recognise it, and it keeps the other classes.
    assert retrain["forget_test_acc"] <= 5.0 and retrain["UA"] >= 95.0
    assert retrain["retain_test_acc"] >= 95.0
    gaps = results["gaps"]
    for key in ("UA", "RA", "TA", "MIA"):
        assert gaps[key] == pytest.approx(
            abs(unlearned[key if key != "MIA" else "mia_efficacy"] - retrain[key if key != "MIA" else "mia_efficacy"])
        )
    assert gaps["avg_gap"] == pytest.approx(sum(gaps[k] for k in ("UA", "RA", "TA", "MIA")) / 4)
    assert 0 < gaps["js_forget"] <= math.log(2) and 0 < gaps["js_test"] <= math.log(2)
    assert results["timing"]["retrain_s"] > 0
    assert results["timing"]["rte_frac_of_retrain"] == pytest.approx(results["timing"]["unlearn_s"] / results["timing"]["retrain_s"])
    assert "Avg. Gap to Retrain" in summary_table(results) and "retrain" in summary_table(results).splitlines()[0]


def test_mia_features_are_all_recorded(reference_runs):
    metrics = reference_runs["famr"][1]["metrics"]
    for name in ("original", "unlearned", "retrain"):
        assert set(metrics[name]["mia"]) == {"confidence", "correctness", "entropy", "m_entropy", "prob"}
        assert 0.0 <= metrics[name]["mia_efficacy"] <= 100.0
    assert metrics["unlearned"]["mia_efficacy"] == metrics["unlearned"]["mia"]["confidence"]


def test_method_retrain_reuses_the_cached_reference(reference_runs):
    proc, results = reference_runs["retrain"]
    first = reference_runs["famr"][1]
    assert results["cache"]["retrain"] == {"key": first["cache"]["retrain"]["key"], "hit": True}
    assert "Retrain model loaded from cache" in proc.stderr + proc.stdout
    # The unlearned model IS the reference: no gap, and its cost is the recorded training time.
    assert results["gaps"]["avg_gap"] == pytest.approx(0.0) and results["gaps"]["js_test"] == pytest.approx(0.0, abs=1e-9)
    assert results["timing"]["unlearn_s"] == pytest.approx(first["timing"]["retrain_s"])
    assert results["metrics"]["unlearned"]["test_acc"] == first["metrics"]["retrain"]["test_acc"]


def test_no_reference_means_no_retrain_and_no_gaps(reference_runs):
    proc, results = reference_runs["none"]
    assert "retrain" not in results["metrics"] and "retrain" not in results["cache"]
    assert results["gaps"] == {} and results["timing"]["retrain_s"] is None


def test_another_forget_set_gets_its_own_reference(reference_runs):
    _, results = reference_runs["class1"]
    first = reference_runs["class0"][1]
    assert first["cache"]["retrain"]["hit"] is False and first["cache"]["original"]["hit"] is False
    assert results["cache"]["retrain"]["hit"] is False
    assert results["cache"]["retrain"]["key"] != first["cache"]["retrain"]["key"]
    assert results["cache"]["original"] == {"key": first["cache"]["original"]["key"], "hit": True}
    assert results["metrics"]["retrain"]["forget_test_acc"] <= 5.0
