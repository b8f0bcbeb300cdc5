"""Hand-derived checks of the competition epsilon / forget score and of the U-LiRA-style attack."""

from __future__ import annotations

import math

import numpy as np
import pytest

from famr_cli.errors import FamrError
from famr_cli.privacy.competition import (
    bucket_points,
    example_epsilon,
    example_epsilons,
    final_score,
    forget_score,
    forget_score_from_epsilons,
    logit_scaled_confidence,
)
from famr_cli.privacy.ulira import (
    balanced_accuracy,
    best_balanced_accuracy,
    gaussian_log_likelihood_ratio,
    roc_auc,
    tpr_at_fpr,
    ulira,
)

DELTA = 1e-5
# ln((0.75 - delta) / 0.25): the epsilon of a threshold with FPR = FNR = 1/4.
LN3_MINUS = math.log((0.75 - DELTA) / 0.25)


def test_logit_scaled_confidence_hand_values():
    # log(p + 1e-45) - log(1 - p + 1e-45): p = 0.5 -> 0; 0.9 -> ln 9; 0.25 -> ln(1/3);
    # p = 1 -> ln(1) - ln(1e-45) = 45 ln 10 (the official clipping); p = 0 -> its negative.
    out = logit_scaled_confidence([0.5, 0.9, 0.25, 1.0, 0.0])
    expected = [0.0, math.log(9.0), -math.log(3.0), 45 * math.log(10.0), -45 * math.log(10.0)]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_identical_populations_give_the_floor_zero():
    # Same four scores in both populations: medians tie, so "unlearned" is positive, and every threshold of both rules
    # puts the same k of 4 models from each side on the positive side: TPR = FPR = k/4, FNR = 1 - k/4.
    # k = 0 or 4 has one zero rate -> discarded. For k = 1..3 both terms are log(1 - delta/x) < 0 (x = 1 - k/4 or k/4),
    # so each threshold is clipped to 0: epsilon = 0.0 exactly, the floor.
    s = [0.0, 1.0, 2.0, 3.0]
    assert example_epsilon(s, s) == 0.0


def test_perfectly_separated_populations_hit_the_cap():
    # Ranges 3 and 3 (ratio 1, no peaky shortcut). Single threshold t in (3, 10]: FPR = FNR = 0 -> epsilon = inf -> cap 50.
    assert example_epsilon([0.0, 1.0, 2.0, 3.0], [10.0, 11.0, 12.0, 13.0]) == 50.0


def test_one_model_off_is_far_below_the_cap():
    # Retrained {10, 11, 12, 13} (positive: larger median), unlearned {0, 1, 2, 10.5}: one unlearned model among the
    # retrained ones. A threshold with no false positive keeps 10.5 out, so it drops 10 too (FN >= 1) or has FN = 0:
    # every threshold with one zero rate is discarded. With FP >= 1 and FN >= 1 out of 4, the best is FP = FN = 1
    # (single t in (10, 10.5], or double [l, r] with l in (10, 10.5], r >= 13): epsilon = ln((0.75 - delta) / 0.25).
    eps = example_epsilon([0.0, 1.0, 2.0, 10.5], [10.0, 11.0, 12.0, 13.0])
    assert eps == pytest.approx(LN3_MINUS, abs=1e-12)
    assert eps == pytest.approx(math.log(3.0 - 4e-5), abs=1e-12)


def test_positive_class_is_the_larger_median():
    # Unlearned {0, 8, 13} (median 8), retrained {0, 10, 13} (median 10): retrained is positive, N = 3, ranges 13 and 13.
    # Single rule "score >= t": t in (8, 10] catches retrained {10, 13} and unlearned {13}: FPR = FNR = 1/3 ->
    # ln((2/3 - delta) / (1/3)) = ln(2 - 3e-5). Other t: (FPR, FNR) = (2/3, 1/3) or (1/3, 2/3) -> both terms < 0 -> 0,
    # or one rate 0 -> discarded. Double rule (equal ranges: the unlearned population plays positive, w = 13):
    # r' in [11, 15], l in [r' - 15, r' - 11], so 8 and 10 are always inside, and the four cases (13 in or out, 0 in or
    # out) give a zero FNR or (FPR, FNR) in {(2/3, 1/3), (1/3, 2/3)} -> nothing above 0. Had the unlearned (smaller
    # median) population been taken as positive, the single rule would also give 0.
    assert example_epsilon([0.0, 8.0, 13.0], [0.0, 10.0, 13.0]) == pytest.approx(math.log(2.0 - 3e-5), abs=1e-12)


