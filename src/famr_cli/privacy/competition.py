"""The NeurIPS 2023 Machine Unlearning competition metric, as pure NumPy functions.

Paper: Triantafillou et al. 2024, "Are we making progress in unlearning? Findings from the first NeurIPS
unlearning competition". Official code: github.com/google-deepmind/unlearning_evaluation, file ``metric.py``
(and the final-score line of ``main.py``), stored version at commit ffae0fff4c3e9523b22618c47df6c26e4eebe0df.
This module is written from a reading of that file, not copied from it.

Rules, as the official code applies them to one forget example with scores from N unlearned and N retrained
models (scores are logit-scaled confidences, see ``logit_scaled_confidence``):

* Positive class: the population with the larger median score; on a tie the unlearned one.
* Peaky rule: with ``lo``/``hi`` the smaller/larger of the two populations' ranges (max - min), if
  ``lo / hi < 0.01`` the example gets epsilon = 50 (the cap) without looking at any threshold: a population with
  no spread (a method with no randomness gives the same score under every "unlearned" model) is flagged as
  maximally distinguishable. The official code tests the ratio of the two ranges, so the rule fires whichever
  population is the peaky one. When both ranges are 0 the ratio is 0/0 = NaN, the test is false, and the
  thresholds below decide.
* Single-threshold rule: ``ceil((max - min) * 100)`` evenly spaced thresholds from the smallest to the largest
  score of both populations (none when all scores are equal); "predicted positive" is ``score >= t``.
* Double-threshold rule: the "positive" class is redefined as the population with the smaller range (the
  retrained-or-unlearned one given by the median rule keeps the role when its range is strictly smaller);
  ``w`` is that smaller range. Right thresholds: ``ceil((max_ - min_) * 100)`` evenly spaced points from
  ``min_ = (pos.min() + w) - 2`` to ``max_ = pos.max() + 2``; for each right threshold ``r``, 400 left
  thresholds evenly spaced from ``r - w - 2`` to ``r - w + 2``. "Predicted positive" is ``l <= score <= r``.
* FPR/FNR per threshold: fraction of negative models predicted positive / of positive models predicted negative.
* Per threshold: both zero -> epsilon = inf (perfect separation); exactly one zero -> threshold discarded
  ("insufficient samples"); otherwise epsilon = max(log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR)),
  ignoring a NaN term (a threshold whose two terms are both NaN is discarded), clipped below at 0; delta = 1e-5.
* Example epsilon: the maximum over surviving thresholds of both rules, clipped to [0, 50].
* Bucketed score: buckets [0, 0.5), [0.5, 1), ... worth 1, 1/2, 1/4, ...; there are ``2 * ceil(ln(N - 1))`` of
  them (the official loop adds bucket [s, s + 0.5) while ``s + 0.5 <= ceil(ln(N - 1))``); an epsilon at or beyond
  the last bucket scores 0. F is the mean over forget examples. With N = 2 there are no buckets and F = 0.
* Final score: F * (RA_unlearned / RA_retrained) * (TA_unlearned / TA_retrained), the accuracies being means over
  the N models (``main.py``).

What differs from the official code (the decision rules, threshold grids, delta, cap and buckets do not):

* ``logit_scaled_confidence`` takes the true-class probability p and uses 1 - p for the rest of the mass; the
  official function takes logits and sums the other classes' softmax probabilities, which keeps precision when
  p rounds to 1. The clipping constant (1e-45 added inside both logs, float64) is the official one.
* As released, ``assert thr_eps`` on a NumPy array raises ValueError whenever more than one threshold survives;
  its intent (at least one threshold survives) is what is implemented. Where no threshold survives (the official
  code would stop on that assertion), this module returns epsilon = 0.0 instead of raising. That happens e.g.
  when both populations are the same constant: every threshold then puts each population entirely on one side
  (FPR, FNR) in {(0, 1), (1, 0)}, so all are discarded, and each would have scored 0 after the clip anyway.
* Rates are exact counts / N in float64 and thresholds are float64; the official code averages float32 0/1 tensors,
  evaluates the logs in float32, and builds the single-threshold grid with ``torch.linspace`` in torch's default
  dtype (float32). Epsilons can therefore differ in the last float32 digits, and a single threshold that the
  official float32 grid rounds past a score can count that score differently.
* Both populations must have the same shape (the official code needs it too, through ``np.where``), and bad input
  raises ``FamrError`` instead of failing later.
"""

from __future__ import annotations

import math

import numpy as np

from famr_cli.errors import FamrError

