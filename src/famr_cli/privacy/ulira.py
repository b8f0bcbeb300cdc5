"""A U-LiRA-style per-example likelihood-ratio attack on unlearning, as pure NumPy functions.

Idea from Hayes et al. 2024, "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of
Privacy" (U-LiRA, after Carlini et al.'s LiRA): for each forget example, model the score of that example under
unlearned models and under retrained models as two Gaussians, and call a model "unlearned" when its score is
more likely under the unlearned Gaussian. This is written from that description, not from their code (none was
read), and differs from their protocol: they fit on shadow models and attack separately trained target models;
here one pool of N_u unlearned and N_r retrained models is split once, at random, into a fitting half and a
held-out half per population, and only the held-out models are scored (no swap of the halves).

Per forget example j: fit (mean, std) of the fitting half's scores per population, std with ddof = 0 floored at
``std_floor`` (a method with no randomness has std 0); score each held-out model by
log N(x; mu_u, sd_u) - log N(x; mu_r, sd_r). Positives are held-out unlearned models, negatives held-out retrained
models; every metric pools all (example, held-out model) pairs. Scores are the logit-scaled confidences of
``famr_cli.privacy.competition.logit_scaled_confidence``.

Balanced accuracy is reported at threshold 0 (``balanced_accuracy``): the likelihood-ratio test with equal priors,
fixed before seeing the held-out labels, so it is not biased upwards. ``best_balanced_accuracy`` (the best
threshold chosen on the held-out pairs themselves) is reported too, as an optimistic upper figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from famr_cli.errors import FamrError

DEFAULT_STD_FLOOR = 1e-3


@dataclass(frozen=True)
class UliraResult:
    """Attack figures over all (forget example, held-out model) pairs, and the per-pair scores behind them."""

    auc: float
    balanced_accuracy: float  # at log likelihood ratio >= 0 (predict "unlearned")
    best_balanced_accuracy: float  # at the best threshold on the same pairs (optimistic)
    tpr_at_1pct_fpr: float
    tpr_at_0_1pct_fpr: float
    scores_unlearned: np.ndarray  # (held-out unlearned models, E): log likelihood ratio per pair
    scores_retrained: np.ndarray  # (held-out retrained models, E)
    heldout_unlearned: np.ndarray  # indices (rows of the input) of the held-out unlearned models
    heldout_retrained: np.ndarray


def gaussian_log_likelihood_ratio(x, mean_u, std_u, mean_r, std_r) -> np.ndarray:
    """log N(x; mean_u, std_u) - log N(x; mean_r, std_r), elementwise (the log(2 pi) terms cancel)."""
    x, mean_u, std_u, mean_r, std_r = (np.asarray(a, dtype=np.float64) for a in (x, mean_u, std_u, mean_r, std_r))
    if np.any(std_u <= 0.0) or np.any(std_r <= 0.0):
        raise FamrError("Standard deviations must be positive: floor them (std_floor) before scoring.")
    return (-0.5 * ((x - mean_u) / std_u) ** 2 - np.log(std_u)) - (-0.5 * ((x - mean_r) / std_r) ** 2 - np.log(std_r))


def _check_scores(pos, neg) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pos, dtype=np.float64).reshape(-1)
    n = np.asarray(neg, dtype=np.float64).reshape(-1)
    if p.size == 0 or n.size == 0:
        raise FamrError("Pass at least one positive and one negative score.")
    if np.any(np.isnan(p)) or np.any(np.isnan(n)):
        raise FamrError("Attack scores must not be NaN: check the scores passed in.")
    return p, n


def roc_auc(pos, neg) -> float:
    """P(pos > neg) + 0.5 P(pos == neg) over all pairs (the Mann-Whitney AUC)."""
    p, n = _check_scores(pos, neg)
    s = np.sort(n)
    below = np.searchsorted(s, p, side="left")
    ties = np.searchsorted(s, p, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (p.size * n.size))


def _rates(p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TPR, FPR) of ``score >= t`` for t over every distinct score and +inf."""
    thresholds = np.append(np.unique(np.concatenate([p, n])), np.inf)
    tpr = (p.size - np.searchsorted(np.sort(p), thresholds, side="left")) / p.size
    fpr = (n.size - np.searchsorted(np.sort(n), thresholds, side="left")) / n.size
    return tpr, fpr