def test_deterministic_unlearned_population_gets_the_cap():
    # Unlearned all 1 (range 0), retrained {0, 1, 2, 3} (range 3): 0 / 3 < 0.01 -> 50 by the peaky rule.
    # Without that rule every threshold gives 0 or is discarded (an interval holding 1 also holds the retrained 1).
    assert example_epsilon([1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0]) == 50.0
    # Symmetric: the rule looks at the ratio of the two ranges, whichever population is peaky.
    assert example_epsilon([0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]) == 50.0


def test_peaky_ratio_boundary():
    r = [0.0, 1.0, 2.0, 3.0]
    # Range 0.029 / 3 = 0.00967 < 0.01 -> cap.
    assert example_epsilon([1.0, 1.0, 1.0, 1.029], r) == 50.0
    # Range 0.031 / 3 = 0.0103 -> thresholds decide. Double rule (the unlearned one is peakier): [l, r'] with
    # l in (0, 1], r' in [1, 1.031) holds the three unlearned 1s and the retrained 1: FP = FN = 1 -> ln((0.75 - delta)/0.25).
    # Nothing beats FP = FN = 1 of 4 (any threshold with FP or FN = 0 is discarded, perfect separation is impossible).
    assert example_epsilon([1.0, 1.0, 1.0, 1.031], r) == pytest.approx(LN3_MINUS, abs=1e-12)


def test_both_populations_constant_and_equal_give_zero():
    # Both ranges 0: the ratio is 0/0 = NaN, so no shortcut; every threshold has (FPR, FNR) in {(0, 1), (1, 0)} and is
    # discarded. The official code stops on its assertion here; this module returns 0.0 (see its docstring).
    assert example_epsilon([5.0, 5.0, 5.0], [5.0, 5.0, 5.0]) == 0.0
    # Constant but far apart: single t in (0, 5] separates perfectly -> 50.
    assert example_epsilon([0.0, 0.0, 0.0], [5.0, 5.0, 5.0]) == 50.0


def test_bucket_points_follow_ceil_ln_n_minus_1():
    # N = 21: ceil(ln 20) = ceil(2.996) = 3 -> 6 buckets of width 0.5 worth 1, 1/2, ..., 1/32.
    np.testing.assert_array_equal(bucket_points(21), [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125])
    # N = 3: ceil(ln 2) = 1 -> 2 buckets. N = 2: ceil(ln 1) = 0 -> none (every epsilon scores 0).
    np.testing.assert_array_equal(bucket_points(3), [1.0, 0.5])
    assert bucket_points(2).size == 0


def test_forget_score_from_hand_made_epsilons():
    # N = 21 (buckets above): 0 -> 1, 0.49 -> 1, 0.5 -> 1/2 (right edge open), 2.99 -> 1/32, 3.0 and 50 -> 0.
    # F = (1 + 1 + 0.5 + 0.03125) / 6 = 2.53125 / 6 = 0.421875.
    assert forget_score_from_epsilons([0.0, 0.49, 0.5, 2.99, 3.0, 50.0], 21) == pytest.approx(0.421875, abs=1e-15)
    assert forget_score_from_epsilons([0.0, 0.0], 2) == 0.0


def test_forget_score_end_to_end():
    # N = 4: ceil(ln 3) = 2 -> buckets [0, .5) 1, [.5, 1) 1/2, [1, 1.5) 1/4, [1.5, 2) 1/8.
    # Columns: identical (epsilon 0 -> 1), separated (50 -> 0), one model off (ln 3 - tiny = 1.0986 -> 1/4).
    # F = (1 + 0 + 0.25) / 3 = 5/12.
    unlearned = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0, 10.5]])
    retrained = np.array([[0.0, 10.0, 10.0], [1.0, 11.0, 11.0], [2.0, 12.0, 12.0], [3.0, 13.0, 13.0]])
    np.testing.assert_allclose(example_epsilons(unlearned, retrained), [0.0, 50.0, LN3_MINUS], atol=1e-12)
    assert forget_score(unlearned, retrained) == pytest.approx(5 / 12, abs=1e-15)