DELTA = 1e-5
EPSILON_CAP = 50.0
NUM_THRESHOLDS_PER_UNIT = 100
DOUBLE_THRESHOLD_BUFFER = 2.0
PEAKY_RANGE_RATIO = 0.01
BUCKET_WIDTH = 0.5
LOG_OFFSET = 1e-45


def logit_scaled_confidence(probs_true_class) -> np.ndarray:
    """log(p / (1 - p)) as the official code computes it: log(p + 1e-45) - log((1 - p) + 1e-45), in float64.

    p = 1 gives 45 ln 10 (about 103.616) and p = 0 its negative, so every output is finite.
    """
    p = np.asarray(probs_true_class, dtype=np.float64)
    if p.size == 0:
        raise FamrError("logit_scaled_confidence got an empty array: pass at least one true-class probability.")
    if not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
        raise FamrError("logit_scaled_confidence needs probabilities in [0, 1]: pass softmax outputs, not logits or NaN.")
    return np.log(p + LOG_OFFSET) - np.log((1.0 - p) + LOG_OFFSET)


def _check_populations(unlearned, retrained, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    shape_name = "(N,)" if ndim == 1 else "(N models, E forget examples)"
    if u.ndim != ndim or r.ndim != ndim:
        raise FamrError(f"Pass unlearned and retrained scores as arrays of shape {shape_name} (got {u.shape} and {r.shape}).")
    if u.shape != r.shape:
        raise FamrError(f"Pass as many unlearned as retrained models for the same examples (got shapes {u.shape} and {r.shape}).")
    if u.shape[0] < 2:
        raise FamrError(f"The competition metric needs at least 2 models per population (got {u.shape[0]}): train more models.")
    if ndim == 2 and u.shape[1] == 0:
        raise FamrError("Pass scores for at least one forget example (got 0 columns).")
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(r))):
        raise FamrError("Scores must be finite: compute them with logit_scaled_confidence, which never returns inf or NaN.")
    return u, r


def _range(x: np.ndarray) -> float:
    return float(x.max() - x.min())


def _single_threshold_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positives, false negatives) per threshold of the single-threshold family; positive is ``score >= t``."""
    both = np.concatenate([pos, neg])
    lo, hi = both.min(), both.max()
    n_thr = int(np.ceil((hi - lo) * NUM_THRESHOLDS_PER_UNIT))
    thresholds = np.linspace(lo, hi, n_thr)
    n = pos.shape[0]
    # #(x >= t) = n - #(x < t).
    true_pos = n - np.searchsorted(np.sort(pos), thresholds, side="left")
    false_pos = n - np.searchsorted(np.sort(neg), thresholds, side="left")
    return false_pos, n - true_pos


def _double_threshold_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positives, false negatives) per (left, right) pair; positive is ``left <= score <= right``."""
    pos_range, neg_range = _range(pos), _range(neg)
    width = neg_range if pos_range > neg_range else pos_range
    if pos_range >= neg_range:  # the peakier population plays "positive"
        pos, neg = neg, pos
    buffer = DOUBLE_THRESHOLD_BUFFER
    lo = (pos.min() + width) - buffer
    hi = pos.max() + buffer
    right = np.linspace(lo, hi, int(np.ceil((hi - lo) * NUM_THRESHOLDS_PER_UNIT)))
    n_left = int(np.ceil(2 * buffer * NUM_THRESHOLDS_PER_UNIT))
    left = np.linspace(right - width - buffer, right - width + buffer, n_left, axis=-1).reshape(-1)
    right = np.repeat(right, n_left)

    def inside(x: np.ndarray) -> np.ndarray:
        s = np.sort(x)
        # #(l <= x <= r) = #(x <= r) - #(x < l), which is <= 0 when l > r (empty interval).
        return np.maximum(np.searchsorted(s, right, side="right") - np.searchsorted(s, left, side="left"), 0)

    n = pos.shape[0]
    return inside(neg), n - inside(pos)


def _threshold_epsilons(false_pos: np.ndarray, false_neg: np.ndarray, n: int, delta: float) -> np.ndarray:
    """Epsilon per surviving threshold (inf for perfect separation); discarded thresholds are dropped."""
    perfect = (false_pos == 0) & (false_neg == 0)
    keep = (false_pos > 0) & (false_neg > 0)
    fpr = false_pos[keep] / n
    fnr = false_neg[keep] / n
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.log(1.0 - delta - fpr) - np.log(fnr)
        b = np.log(1.0 - delta - fnr) - np.log(fpr)
    both = np.stack([a, b])
    valid = ~np.all(np.isnan(both), axis=0)
    eps = np.clip(np.nanmax(both[:, valid], axis=0) if valid.any() else np.empty(0), 0.0, None)
    return np.concatenate([eps, np.full(int(perfect.sum()), np.inf)])