def tpr_at_fpr(pos, neg, max_fpr: float) -> float:
    """Largest TPR of ``score >= t`` over thresholds whose FPR is at most ``max_fpr``.

    With fewer than 1 / max_fpr negatives only FPR = 0 qualifies, so this is then the TPR at zero false positives.
    """
    p, n = _check_scores(pos, neg)
    if not 0.0 <= max_fpr <= 1.0:
        raise FamrError(f"max_fpr must be in [0, 1] (got {max_fpr}): pass 0.01 for 1 %.")
    tpr, fpr = _rates(p, n)
    return float(tpr[fpr <= max_fpr].max())


def balanced_accuracy(pos, neg, threshold: float = 0.0) -> float:
    """(TPR + TNR) / 2 of ``score >= threshold``."""
    p, n = _check_scores(pos, neg)
    return float(0.5 * (np.mean(p >= threshold) + np.mean(n < threshold)))


def best_balanced_accuracy(pos, neg) -> float:
    """Max over thresholds of (TPR + TNR) / 2 of ``score >= t`` (chosen on the same scores: optimistic)."""
    p, n = _check_scores(pos, neg)
    tpr, fpr = _rates(p, n)
    return float(np.max(0.5 * (tpr + 1.0 - fpr)))


def ulira(unlearned_scores, retrained_scores, seed: int = 0, std_floor: float = DEFAULT_STD_FLOOR) -> UliraResult:
    """Run the attack on score arrays of shape (N_u models, E forget examples) and (N_r models, E).

    Each population is permuted with ``numpy.random.default_rng(seed)`` (unlearned first); its first
    N // 2 models fit the Gaussians and the other N - N // 2 are scored. Same inputs and seed, same result.
    """
    u = np.asarray(unlearned_scores, dtype=np.float64)
    r = np.asarray(retrained_scores, dtype=np.float64)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise FamrError(f"Pass scores of shape (models, forget examples) with the same examples in both (got {u.shape} and {r.shape}).")
    if u.shape[0] < 2 or r.shape[0] < 2:
        raise FamrError(f"U-LiRA needs at least 2 models per population, one to fit and one to score (got {u.shape[0]} and {r.shape[0]}).")
    if u.shape[1] == 0:
        raise FamrError("Pass scores for at least one forget example (got 0 columns).")
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(r))):
        raise FamrError("Scores must be finite: compute them with logit_scaled_confidence, which never returns inf or NaN.")
    if not (isinstance(std_floor, int | float) and math.isfinite(std_floor) and std_floor > 0.0):
        raise FamrError(f"std_floor must be a positive number (got {std_floor!r}); the default is {DEFAULT_STD_FLOOR}.")
    rng = np.random.default_rng(seed)
    perm_u = rng.permutation(u.shape[0])
    perm_r = rng.permutation(r.shape[0])
    fit_u, held_u = perm_u[: u.shape[0] // 2], perm_u[u.shape[0] // 2 :]
    fit_r, held_r = perm_r[: r.shape[0] // 2], perm_r[r.shape[0] // 2 :]

    mean_u, std_u = u[fit_u].mean(axis=0), np.maximum(u[fit_u].std(axis=0), std_floor)
    mean_r, std_r = r[fit_r].mean(axis=0), np.maximum(r[fit_r].std(axis=0), std_floor)
    s_u = gaussian_log_likelihood_ratio(u[held_u], mean_u, std_u, mean_r, std_r)
    s_r = gaussian_log_likelihood_ratio(r[held_r], mean_u, std_u, mean_r, std_r)
    return UliraResult(
        auc=roc_auc(s_u, s_r),
        balanced_accuracy=balanced_accuracy(s_u, s_r, 0.0),
        best_balanced_accuracy=best_balanced_accuracy(s_u, s_r),
        tpr_at_1pct_fpr=tpr_at_fpr(s_u, s_r, 0.01),
        tpr_at_0_1pct_fpr=tpr_at_fpr(s_u, s_r, 0.001),
        scores_unlearned=s_u,
        scores_retrained=s_r,
        heldout_unlearned=held_u,
        heldout_retrained=held_r,
    )
