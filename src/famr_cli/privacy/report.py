"""The privacy table: the competition score and the U-LiRA attack per row, with the two reference rows around the methods.

Rows per protocol: "Retrain (disjoint)" (a second population of N Retrains scored as if it were a method: the best
any method can get at this N), each method, and "Original" (the model before unlearning, the worst). Under the
competition protocol the Original row is the one original repeated N times; the official rule gives a population
with no spread epsilon = 50 on every example, which is what the competition would score "do nothing" at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from famr_cli.privacy.competition import (
    EPSILON_CAP,
    PEAKY_RANGE_RATIO,
    example_epsilons,
    final_score,
    forget_score_from_epsilons,
)
from famr_cli.privacy.population import Population
from famr_cli.privacy.ulira import roc_auc, ulira

REFERENCE_RETRAIN = "Retrain (disjoint)"
REFERENCE_ORIGINAL = "Original"
ULIRA_SEED = 0


@dataclass
class PrivacyRow:
    protocol: str
    label: str
    reads: str
    reference: bool
    n: int
    figures: dict[str, Any] = field(default_factory=dict)  # empty when the row could not be scored
    per_example: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""


def no_spread_share(unlearned: np.ndarray, retrained: np.ndarray) -> float:
    """Share of forget examples where the official peaky rule fires (one population's range under 1 % of the other's)."""
    ru = unlearned.max(axis=0) - unlearned.min(axis=0)
    rr = retrained.max(axis=0) - retrained.min(axis=0)
    lo, hi = np.minimum(ru, rr), np.maximum(ru, rr)
    return float(np.mean((hi > 0) & (lo < PEAKY_RANGE_RATIO * hi)))


def score_row(unlearned: Population, retrained: Population) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Every figure of one row, and the per-example epsilon and U-LiRA AUC, from two populations of the same size."""
    eps = example_epsilons(unlearned.scores, retrained.scores)
    n = unlearned.scores.shape[0]
    F = forget_score_from_epsilons(eps, n)
    ra_u, ta_u, ra_r, ta_r = (float(np.mean(a)) for a in (unlearned.ra, unlearned.ta, retrained.ra, retrained.ta))
    attack = ulira(unlearned.scores, retrained.scores, seed=ULIRA_SEED)
    per_example_auc = [roc_auc(attack.scores_unlearned[:, j], attack.scores_retrained[:, j]) for j in range(eps.size)]
    figures = {
        "F": F,
        "final_score": final_score(F, ra_u, ra_r, ta_u, ta_r),
        "epsilon_median": float(np.median(eps)),
        "epsilon_p90": float(np.percentile(eps, 90)),
        "epsilon_at_cap": float(np.mean(eps >= EPSILON_CAP)),
        "no_spread_share": no_spread_share(unlearned.scores, retrained.scores),
        "RA": ra_u,
        "TA": ta_u,
        "RA_retrain": ra_r,
        "TA_retrain": ta_r,
        "ulira_auc": attack.auc,
        "ulira_balanced_accuracy": attack.balanced_accuracy,
        "ulira_best_balanced_accuracy": attack.best_balanced_accuracy,
        "ulira_tpr_at_1pct_fpr": attack.tpr_at_1pct_fpr,
        "ulira_tpr_at_0_1pct_fpr": attack.tpr_at_0_1pct_fpr,
        "forget_examples": int(eps.size),
    }
    return figures, {"epsilon": eps.tolist(), "ulira_auc": per_example_auc}


def repeated(population: Population, n: int) -> Population:
    """One model standing for a population of ``n`` identical ones (the competition protocol's Original)."""
    return Population(
        np.repeat(population.scores[:1], n, axis=0),
        np.repeat(population.ra[:1], n),
        np.repeat(population.ta[:1], n),
        population.seeds[:1] * n,
    )


def row_note(figures: dict[str, Any]) -> str:
    """Why a row's epsilons sit at the cap, when the official no-spread rule is the reason."""
    share = figures.get("no_spread_share", 0.0)
    if share >= 0.5:
        return (
            f"{share:.0%} of examples have (almost) no spread in one population, so the official rule gives them epsilon = 50: "
            "a method with no randomness under this protocol scores F = 0 however close it lands to Retrain"
        )
    return ""


def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


COLUMNS = ("row", "reads", "N", "F", "final score", "median ε", "p90 ε", "U-LiRA AUC", "TPR@1% FPR", "RA", "TA")


def to_markdown(rows: list[PrivacyRow], protocol: str, title: str) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    notes = []
    for row in (r for r in rows if r.protocol == protocol):
        label = f"*{row.label}*" if row.reference else row.label
        f = row.figures
        if not f:
            lines.append(f"| {label} | {row.reads} | {row.n} | " + " | ".join(["—"] * (len(COLUMNS) - 3)) + " |")
        else:
            cells = [
                _fmt(f["F"]),
                _fmt(f["final_score"]),
                _fmt(f["epsilon_median"], 2),
                _fmt(f["epsilon_p90"], 2),
                _fmt(f["ulira_auc"]),
                _fmt(f["ulira_tpr_at_1pct_fpr"]),
                _fmt(100 * f["RA"], 1),
                _fmt(100 * f["TA"], 1),
            ]
            lines.append(f"| {label} | {row.reads} | {row.n} | " + " | ".join(cells) + " |")
        if row.note:
            notes.append(f"- {row.label}: {row.note}.")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