def example_epsilon(unlearned, retrained, delta: float = DELTA) -> float:
    """Official per-example epsilon from the scores of N unlearned and N retrained models on one forget example.

    Both arguments have shape (N,). Returns a float in [0, 50]; see the module docstring for the rules.
    """
    u, r = _check_populations(unlearned, retrained, ndim=1)
    if np.median(r) > np.median(u):
        pos, neg = r, u
    else:
        pos, neg = u, r
    pos_range, neg_range = _range(pos), _range(neg)
    largest = max(pos_range, neg_range)
    smallest = min(pos_range, neg_range)
    if largest > 0.0 and smallest / largest < PEAKY_RANGE_RATIO:
        return EPSILON_CAP
    n = pos.shape[0]
    eps = np.concatenate(
        [
            _threshold_epsilons(*_double_threshold_counts(pos, neg), n, delta),
            _threshold_epsilons(*_single_threshold_counts(pos, neg), n, delta),
        ]
    )
    if eps.size == 0:
        return 0.0  # no surviving threshold: the official code stops on its assertion here (module docstring)
    return float(min(eps.max(), EPSILON_CAP))


def example_epsilons(unlearned_scores, retrained_scores, delta: float = DELTA) -> np.ndarray:
    """Per-example epsilons, shape (E,), from score arrays of shape (N models, E forget examples)."""
    u, r = _check_populations(unlearned_scores, retrained_scores, ndim=2)
    return np.array([example_epsilon(u[:, j], r[:, j], delta=delta) for j in range(u.shape[1])])


def bucket_points(num_models: int) -> np.ndarray:
    """Points of buckets [0, 0.5), [0.5, 1), ...: 1, 1/2, 1/4, ..., 2 * ceil(ln(N - 1)) buckets for N models."""
    if isinstance(num_models, bool) or not isinstance(num_models, int | np.integer) or num_models < 2:
        raise FamrError(f"num_models must be an integer of at least 2 (got {num_models!r}): pass the number of models per population.")
    max_epsilon = math.ceil(math.log(num_models - 1))
    n_buckets = int(round(max_epsilon / BUCKET_WIDTH))
    return 0.5 ** np.arange(n_buckets, dtype=np.float64)


def forget_score_from_epsilons(epsilons, num_models: int) -> float:
    """F: the mean over forget examples of the points of the bucket each epsilon falls in (0 beyond the last)."""
    points = bucket_points(num_models)
    eps = np.asarray(epsilons, dtype=np.float64)
    if eps.ndim != 1 or eps.size == 0:
        raise FamrError(f"Pass one epsilon per forget example as a non-empty 1-D array (got shape {eps.shape}).")
    if np.any(np.isnan(eps)) or np.any(eps < 0.0):
        raise FamrError("Epsilons must be non-negative numbers: pass the output of example_epsilons.")
    # eps / 0.5 is exact, so floor() gives the first bucket k with eps < 0.5 * (k + 1), as the official loop does.
    bucket = np.minimum(np.floor(eps / BUCKET_WIDTH), points.size).astype(int)
    return float(np.mean(np.append(points, 0.0)[bucket]))


def forget_score(unlearned_scores, retrained_scores, delta: float = DELTA) -> float:
    """F from score arrays of shape (N models, E forget examples), as ``compute_forget_score_from_confs``."""
    eps = example_epsilons(unlearned_scores, retrained_scores, delta=delta)
    return forget_score_from_epsilons(eps, int(np.shape(unlearned_scores)[0]))


def final_score(F: float, ra_unlearned: float, ra_retrain: float, ta_unlearned: float, ta_retrain: float) -> float:
    """F * (RA_unlearned / RA_retrain) * (TA_unlearned / TA_retrain); accuracies are fractions in [0, 1], model means."""
    values = {"F": F, "ra_unlearned": ra_unlearned, "ra_retrain": ra_retrain, "ta_unlearned": ta_unlearned, "ta_retrain": ta_retrain}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer) or not 0.0 <= float(value) <= 1.0:
            raise FamrError(f"{name} must be a number in [0, 1] (got {value!r}): pass accuracies as fractions, not percentages.")
    if ra_retrain == 0 or ta_retrain == 0:
        raise FamrError("ra_retrain and ta_retrain must be above 0: check that the retrained models were evaluated.")
    return float(F) * (float(ra_unlearned) / float(ra_retrain)) * (float(ta_unlearned) / float(ta_retrain))