def test_final_score_arithmetic():
    # 0.5 * (0.8 / 1.0) * (0.6 / 0.75) = 0.5 * 0.8 * 0.8 = 0.32.
    assert final_score(0.5, 0.8, 1.0, 0.6, 0.75) == pytest.approx(0.32, abs=1e-15)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: logit_scaled_confidence([0.5, 1.2]), "in [0, 1]"),
        (lambda: logit_scaled_confidence([-0.1]), "in [0, 1]"),
        (lambda: logit_scaled_confidence([np.nan]), "in [0, 1]"),
        (lambda: example_epsilon([1.0], [2.0]), "at least 2 models"),
        (lambda: example_epsilon([1.0, 2.0], [1.0, 2.0, 3.0]), "as many unlearned as retrained"),
        (lambda: example_epsilon([[1.0, 2.0]], [[1.0, 2.0]]), "shape (N,)"),
        (lambda: example_epsilons([1.0, 2.0], [1.0, 2.0]), "shape (N models, E forget examples)"),
        (lambda: example_epsilons(np.zeros((1, 3)), np.zeros((1, 3))), "at least 2 models"),
        (lambda: example_epsilons(np.zeros((3, 2)), np.full((3, 2), np.inf)), "finite"),
        (lambda: bucket_points(1), "at least 2"),
        (lambda: forget_score_from_epsilons([0.1, -1.0], 4), "non-negative"),
        (lambda: forget_score_from_epsilons(np.zeros((2, 2)), 4), "1-D"),
        (lambda: final_score(0.5, 95.0, 96.0, 0.9, 0.9), "not percentages"),
        (lambda: final_score(0.5, 0.9, 0.0, 0.9, 0.9), "above 0"),
        (lambda: ulira(np.zeros((1, 3)), np.zeros((4, 3))), "at least 2 models"),
        (lambda: ulira(np.zeros((4, 3)), np.zeros((4, 2))), "same examples"),
        (lambda: ulira(np.zeros(4), np.zeros(4)), "same examples"),
        (lambda: ulira(np.zeros((4, 3)), np.zeros((4, 3)), std_floor=0.0), "std_floor"),
    ],
)
def test_bad_input_raises_one_sentence(call, fragment):
    with pytest.raises(FamrError) as info:
        call()
    message = str(info.value)
    assert fragment in message
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message


def test_gaussian_log_likelihood_ratio_hand_value():
    # x = 1: log N(1; 0, 2) = -0.5 * (1/2)^2 - ln 2 - c = -0.125 - ln 2 - c; log N(1; 1, 1) = -c. Difference -0.125 - ln 2.
    assert float(gaussian_log_likelihood_ratio(1.0, 0.0, 2.0, 1.0, 1.0)) == pytest.approx(-0.125 - math.log(2.0), abs=1e-15)


def test_roc_tpr_and_balanced_accuracy_hand_values():
    # AUC: pairs (1,0)=1, (1,2)=0, (2,0)=1, (2,2)=1/2 -> 2.5 / 4.
    assert roc_auc([1.0, 2.0], [0.0, 2.0]) == 0.625
    # FPR <= 1 % with 4 negatives means no false positive: t > 2.5 keeps only 3 -> TPR 1/4; FPR <= 25 %: t in (-1, 2.5] -> 3/4.
    pos, neg = [3.0, 2.0, 1.0, 0.0], [2.5, -1.0, -2.0, -3.0]
    assert tpr_at_fpr(pos, neg, 0.01) == 0.25
    assert tpr_at_fpr(pos, neg, 0.25) == 1.0
    # Threshold 0: TPR 4/4 (0 >= 0 counts), TNR 3/4 -> 0.875. Best: t in (-1, 0] gives the same 0.875; t in (2.5, 3]
    # gives (1/4 + 1) / 2 = 0.625, so 0.875 is the best.
    assert balanced_accuracy(pos, neg, 0.0) == 0.875
    assert best_balanced_accuracy(pos, neg) == 0.875
    assert balanced_accuracy(pos, neg, 1.5) == pytest.approx(0.5 * (0.5 + 0.75))


