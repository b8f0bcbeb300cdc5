"""The robustness checks on tiny problems whose answers are known."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError
from famr_cli.evaluate.model_eval import Predictions
from famr_cli.evaluate.robustness.base import ModelView
from famr_cli.evaluate.robustness.calibration import expected_calibration_error, mean_entropy
from famr_cli.evaluate.robustness.heldout import HeldOut
from famr_cli.evaluate.robustness.probe import linear_cka
from famr_cli.evaluate.robustness.run import RobustnessRun, RobustnessSettings, assess
from famr_cli.evaluate.robustness.sets import build_sets
from famr_cli.forget import ForgetSplit

CLASSES = 3


class FeatureNet(nn.Module):
    """timm's interface in miniature: forward_features, forward_head(pre_logits=...), get_classifier."""

    def __init__(self, pixels: int, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(pixels, width), nn.ReLU())
        self.fc = nn.Linear(width, CLASSES)

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, x, pre_logits: bool = False):
        return x if pre_logits else self.fc(x)

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def separable_problem(per_class: int = 60) -> tuple[ImageData, ForgetSplit]:
    """Class c lights pixel block c: any model that fits it separates every class in its features."""
    gen = torch.Generator().manual_seed(0)

    def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n * CLASSES) % CLASSES
        x = torch.randint(0, 60, (len(y), 1, 3, 4), generator=gen, dtype=torch.uint8)
        for c in range(CLASSES):
            x[y == c, 0, c, :] = 250
        return x, y

    x_train, y_train = images(per_class)
    x_test, y_test = images(per_class)
    data = ImageData(x_train, y_train, x_test, y_test, ["a", "b", "c"], (0.3,), (0.4,))
    split = ForgetSplit(
        (y_train == 0).nonzero().squeeze(1),
        (y_train != 0).nonzero().squeeze(1),
        (y_test == 0).nonzero().squeeze(1),
        (y_test != 0).nonzero().squeeze(1),
        "class a",
        [0],
    )
    return data, split


def fitted_model(data: ImageData, rows: torch.Tensor | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = FeatureNet(12)
    rows = torch.arange(len(data.y_train)) if rows is None else rows
    x = (data.x_train[rows].float() / 255 - 0.3) / 0.4
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), data.y_train[rows]).backward()
        optimizer.step()
    return model


def predictions(model: nn.Module, data: ImageData) -> Predictions:
    with torch.no_grad():
        probs = [torch.softmax(model((x.float() / 255 - 0.3) / 0.4), dim=1) for x in (data.x_train, data.x_test)]
    return Predictions.from_probs(*probs)


def settings(**checks) -> RobustnessSettings:
    section = {"holdout_per_class": 20, "relearn": {"shots": [5], "steps": 10, "lr": 0.05}, "probe": {}, "heldout": {}, "calibration": {}}
    section.update(checks)
    return RobustnessSettings.from_config(OmegaConf.create(section))


def run_for(data, split, robustness=None) -> RobustnessRun:
    return RobustnessRun(data, split, torch.device("cpu"), 64, 0, robustness or settings(), None, {"forget": "toy"})


def test_zeroed_head_row_is_recovered_by_the_probe_and_by_prototype_relearning():
    data, split = separable_problem()
    original = fitted_model(data)
    hidden = copy.deepcopy(original)
    with torch.no_grad():  # "forgotten" at the output only: the class's row is gone, its features untouched
        hidden.fc.weight[0] = 0
        hidden.fc.bias[0] = -100
    retrain = fitted_model(data, split.retain_train)
    out = assess(
        run_for(data, split),
        (hidden, predictions(hidden, data)),
        {"original": (original, "o", predictions(original, data)), "retrain": (retrain, "r", predictions(retrain, data))},
    )
    relearn, probe = out["unlearned"]["relearn"], out["unlearned"]["probe"]
    assert out["kind"] == "class"
    assert relearn["forget_acc_before"] == 0.0
    assert probe["probe_forget_acc"] >= 95.0  # the features still separate the class
    assert relearn["prototype_k5_forget_acc"] >= 95.0  # five held-out images and no training bring it back
    assert out["unlearned"]["probe"]["probe_retain_acc"] >= 95.0
    # Retrain never saw class a: its output gives the class no probability before any attack.
    assert out["retrain"]["relearn"]["forget_acc_before"] == 0.0
    assert out["vs_retrain"]["probe"]["cka_vs_original"] == pytest.approx(1.0)
    assert set(out["sets"]["sizes"]) == {"probe", "pool", "forget", "retain", "anchor"}


