"""What the comparison tables show: their columns (one :class:`Metric` each, read from one job's
results.json), the LaTeX names of methods whose display name needs markup, the units their captions state, and how their text
is escaped for LaTeX.

The "Is it forgotten?" columns are the robustness checks' headline figures; those that compare the
unlearned model with Retrain as a whole are named as in every other view
(:mod:`famr_cli.robustness_figures`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from famr_cli.robustness_figures import CKA_TO_RETRAIN, PRIVLEAK, Comparison

# (key, Markdown/CSV header, LaTeX header, value from one ok results.json)
Getter = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Metric:
    key: str
    header: str
    latex: str
    get: Getter


def _unlearned(key: str) -> Getter:
    return lambda r: (r.get("metrics") or {}).get("unlearned", {}).get(key)


def _rte_pct(r: dict[str, Any]) -> Any:
    frac = (r.get("timing") or {}).get("rte_frac_of_retrain")
    return None if frac is None else 100 * frac


FORGET_TEST_ACC = Metric("forget_test_acc", "forget-test acc", "Forget-test acc", _unlearned("forget_test_acc"))
METRICS = [
    Metric("UA", "UA", "UA", _unlearned("UA")),
    Metric("RA", "RA", "RA", _unlearned("RA")),
    Metric("TA", "TA", "TA", _unlearned("TA")),
    FORGET_TEST_ACC,
    Metric("mia_efficacy", "MIA-Efficacy", "MIA-Efficacy", _unlearned("mia_efficacy")),
    Metric("avg_gap", "Avg. Gap", r"Avg.\ Gap", lambda r: (r.get("gaps") or {}).get("avg_gap")),
    Metric("rte_s", "RTE s", "RTE (s)", lambda r: (r.get("timing") or {}).get("unlearn_s")),
    Metric("rte_pct_of_retrain", "RTE % of Retrain", r"RTE (\% of Retrain)", _rte_pct),
]


def _headline(key: str, header: str, latex: str) -> Metric:
    return Metric(key, header, latex, lambda r: ((r.get("robustness") or {}).get("headline") or {}).get(key))


def _compared(comparison: Comparison) -> Metric:
    return _headline(comparison.key, comparison.label, comparison.latex)


# "Is it forgotten?": the robustness checks' headline figures (docs/robustness.md), relearning at the smallest k.
ROBUSTNESS_METRICS = [
    FORGET_TEST_ACC,
    _headline("relearn_forget_acc", "relearn acc", "Relearn acc"),
    _headline("relearn_residual", "relearn excess", "Relearn excess"),
    _headline("prototype_forget_acc", "prototype acc", "Prototype acc"),
    _headline("prototype_residual", "prototype excess", "Prototype excess"),
    _headline("probe_forget_acc", "probe acc", "Probe acc"),
    _headline("probe_forget_gap", "probe excess", "Probe excess"),
    _compared(CKA_TO_RETRAIN),
    _headline("heldout_auc", "held-out AUC", "Held-out AUC"),
    _compared(PRIVLEAK),
    _headline("ece", "ECE", "ECE"),
]
ROBUSTNESS_UNITS = (
    "Accuracies and ECE in %; relearn = full-model fine-tuning on k held-out images per forgotten class (k = the smallest "
    "evaluate.robustness.relearn.shots), prototype = the forgotten head rows rebuilt from k images' mean feature, probe = a "
    "logistic regression on frozen features; excess = the method minus Retrain under the identical check (points); held-out "
    "AUC: a loss-threshold attack separating D_f from matched never-seen images; privleak = 100 (AUC - AUC_Retrain) / "
    "AUC_Retrain. Definitions: docs/robustness.md."
)

LATEX_NAMES = {"l1_sparse": r"$\ell_1$-sparse"}
HIGHLIGHT = "famr"  # bold in Markdown and LaTeX
MISSING = "–"
DAGGER = "†"
UNITS = (
    "UA, RA, TA, forget-test acc and MIA-Efficacy in %; Avg. Gap to Retrain over UA, RA, TA, MIA; RTE = the unlearning step; "
    "trials = the search behind the method's values (famr-tune trials; 0 accepted = none passed the collapse guard; "
    "hand = an earlier hand search; 0 = the published defaults)."
)


# The characters a label, a caption or a cell may hold that LaTeX reads as commands, and the symbols it sets in math mode.
LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "λ": r"$\lambda$",
    "–": "--",
    "—": "---",
    DAGGER: r"$^\dagger$",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(c, c) for c in text)
