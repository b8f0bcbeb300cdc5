"""Closed-form checks of the unlearning metrics (UA/RA/TA, MIA-Efficacy, JS, Avg. Gap, RTE)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from famr_cli.evaluate.unlearning_metrics import (
    METRICS,
    avg_gap,
    js_divergence,
    m_entropy,
    mia_efficacy,
    rte,
    unlearning_scores,
    unlearning_scores_from_predictions,
)

K = 10
FEATURES = ["confidence", "correctness", "entropy", "m_entropy", "prob"]


def one_hot_correct(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Member-like rows: all mass on the true label (confidence 1.0)."""
    labels = torch.arange(n) % K
    return torch.nn.functional.one_hot(labels, K).double(), labels


def diffuse_wrong(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-member-like rows: p_y = 0.1 and the argmax (0.18) on another class, so every feature separates."""
    labels = torch.arange(n) % K
    probs = torch.full((n, K), 0.09, dtype=torch.float64)
    probs[torch.arange(n), labels] = 0.1
    probs[torch.arange(n), (labels + 1) % K] = 0.18
    assert torch.allclose(probs.sum(1), torch.ones(n, dtype=torch.float64))
    return probs, labels


# ---------------------------------------------------------------------------- UA / RA / TA


def test_unlearning_scores_from_accuracies_and_predictions():
    assert unlearning_scores(12.5, 98.0, 91.0) == {"UA": 87.5, "RA": 98.0, "TA": 91.0}
    forget = (torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 0, 0]))  # 25 % correct -> UA 75
    retain = (torch.tensor([2, 3]), torch.tensor([2, 3]))  # 100 %
    test = (torch.tensor([2, 2]), torch.tensor([2, 3]))  # 50 %
    assert unlearning_scores_from_predictions(forget, retain, test) == {"UA": 75.0, "RA": 100.0, "TA": 50.0}


@pytest.mark.parametrize("bad", [None, float("nan")])
def test_unlearning_scores_reject_missing_accuracy(bad):
    with pytest.raises(ValueError, match="forget_train_acc"):
        unlearning_scores(bad, 90.0, 90.0)


# ---------------------------------------------------------------------------- features


def test_modified_entropy_matches_hand_computation():
    # p = (0.5, 0.3, 0.2), y = 0:
    # Mentr = -(1 - 0.5) ln 0.5 - 0.3 ln(1 - 0.3) - 0.2 ln(1 - 0.2)
    #       = 0.5 * 0.693147 + 0.3 * 0.356675 + 0.2 * 0.223144
    #       = 0.346574 + 0.107002 + 0.044629 = 0.498205
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    expected = -(1 - 0.5) * math.log(0.5) - 0.3 * math.log(0.7) - 0.2 * math.log(0.8)
    assert expected == pytest.approx(0.498205, abs=1e-6)
    assert m_entropy(p, torch.tensor([0])).item() == pytest.approx(expected, abs=1e-12)
    # Same vector, y = 2: -(0.8) ln 0.2 - 0.5 ln 0.5 - 0.3 ln 0.7 = 1.287550 + 0.346574 + 0.107002
    assert m_entropy(p, torch.tensor([2])).item() == pytest.approx(1.741126, abs=1e-6)


def test_modified_entropy_is_finite_on_one_hot_rows():
    p = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    values = m_entropy(p, torch.tensor([0, 1])).squeeze(1)
    assert values[0].item() == 0.0  # confident and right
    # Confident and wrong: -(1 - 0) ln(1e-30) - 1 * ln(1e-30) = 2 * 30 ln 10, the clamp floor.
    assert values[1].item() == pytest.approx(2 * 30 * math.log(10), rel=1e-12)


def test_registry_holds_the_five_mia_features():
    assert METRICS.names() == sorted(FEATURES)
    probs, labels = diffuse_wrong(4)
    assert METRICS.get("confidence")(probs, labels).squeeze(1).tolist() == pytest.approx([0.1] * 4)
    assert METRICS.get("correctness")(probs, labels).squeeze(1).tolist() == [0.0] * 4
    assert METRICS.get("prob")(probs, labels).shape == (4, K)


# ---------------------------------------------------------------------------- MIA-Efficacy


@pytest.mark.slow
def test_mia_efficacy_is_100_when_forget_rows_look_like_non_members():
    members, nonmembers = one_hot_correct(40), diffuse_wrong(40)
    forget = diffuse_wrong(15)
    result = mia_efficacy(*members, *nonmembers, *forget)
    assert set(result) == {*FEATURES, "mia_efficacy"}
    assert result == {name: 100.0 for name in result}


def test_mia_efficacy_is_0_when_forget_rows_look_like_members():
    members, nonmembers = one_hot_correct(40), diffuse_wrong(40)
    forget_probs, forget_labels = one_hot_correct(15)
    # numpy inputs work too
    result = mia_efficacy(*members, *nonmembers, forget_probs.numpy(), forget_labels.numpy())
    assert result == {name: 0.0 for name in result}
    assert result["mia_efficacy"] == result["confidence"]


def test_mia_headline_is_the_confidence_attack():
    members, nonmembers = one_hot_correct(40), diffuse_wrong(40)
    # Correct (argmax = y) but unconfident forget rows: correctness calls them members, confidence does not.
    labels = torch.arange(12) % K
    probs = torch.full((12, K), 0.85 / (K - 1), dtype=torch.float64)
    probs[torch.arange(12), labels] = 0.15
    result = mia_efficacy(*members, *nonmembers, probs, labels)
    assert result["correctness"] == 0.0
    assert result["confidence"] == 100.0
    assert result["mia_efficacy"] == 100.0


def test_mia_efficacy_mixed_forget_set_gives_the_non_member_share():
    members, nonmembers = one_hot_correct(40), diffuse_wrong(40)
    look_member, look_nonmember = one_hot_correct(3), diffuse_wrong(1)
    forget_probs = torch.cat([look_member[0], look_nonmember[0]])
    forget_labels = torch.cat([look_member[1], look_nonmember[1]])
    assert mia_efficacy(*members, *nonmembers, forget_probs, forget_labels)["mia_efficacy"] == 25.0


def test_mia_efficacy_caps_and_subsamples_deterministically():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(300, K, generator=gen, dtype=torch.float64)
    probs = logits.softmax(1)
    labels = torch.randint(0, K, (300,), generator=gen)
    args = (probs[:120], labels[:120], probs[120:200], labels[120:200], probs[200:], labels[200:])
    a = mia_efficacy(*args, max_shadow=30, seed=3)
    b = mia_efficacy(*args, max_shadow=30, seed=3)
    assert a == b
    assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in a.values())
    with pytest.raises(ValueError, match="max_shadow"):
        mia_efficacy(*args, max_shadow=0)


def test_mia_efficacy_fits_in_workers_only_for_large_shadow_sets_and_agrees_with_one_process(monkeypatch):
    from famr_cli.evaluate import unlearning_metrics

    gen = torch.Generator().manual_seed(1)
    probs = torch.randn(300, K, generator=gen, dtype=torch.float64).softmax(1)
    labels = torch.randint(0, K, (300,), generator=gen)
    args = (probs[:120], labels[:120], probs[120:200], labels[120:200], probs[200:], labels[200:])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    pools = []

    class CountingParallel(unlearning_metrics.Parallel):
        def __init__(self, *a, **kw):
            pools.append(kw)
            super().__init__(*a, **kw)

    monkeypatch.setattr(unlearning_metrics, "Parallel", CountingParallel)
    in_process = mia_efficacy(*args)  # 80 shadow rows a side: below the threshold, no worker starts
    assert pools == []
    monkeypatch.setattr(unlearning_metrics, "PARALLEL_SHADOW_MIN", 80)
    assert mia_efficacy(*args) == in_process and pools == [{"n_jobs": 2, "backend": "loky"}]


def test_mia_efficacy_rejects_empty_forget_set_and_bad_inputs():
    members, nonmembers = one_hot_correct(10), diffuse_wrong(10)
    empty = (torch.empty(0, K, dtype=torch.float64), torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match="forget set is empty"):
        mia_efficacy(*members, *nonmembers, *empty)
    with pytest.raises(ValueError, match="shadow member"):
        mia_efficacy(*empty, *nonmembers, *members)
    nan_probs = members[0].clone()
    nan_probs[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mia_efficacy(nan_probs, members[1], *nonmembers, *members)


# ---------------------------------------------------------------------------- JS divergence


def test_js_of_identical_distributions_is_zero():
    p = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    assert js_divergence(p, p.clone()) == 0.0


def test_js_of_disjoint_one_hot_distributions_is_ln2():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert js_divergence(p, q) == pytest.approx(math.log(2), abs=1e-12)


def test_js_hand_computed_case_and_symmetry():
    # p = (1, 0), q = (0.5, 0.5), m = (0.75, 0.25)
    # KL(p||m) = ln(1 / 0.75) = 0.287682
    # KL(q||m) = 0.5 ln(0.5 / 0.75) + 0.5 ln(0.5 / 0.25) = -0.202733 + 0.346574 = 0.143841
    # JS = (0.287682 + 0.143841) / 2 = 0.215762
    p = np.array([[1.0, 0.0]])
    q = np.array([[0.5, 0.5]])
    assert js_divergence(p, q) == pytest.approx(0.215762, abs=1e-6)
    assert js_divergence(q, p) == pytest.approx(js_divergence(p, q), abs=1e-15)
    # Mean over rows: one identical row (0) and the row above.
    assert js_divergence(np.vstack([p, p]), np.vstack([p, q])) == pytest.approx(0.215762 / 2, abs=1e-6)


def test_js_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        js_divergence(torch.ones(2, 3) / 3, torch.ones(2, 4) / 4)


# ---------------------------------------------------------------------------- Avg. Gap and RTE


def test_avg_gap_of_identical_figures_is_zero():
    figures = {"UA": 10.0, "RA": 99.0, "TA": 93.0, "MIA": 20.0}
    assert avg_gap(figures, dict(figures)) == {"UA": 0.0, "RA": 0.0, "TA": 0.0, "MIA": 0.0, "avg_gap": 0.0}


def test_avg_gap_hand_computed():
    method = {"UA": 8.0, "RA": 97.0, "TA": 95.0, "MIA": 30.0, "extra": 1.0}
    retrain = {"UA": 10.0, "RA": 100.0, "TA": 91.0, "MIA": 21.0}
    # |8-10| = 2, |97-100| = 3, |95-91| = 4, |30-21| = 9 -> mean 18 / 4 = 4.5
    assert avg_gap(method, retrain) == {"UA": 2.0, "RA": 3.0, "TA": 4.0, "MIA": 9.0, "avg_gap": 4.5}


@pytest.mark.parametrize(
    ("method", "retrain", "match"),
    [
        ({"UA": 1.0, "RA": 1.0, "TA": 1.0}, {"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": 1.0}, r"method\['MIA'\]"),
        ({"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": 1.0}, {"UA": None, "RA": 1.0, "TA": 1.0, "MIA": 1.0}, r"retrain\['UA'\]"),
        ({"UA": 1.0, "RA": float("nan"), "TA": 1.0, "MIA": 1.0}, {"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": 1.0}, r"method\['RA'\]"),
    ],
)
def test_avg_gap_rejects_missing_values(method, retrain, match):
    with pytest.raises(ValueError, match=match):
        avg_gap(method, retrain)


def test_rte():
    assert rte(12.0, 48.0) == {"rte_s": 12.0, "rte_frac_of_retrain": 0.25}
    assert rte(12.0) == {"rte_s": 12.0, "rte_frac_of_retrain": None}
    assert rte(12.0, 0.0) == {"rte_s": 12.0, "rte_frac_of_retrain": None}