def test_ulira_hand_made_deterministic_populations():
    # Unlearned models all 1, retrained all 0: whatever the split, the fit is mean 1 / mean 0 with std 0 -> floor.
    # Floor 1: LLR(x) = -(x-1)^2/2 + x^2/2 = x - 1/2 -> +0.5 for the held-out unlearned model, -0.5 for the retrained one.
    res = ulira([[1.0], [1.0]], [[0.0], [0.0]], seed=3, std_floor=1.0)
    np.testing.assert_allclose(res.scores_unlearned, [[0.5]])
    np.testing.assert_allclose(res.scores_retrained, [[-0.5]])
    assert (res.auc, res.balanced_accuracy, res.tpr_at_1pct_fpr, res.tpr_at_0_1pct_fpr) == (1.0, 1.0, 1.0, 1.0)
    # Default floor 1e-3: LLR(1) = 0 - ln(1e-3) - (-0.5 * (1 / 1e-3)^2 - ln(1e-3)) = 5e5.
    res = ulira([[1.0], [1.0]], [[0.0], [0.0]])
    np.testing.assert_allclose(res.scores_unlearned, [[5e5]])


def test_ulira_same_distribution_is_chance():
    # 64 + 64 models, 40 examples, both N(0, 1): 32 * 40 held-out pairs per side; AUC standard error ~0.012.
    rng = np.random.default_rng(0)
    res = ulira(rng.normal(size=(64, 40)), rng.normal(size=(64, 40)), seed=1)
    assert abs(res.auc - 0.5) < 0.05
    assert abs(res.balanced_accuracy - 0.5) < 0.05
    # 1280 negatives: 0.1 % FPR allows one false positive, so only the very top of the unlearned scores counts.
    assert res.tpr_at_0_1pct_fpr == tpr_at_fpr(res.scores_unlearned, res.scores_retrained, 0.001) < 0.05
    assert res.tpr_at_0_1pct_fpr <= res.tpr_at_1pct_fpr < 0.1
    assert res.scores_unlearned.shape == (32, 40) and res.scores_retrained.shape == (32, 40)


def test_ulira_separated_populations_are_found():
    rng = np.random.default_rng(0)
    res = ulira(rng.normal(3.0, 0.5, size=(20, 10)), rng.normal(-3.0, 0.5, size=(20, 10)), seed=1)
    assert res.auc == 1.0
    assert res.balanced_accuracy == 1.0 and res.best_balanced_accuracy == 1.0
    assert res.tpr_at_1pct_fpr == 1.0 and res.tpr_at_0_1pct_fpr == 1.0


def test_ulira_split_is_seeded():
    rng = np.random.default_rng(0)
    u, r = rng.normal(size=(9, 5)), rng.normal(size=(8, 5))
    a, b, c = ulira(u, r, seed=7), ulira(u, r, seed=7), ulira(u, r, seed=8)
    np.testing.assert_array_equal(a.scores_unlearned, b.scores_unlearned)
    np.testing.assert_array_equal(a.heldout_retrained, b.heldout_retrained)
    assert a.auc == b.auc
    # 9 unlearned -> 4 fit, 5 held out; 8 retrained -> 4 and 4.
    assert a.heldout_unlearned.size == 5 and a.heldout_retrained.size == 4
    assert not np.array_equal(a.heldout_unlearned, c.heldout_unlearned)


def test_ulira_fits_on_one_half_and_scores_the_other():
    # Unlearned 0, 2, 4, 6 (4 models, 2 fit, 2 held out), retrained all 10 (std 0 -> floor 1). Whatever the split, the
    # held-out unlearned scores must use the mean/std (ddof 0) of the two fitting models, which are the other two rows.
    u = np.array([[0.0], [2.0], [4.0], [6.0]])
    res = ulira(u, np.full((4, 1), 10.0), seed=5, std_floor=1.0)
    fit = np.setdiff1d(np.arange(4), res.heldout_unlearned)
    a, b = u[fit, 0]
    mean, std = (a + b) / 2, max(abs(a - b) / 2, 1.0)
    for row, x in zip(res.heldout_unlearned, res.scores_unlearned[:, 0]):
        x_model = u[row, 0]
        expected = (-0.5 * ((x_model - mean) / std) ** 2 - math.log(std)) - (-0.5 * (x_model - 10.0) ** 2)
        assert x == pytest.approx(expected, abs=1e-12)
