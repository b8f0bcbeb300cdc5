"""famr-privacy: populations of models built through the keyed cache, resumed without training twice, and its tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_config, forked_famr_run, use_cli_env
from famr_cli.model_store import original_cache_key, retrain_inputs
from famr_cli.prepared import prepare
from famr_cli.privacy import cli as privacy_cli
from famr_cli.privacy import outputs as privacy_outputs
from famr_cli.privacy.competition import logit_scaled_confidence
from famr_cli.privacy.population import COMPETITION, FULL, plan_populations
from famr_cli.privacy.scores import SCORE_LIMIT, log_odds_from_logits


def test_log_odds_match_the_official_confidence_and_keep_precision_where_p_rounds_to_one():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [30.0, 0.0, 0.0], [0.0, 200.0, 0.0]])
    labels = torch.tensor([0, 2, 0, 0])
    got = log_odds_from_logits(logits, labels).numpy()
    probs = torch.softmax(logits.double(), dim=1)[torch.arange(4), labels].numpy()
    # Where float64 probabilities are exact enough, the official log(p) - log(1 - p) agrees.
    assert got[:2] == pytest.approx(logit_scaled_confidence(probs[:2]), abs=1e-9)
    assert got[1] == pytest.approx(math.log(1 / 2))
    # p = 1 - 2e-13: float32 softmax gives exactly 1 (score 103.6 for every such example); the logits give 30 - ln 2.
    assert torch.softmax(logits[2:3], dim=1)[0, 0].item() == 1.0
    assert got[2] == pytest.approx(30.0 - math.log(2.0), abs=1e-9)
    # Clipped to the range the official formula can reach.
    assert got[3] == -SCORE_LIMIT and SCORE_LIMIT == pytest.approx(103.616, abs=1e-3)


def test_retrain_seed_finds_the_retrain_that_train_seed_trains_and_leaves_the_original_alone():
    base = compose_config(["evaluate.reference=retrain"])
    moved = compose_config(["evaluate.reference=retrain", "retrain_seed=3"])
    other = compose_config(["evaluate.reference=retrain", "train.seed=3"])
    split = prepare(base).split
    assert original_cache_key(moved) == original_cache_key(base) != original_cache_key(other)
    assert retrain_inputs(moved, split) == retrain_inputs(other, split) != retrain_inputs(base, split)
    assert retrain_inputs(compose_config(["evaluate.reference=retrain", "retrain_seed=0"]), split) == retrain_inputs(base, split)


def test_the_populations_vary_the_seeds_each_protocol_names(tmp_path):
    sweeps = plan_populations(tmp_path, ["famr", "ssd"], 4, [COMPETITION, FULL], 7, ["experiment=quickstart"])
    by_name = {s.name: s.overrides for s in sweeps}
    assert list(by_name) == ["retrain", "competition/famr", "competition/ssd", "full/famr", "full/ssd"]
    assert by_name["retrain"][1:] == ("method=retrain", "seed=7", "train.seed=7", "retrain_seed=0,1,2,3,4,5,6,7")
    assert by_name["competition/ssd"][1:] == ("method=ssd", "train.seed=7", "seed=0,1,2,3")
    assert by_name["full/famr"][1:] == ("method=famr", "train.seed=${seed}", "seed=0,1,2,3")
    # A forget spec that draws its samples with forget.seed (which follows seed) gets it pinned: one D_f for all.
    sample = plan_populations(tmp_path, ["famr"], 4, [FULL], 7, ["forget=sample"], forget_seed=True)
    assert all(s.overrides[:2] == ("forget=sample", "forget.seed=7") for s in sample)
    theirs = plan_populations(tmp_path, ["famr"], 4, [FULL], 7, ["forget=sample", "forget.seed=3"], forget_seed=True)
    assert all("forget.seed=7" not in s.overrides for s in theirs)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--models", "3"], "--models must be at least 4"),
        (["--methods", "nope"], "Unknown method nope"),
        (["--protocols", "shadow"], "Unknown protocol shadow"),
        (["--methods", "unsir", "forget=sample"], "defined for class forgetting only"),
        (["dataset=nope"], "do not compose"),
    ],
)
def test_bad_requests_are_one_sentence_before_anything_runs(tmp_path, capsys, args, fragment):
    assert privacy_cli.main(["--dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def _entries(cache: Path) -> dict[str, float]:
    """Every cached model's entry and the time it was saved."""
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())["saved_at"] for p in cache.glob("*/*/meta.json")}


