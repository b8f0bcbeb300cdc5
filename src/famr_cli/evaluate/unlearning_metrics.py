"""Field-standard unlearning metrics: UA/RA/TA, MIA-Efficacy, JS divergence, Avg. Gap, RTE.

Pure functions on already-computed numbers or probability matrices; nothing here runs a model.
Accuracies are percentages, as in :mod:`famr_cli.evaluate.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.svm import SVC

from famr_cli.evaluate.metrics import accuracy
from famr_cli.registry import Registry

ArrayLike = torch.Tensor | np.ndarray
# (probs N×K, labels N) -> features N×d, one row per sample.
MiaFeature = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Keeps log p and log(1 - p) finite at p = 0 or 1 (the 1e-30 floor of SalUn's and Song & Mittal's code).
# The floor is applied to p and to 1 - p separately because 1 - 1e-30 rounds to 1 even in float64.
LOG_EPS = 1e-30

METRICS: Registry[MiaFeature] = Registry("MIA feature", "the feature name in unlearning_metrics.METRICS")


# ---------------------------------------------------------------------------- UA / RA / TA


def unlearning_scores(forget_train_acc: float | None, retain_train_acc: float | None, test_acc: float | None) -> dict[str, float]:
    """UA, RA and TA in percent from accuracies (Jia et al. NeurIPS 2023 "Model sparsity can simplify
    machine unlearning"; Fan et al. ICLR 2024 "SalUn").

    UA = 100 - accuracy on D_f (train), RA = accuracy on D_r (train), TA = ``test_acc``: the caller
    passes test accuracy on the retained classes for class forgetting, on the full test set for
    sample forgetting.
    """
    return {
        "UA": 100.0 - _require_number("forget_train_acc", forget_train_acc),
        "RA": _require_number("retain_train_acc", retain_train_acc),
        "TA": _require_number("test_acc", test_acc),
    }


def unlearning_scores_from_predictions(
    forget: tuple[torch.Tensor, torch.Tensor],
    retain: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, float]:
    """:func:`unlearning_scores` from ``(pred, target)`` pairs on D_f, D_r and the TA test rows."""
    return unlearning_scores(accuracy(*forget), accuracy(*retain), accuracy(*test))


# ---------------------------------------------------------------------------- MIA features


@METRICS.register("correctness")
def correctness(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 where argmax p == y (Song & Mittal 2021, "Systematic evaluation of privacy risks", §3.1)."""
    return (probs.argmax(dim=1) == labels).to(probs.dtype).unsqueeze(1)


@METRICS.register("confidence")
def confidence(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """p_y, the probability of the true class (Song & Mittal 2021, §3.2)."""
    return probs.gather(1, labels.unsqueeze(1))


@METRICS.register("entropy")
def entropy(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Shannon entropy -sum_i p_i log p_i, with 0 log 0 = 0 (Song & Mittal 2021, §3.2)."""
    return -torch.special.xlogy(probs, probs).sum(dim=1, keepdim=True)


@METRICS.register("m_entropy")
def m_entropy(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Modified entropy (Song & Mittal 2021, eq. 4):
    Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).

    Unlike entropy it uses the label, so it is monotonically decreasing in p_y: a confident correct
    prediction scores 0 and a confident wrong one scores high. p and 1 - p are floored at
    ``LOG_EPS`` inside the logs so one-hot outputs stay finite. SalUn's ``SVC_MIA.m_entropy`` (copied
    widely) takes log p where log(1 - p) is meant and indexes ``[:, labels]`` across the whole batch;
    this is the paper's formula, so "m_entropy" figures will differ from numbers produced by that code.
    """
    log_p = probs.clamp_min(LOG_EPS).log()
    log_not_p = (1.0 - probs).clamp_min(LOG_EPS).log()
    is_label = torch.nn.functional.one_hot(labels, probs.shape[1]).bool()
    terms = torch.where(is_label, (1.0 - probs) * log_p, probs * log_not_p)
    return -terms.sum(dim=1, keepdim=True)


@METRICS.register("prob")
def prob(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The full probability vector (SalUn's SVC_MIA "prob" attack, Fan et al. ICLR 2024)."""
    return probs


# ---------------------------------------------------------------------------- MIA-Efficacy


# Shadow rows per side from which the attacks fit in worker processes (docs/performance.md: below it,
# starting the workers costs more than the five fits).
PARALLEL_SHADOW_MIN = 3000


def mia_efficacy(
    member_probs: ArrayLike,
    member_labels: ArrayLike,
    nonmember_probs: ArrayLike,
    nonmember_labels: ArrayLike,
    forget_probs: ArrayLike,
    forget_labels: ArrayLike,
    *,
    max_shadow: int | None = 5000,
    seed: int = 0,
) -> dict[str, float]:
    """MIA-Efficacy in percent, one per registered feature, plus the headline ``"mia_efficacy"``
    (the confidence attack), following SalUn's ``SVC_MIA`` (Fan et al. ICLR 2024; Jia et al.
    NeurIPS 2023), whose attacks come from Song & Mittal 2021.

    Per feature an RBF ``SVC(C=3, gamma="auto")`` learns members (label 1: retained training rows)
    against non-members (label 0: test rows, forgotten classes already removed by the caller for
    class forgetting); efficacy is the share of D_f it calls non-member, so higher = better forgetting.

    Inputs are softmax matrices (N×K) and labels (N), torch or numpy. Both shadow sides are cut to
    the same size, min(members, non-members, ``max_shadow``), as SalUn takes N_test retained rows.
    ``max_shadow`` (default 5000 per side, None = no cap) is our choice, to bound the SVC's
    quadratic fit time; rows are subsampled without replacement by a generator seeded with ``seed``.
    D_f itself is never subsampled.
    """
    member_probs, member_labels = _probs_and_labels("member", member_probs, member_labels)
    nonmember_probs, nonmember_labels = _probs_and_labels("non-member", nonmember_probs, nonmember_labels)
    forget_probs, forget_labels = _probs_and_labels("forget", forget_probs, forget_labels)
    if forget_probs.shape[0] == 0:
        raise ValueError("MIA-Efficacy needs at least one D_f sample; the forget set is empty")
    if member_probs.shape[0] == 0 or nonmember_probs.shape[0] == 0:
        raise ValueError("MIA-Efficacy needs at least one shadow member and one shadow non-member")
    if len({member_probs.shape[1], nonmember_probs.shape[1], forget_probs.shape[1]}) != 1:
        raise ValueError("member, non-member and forget probabilities must have the same number of classes")

    n = min(member_probs.shape[0], nonmember_probs.shape[0])
    if max_shadow is not None:
        if max_shadow < 1:
            raise ValueError(f"max_shadow must be at least 1, got {max_shadow}")
        n = min(n, max_shadow)
    rng = np.random.default_rng(seed)
    keep_member = _subsample(rng, member_probs.shape[0], n)
    keep_nonmember = _subsample(rng, nonmember_probs.shape[0], n)
    member_probs, member_labels = member_probs[keep_member], member_labels[keep_member]
    nonmember_probs, nonmember_labels = nonmember_probs[keep_nonmember], nonmember_labels[keep_nonmember]
    y_shadow = np.concatenate([np.ones(n), np.zeros(n)])

    names = METRICS.names()
    tasks = []
    for name in names:
        feature = METRICS.get(name)
        x_shadow = torch.cat([feature(member_probs, member_labels), feature(nonmember_probs, nonmember_labels)]).numpy()
        tasks.append((x_shadow, feature(forget_probs, forget_labels).numpy()))
    # libsvm holds the GIL and fits on one core; the five attacks are independent, so they fit in
    # worker processes when this job may use several threads and the fits outweigh starting the
    # workers (seconds per job): small shadow sets (digits: 324 a side) fit in about 0.2 s.
    workers = min(len(tasks), torch.get_num_threads()) if n >= PARALLEL_SHADOW_MIN else 1
    if workers > 1:
        shares = Parallel(n_jobs=workers, backend="loky")(delayed(_attack_share)(x, y_shadow, f) for x, f in tasks)
    else:
        shares = [_attack_share(x, y_shadow, f) for x, f in tasks]
    results: dict[str, float] = dict(zip(names, shares))
    results["mia_efficacy"] = results["confidence"]
    return results


def _attack_share(x_shadow: np.ndarray, y_shadow: np.ndarray, x_forget: np.ndarray) -> float:
    """Percent of D_f the attack fitted on the shadow sets calls non-member."""
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x_shadow, y_shadow)
    return float((clf.predict(x_forget) == 0).mean() * 100.0)


# ---------------------------------------------------------------------------- JS divergence


def js_divergence(p: ArrayLike, q: ArrayLike) -> float:
    """Mean over samples of the Jensen-Shannon divergence JS(p_i, q_i), natural log, in [0, ln 2]
    (Lin 1991, "Divergence measures based on the Shannon entropy"; used for unlearning by
    Chundawat et al. AAAI 2023, "Can bad teaching induce forgetting?").

    ``p`` and ``q`` are N×K probability matrices (softmax outputs) of two models on the same inputs.
    ``xlogy`` gives 0 log 0 = 0 without an epsilon, so identical rows give exactly 0.
    """
    p, q = _as_float(p, "p"), _as_float(q, "q")
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"p and q must be N×K matrices of the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    if p.shape[0] == 0:
        raise ValueError("JS divergence needs at least one sample")
    m = 0.5 * (p + q)
    xlogy = torch.special.xlogy
    kl_pm = (xlogy(p, p) - xlogy(p, m)).sum(dim=1)
    kl_qm = (xlogy(q, q) - xlogy(q, m)).sum(dim=1)
    # Rounding can step a hair outside the true bounds.
    js = (0.5 * (kl_pm + kl_qm)).clamp(0.0, math.log(2.0))
    return float(js.mean())


# ---------------------------------------------------------------------------- Avg. Gap and RTE


def avg_gap(
    method: Mapping[str, float | None], retrain: Mapping[str, float | None], keys: Sequence[str] = ("UA", "RA", "TA", "MIA")
) -> dict[str, float]:
    """Per-metric |method - retrain| and their mean ``"avg_gap"`` over UA, RA, TA and MIA-Efficacy
    (Fan et al. ICLR 2024, "SalUn", Tables 1-2: "Avg. Gap" to Retrain; lower is better)."""
    gaps: dict[str, float] = {}
    for key in keys:
        ours = _require_number(f"method[{key!r}]", method.get(key))
        reference = _require_number(f"retrain[{key!r}]", retrain.get(key))
        gaps[key] = abs(ours - reference)
    if not gaps:
        raise ValueError("avg_gap needs at least one metric key")
    gaps["avg_gap"] = sum(gaps.values()) / len(gaps)
    return gaps


def rte(unlearn_s: float, retrain_s: float | None = None) -> dict[str, float | None]:
    """Run-time efficiency: the unlearning wall-clock seconds, and as a fraction of retraining from
    scratch when that time is known (Jia et al. NeurIPS 2023; Fan et al. ICLR 2024, "RTE")."""
    frac = unlearn_s / retrain_s if retrain_s else None
    return {"rte_s": float(unlearn_s), "rte_frac_of_retrain": frac}


# ---------------------------------------------------------------------------- helpers


def _require_number(name: str, value: float | None) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    # NaN is how accuracy() reports an empty subset, so it counts as missing too.
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _as_float(x: ArrayLike, name: str) -> torch.Tensor:
    # float64 so the 1e-30 floor and the SVC inputs keep their precision.
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _probs_and_labels(name: str, probs: ArrayLike, labels: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    probs_t = _as_float(probs, f"{name} probabilities")
    labels_t = torch.as_tensor(labels).detach().to("cpu", torch.long).reshape(-1)
    if probs_t.ndim != 2 or probs_t.shape[0] != labels_t.shape[0]:
        shape = tuple(probs_t.shape)
        raise ValueError(f"{name} probabilities must be N×K with one label per row, got {shape} and {labels_t.shape[0]} labels")
    if labels_t.numel() and (labels_t.min() < 0 or labels_t.max() >= probs_t.shape[1]):
        raise ValueError(f"{name} labels must lie in [0, {probs_t.shape[1]})")
    return probs_t, labels_t


def _subsample(rng: np.random.Generator, size: int, n: int) -> torch.Tensor:
    if size == n:
        return torch.arange(size)
    return torch.from_numpy(np.sort(rng.choice(size, n, replace=False)))