@pytest.mark.slow
def test_a_model_identical_to_retrain_has_no_residual_recoverability_and_equal_statistics():
    data, split = separable_problem()
    original = fitted_model(data)
    retrain = fitted_model(data, split.retain_train)
    same = copy.deepcopy(retrain)
    out = assess(
        run_for(data, split),
        (same, predictions(same, data)),
        {"original": (original, "o", predictions(original, data)), "retrain": (retrain, "r", predictions(retrain, data))},
    )
    vs = out["vs_retrain"]
    residuals = {k: v for k, v in vs["relearn"].items() if k.startswith("residual_")}
    assert residuals and all(v == pytest.approx(0.0, abs=1e-9) for v in residuals.values())
    assert vs["heldout"]["privleak"] == pytest.approx(0.0, abs=1e-9)
    assert vs["heldout"]["ks_loss_gap"] == pytest.approx(0.0, abs=1e-12)
    assert vs["probe"]["cka_vs_retrain"] == pytest.approx(1.0)
    assert vs["calibration"]["ece_gap"] == pytest.approx(0.0, abs=1e-9)
    assert out["unlearned"]["heldout"] == out["retrain"]["heldout"]


def test_identical_output_distributions_give_ks_zero_and_auc_one_half():
    probs = torch.softmax(torch.randn(50, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    labels = torch.arange(50) % 4
    outputs = {"forget_probs": probs, "forget_labels": labels, "heldout_probs": probs.clone(), "heldout_labels": labels.clone()}
    figures = HeldOut().measure(ModelView("m", None, outputs=outputs), None)
    assert figures["ks_confidence"] == 0.0 and figures["ks_loss"] == 0.0
    assert figures["auc"] == pytest.approx(0.5)
    # A model that fits D_f (low loss) and not the held-out images is separated perfectly.
    confident = torch.nn.functional.one_hot(labels, 4).float() * 0.97 + 0.0075
    outputs["forget_probs"] = confident
    separated = HeldOut().measure(ModelView("m", None, outputs=outputs), None)
    assert separated["auc"] == pytest.approx(1.0) and separated["ks_loss"] == pytest.approx(1.0)


def test_a_perfectly_calibrated_toy_has_ece_zero_and_an_overconfident_one_does_not():
    # Confidence 0.7 on class 0, right for 70 of 100 images: accuracy equals confidence in the only bin used.
    probs = torch.tensor([[0.7, 0.3]]).repeat(100, 1)
    labels = torch.tensor([0] * 70 + [1] * 30)
    assert expected_calibration_error(probs, labels, bins=15) == pytest.approx(0.0, abs=1e-4)  # float32 0.7
    always_wrong = torch.tensor([[0.99, 0.01]]).repeat(10, 1)
    assert expected_calibration_error(always_wrong, torch.ones(10, dtype=torch.long)) == pytest.approx(99.0)
    assert mean_entropy(torch.full((5, 4), 0.25)) == pytest.approx(torch.log(torch.tensor(4.0)).item())


def test_linear_cka_is_one_under_rotation_and_scale_and_low_for_unrelated_features():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen))
    assert linear_cka(x, 3.0 * x @ rotation) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(200, 6, generator=gen)) < 0.2


def test_sets_never_score_an_attack_image_and_sample_forgetting_relearns_from_d_f():
    data, split = separable_problem()
    sets = build_sets(data, split, per_class=20, max_shots=5, seed=0)
    as_rows = lambda x: {tuple(r.flatten().tolist()) for r in x}  # noqa: E731
    assert not as_rows(sets.pool_x) & as_rows(sets.forget_x)
    assert not as_rows(sets.probe_x) & (as_rows(sets.forget_x) | as_rows(sets.retain_x))
    assert (sets.pool_y == 0).all() and (sets.forget_y == 0).all() and (sets.retain_y != 0).all()
    # The retained images relearning mixes in are labelled held-out images too, never scored ones.
    assert (sets.anchor_y != 0).all() and not as_rows(sets.anchor_x) & (as_rows(sets.forget_x) | as_rows(sets.retain_x))
    rows = torch.arange(0, len(data.y_train), 5)  # a "random" 20 % of the training set, every class
    sample = ForgetSplit(
        rows,
        torch.tensor([i for i in range(len(data.y_train)) if i % 5]),
        torch.empty(0, dtype=torch.long),
        torch.arange(len(data.y_test)),
        "30 samples",
        [],
    )
    sets = build_sets(data, sample, per_class=20, max_shots=5, seed=0)
    assert sets.kind == "sample" and sets.relearnable
    assert torch.bincount(sets.pool_y).tolist() == [5, 5, 5]
    assert len(sets.pool_y) + len(sets.forget_y) == len(rows)
    assert "D_f" in sets.sources["pool"]