@pytest.mark.slow
def test_populations_share_the_cache_resume_without_training_twice_and_name_what_is_missing(tmp_path, monkeypatch, capsys):
    use_cli_env(monkeypatch, tmp_path, **forked_famr_run())
    # SSD has no randomness given its original: its competition population has no spread, the official rule's case.
    args = ["--dir", str(tmp_path / "privacy"), "--methods", "ssd", "--models", "4", "train.epochs=2", "threads=1"]
    assert privacy_cli.main(args) == 0, capsys.readouterr().err[-3000:]
    out = tmp_path / "privacy" / "quickstart" / "class"
    document = json.loads((out / "privacy.json").read_text())
    rows = {(r["protocol"], r["label"]): r for r in document["rows"]}
    assert list(rows) == [(p, label) for p in (COMPETITION, FULL) for label in ("Retrain (disjoint)", "SSD", "Original")]
    assert all(r["n"] == 4 and r["figures"] for r in rows.values())
    forget = len(document["forget_indices"])
    assert forget > 100 and all(len(r["per_example"]["epsilon"]) == forget for r in rows.values())
    # The competition's Original is one model: no spread, epsilon = 50 on every example, F = 0.
    original = rows[(COMPETITION, "Original")]["figures"]
    assert original["epsilon_median"] == 50.0 and original["F"] == 0.0 and original["no_spread_share"] == 1.0
    assert rows[(COMPETITION, "SSD")]["figures"]["no_spread_share"] == 1.0 and "no spread" in rows[(COMPETITION, "SSD")]["note"]
    # Retrain against Retrain is the best row; the full protocol's originals vary, so its Original row has spread.
    best = rows[(COMPETITION, "Retrain (disjoint)")]["figures"]
    assert best["F"] > original["F"] and best["ulira_auc"] < 0.8 and rows[(FULL, "Original")]["figures"]["no_spread_share"] < 0.5
    assert "Competition protocol" in (out / "privacy.md").read_text() and (out / "epsilon_hist.png").stat().st_size > 1000
    # 8 Retrains (seeds 0-7) and 4 originals (seeds 0-3): the full protocol's references are Retrains 0-3, trained once.
    cache = tmp_path / "cache"
    entries = _entries(cache)
    assert sum(k.startswith("retrain/") for k in entries) == 8 and sum(k.startswith("original/") for k in entries) == 4

    # A member killed before it wrote its results runs again; nothing else does, and no model is trained twice.
    killed = out / "populations" / "competition" / "ssd" / "2"
    (killed / "results.json").unlink()
    (killed / "forget_scores.safetensors").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (out / "populations").glob("**/results.json")}
    assert privacy_cli.main(args) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items()), "a finished member ran again"
    assert (killed / "results.json").is_file() and _entries(cache) == entries
    again = {(r["protocol"], r["label"]): r["figures"] for r in json.loads((out / "privacy.json").read_text())["rows"]}
    assert again == {k: r["figures"] for k, r in rows.items()}

    # A member that is still missing is named, and only the rows that need it are left empty.
    (out / "populations" / "retrain" / "5" / "results.json").unlink()
    assert privacy_cli.main([*args, "--tables-only"]) == 1
    document = json.loads((out / "privacy.json").read_text())
    assert any("retrain seed 5" in line for line in document["problems"])
    rows = {(r["protocol"], r["label"]): r for r in document["rows"]}
    assert rows[(FULL, "Retrain (disjoint)")]["figures"] == {} and "incomplete" in rows[(FULL, "Retrain (disjoint)")]["note"]
    assert np.isfinite(rows[(FULL, "SSD")]["figures"]["F"])


@pytest.mark.slow
def test_the_privacy_table_and_histogram_go_to_an_offline_wandb_run(tmp_path, monkeypatch):
    from famr_cli.privacy.report import PrivacyRow

    monkeypatch.setenv("WANDB_SILENT", "true")
    figures = {"F": 0.25, "final_score": 0.2, "epsilon_median": 1.5, "epsilon_p90": 2.0, "ulira_auc": 0.55, "ulira_tpr_at_1pct_fpr": 0.01}
    rows = [PrivacyRow(COMPETITION, "FAMR", "D_f only", False, 4, figures, {"epsilon": [0.5, 1.5, 50.0]})]
    histogram = privacy_outputs.histogram(rows, tmp_path / "epsilon_hist.png")
    document = {
        "experiment": "quickstart",
        "rows": [{"protocol": COMPETITION, "label": "FAMR", "reads": "D_f only", "n": 4, "figures": figures}],
    }
    logger = {"name": "wandb", "mode": "offline", "project": "famr", "dir": str(tmp_path)}
    privacy_outputs.log_to_wandb(logger, document, [histogram], tmp_path)
    (table_file,) = tmp_path.rglob("offline-run-*/files/media/table/privacy/table_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:5] == ["protocol", "row", "reads", "N", "F"] and table["data"] == [
        [COMPETITION, "FAMR", "D_f only", 4, 0.25, 0.2, 1.5, 2.0, 0.55, 0.01]
    ]
    assert list(tmp_path.rglob("offline-run-*/files/media/images/privacy/epsilon_hist_*.png"))