def test_robustness_settings_refuse_unknown_checks_and_keys_and_skip_disabled_ones():
    with pytest.raises(FamrError, match="Unknown robustness check 'relern'.*calibration, heldout, probe, relearn"):
        RobustnessSettings.from_config(OmegaConf.create({"relern": {}}))
    with pytest.raises(FamrError, match=r"evaluate.robustness.probe got an unknown setting"):
        RobustnessSettings.from_config(OmegaConf.create({"probe": {"c": 2}}))
    with pytest.raises(FamrError, match=r"evaluate.robustness.relearn.lr must be positive"):
        RobustnessSettings.from_config(OmegaConf.create({"relearn": {"lr": 0}}))
    only = settings(relearn={"enabled": False}, probe={"enabled": False})
    assert [c.name for c in only.checks] == ["heldout", "calibration"] and not only.needs_features


def test_quickstart_runs_report_every_check_and_a_cache_hit_recomputes_nothing(quickstart_runs):
    (first_proc, first), (_, second) = quickstart_runs
    rob = first["robustness"]
    assert {"original", "unlearned", "retrain", "vs_retrain", "headline"} <= set(rob)
    for model in ("original", "unlearned", "retrain"):
        assert set(rob[model]) == {"relearn", "probe", "heldout", "calibration"}
    # The original knows the class; Retrain, which never saw it, gives it nothing before any attack.
    assert rob["original"]["relearn"]["forget_acc_before"] >= 90.0
    assert rob["retrain"]["relearn"]["forget_acc_before"] == 0.0
    assert 0.0 <= rob["retrain"]["heldout"]["auc"] <= 1.0
    assert "is it forgotten?" in first_proc.stdout and "probe on forgotten" in first_proc.stdout
    # Second run: the original's and Retrain's checks come from the cache, with the same figures.
    later = second["robustness"]
    for model in ("original", "retrain"):
        assert later[model] == rob[model]
        assert later["seconds"][model] < 0.5 * rob["seconds"][model]
    assert second["timing"]["robustness_s"] == pytest.approx(sum(later["seconds"].values()))


def test_famr_robustness_prints_every_check_with_the_excess_over_retrain(tmp_path, capsys):
    import json

    import yaml

    from famr_cli.reproduce.robustness_report import main

    def figures(before: float, relearned: float) -> dict:
        return {"relearn": {"forget_acc_before": before, "full_k5_forget_acc": relearned}, "probe": {"probe_forget_acc": 50.0}}

    for num, method in enumerate(("famr", "finetune")):
        job = tmp_path / "sweep" / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"method={method}"]))
        rob = {
            "sets": {"forget": "test split: forgotten-class images outside the probe set", "pool": "test split: probe set"},
            "original": figures(95.0, 97.0),
            "retrain": figures(0.0, 20.0),
            "unlearned": figures(1.0, 30.0 + num),
            "vs_retrain": {"relearn": {"residual_full_k5": 10.0 + num}, "probe": {"cka_vs_retrain": 0.5}},
        }
        (job / "results.json").write_text(json.dumps({"status": "ok", "method": method, "robustness": rob}))
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "| Original | – | 95.00 | 97.00 |" in out and "| Retrain | D_r only | 0.00 | 20.00 |" in out
    assert "| method=finetune | D_r only | 1.00 | 31.00 (+11.00) |" in out and "0.50" in out
    assert main([str(tmp_path / "empty")]) == 1


def test_the_results_schema_accepts_what_runs_write_and_names_what_breaks_it(quickstart_runs):
    from conftest import check_results_schema

    _, results = quickstart_runs[0]
    check_results_schema(results)
    check_results_schema({"status": "failed", "method": "famr", "error": "one sentence", "exit_code": 2})
    broken = {**results, "timing": {k: v for k, v in results["timing"].items() if k != "unlearn_s"}}
    with pytest.raises(AssertionError, match="timing: 'unlearn_s' is a required property"):
        check_results_schema(broken)
    with pytest.raises(AssertionError, match="'exit_code' is a required property"):
        check_results_schema({"status": "failed", "method": "famr", "error": "no code"})
