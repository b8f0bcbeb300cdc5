"""The robustness figures shown beside each other, declared once: where each stands in results.json's
``robustness`` section and what each view calls it (docs/robustness.md defines them).

A :class:`CheckFigure` is measured on every model, at ``robustness.<model>.<check>.<key>`` (model:
original, unlearned, retrain), and where the check compares, its excess over Retrain under the
identical check is ``robustness.vs_retrain.<check>.<excess>``; ``{k}`` in a name stands for the
relearning k. A :class:`Comparison` is one number for the unlearned model against another, at
``robustness.vs_retrain.<check>.<key>``; the checks copy those the tables show into
``robustness.headline`` under the same key. Pure Python: the console and the report scripts read it
without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class CheckFigure:
    header: str  # famr-robustness's column
    label: str | None  # the console's line; None where the console leaves the figure out
    check: str
    key: str
    excess: str | None = None

    @property
    def per_k(self) -> bool:
        return "{k}" in self.key

    def at(self, k: int) -> CheckFigure:
        """This figure at relearning ``k``."""
        names = ("header", "label", "key", "excess")
        return replace(self, **{n: getattr(self, n).format(k=k) for n in names if getattr(self, n) is not None})

    def value(self, figures: dict[str, Any]) -> Any:
        """The figure in one model's checks (``robustness.<model>``); None when that check did not measure it."""
        return (figures.get(self.check) or {}).get(self.key)

    def excess_value(self, vs_retrain: dict[str, Any]) -> Any:
        return (vs_retrain.get(self.check) or {}).get(self.excess) if self.excess else None


CHECK_FIGURES = (
    CheckFigure("forgotten acc", None, "relearn", "forget_acc_before"),
    CheckFigure("relearn {k} full", "relearn {k}-shot full", "relearn", "full_k{k}_forget_acc", "residual_full_k{k}"),
    CheckFigure("relearn {k} head", "relearn {k}-shot head", "relearn", "head_k{k}_forget_acc", "residual_head_k{k}"),
    CheckFigure("prototype {k}", "prototype {k}-shot", "relearn", "prototype_k{k}_forget_acc", "residual_prototype_k{k}"),
    CheckFigure("retained after relearn {k}", None, "relearn", "full_k{k}_retain_acc"),
    CheckFigure("probe forgotten", "probe on forgotten", "probe", "probe_forget_acc", "probe_forget_acc_gap"),
    CheckFigure("probe retained", "probe on retained", "probe", "probe_retain_acc", "probe_retain_acc_gap"),
    CheckFigure("held-out AUC", "held-out AUC", "heldout", "auc"),
    CheckFigure("KS conf", None, "heldout", "ks_confidence", "ks_confidence_gap"),
    CheckFigure("KS loss", "KS loss", "heldout", "ks_loss", "ks_loss_gap"),
    CheckFigure("ECE", "ECE retained", "calibration", "ece", "ece_gap"),
    CheckFigure("entropy D_f", "entropy on D_f", "calibration", "entropy_forget", "entropy_forget_gap"),
    CheckFigure("entropy held-out", "entropy held-out", "calibration", "entropy_heldout", "entropy_heldout_gap"),
)


def check_figures(k: int | None) -> list[CheckFigure]:
    """The check figures at relearning ``k``; without a k (relearning did not run), those that need none."""
    return [f.at(k) if f.per_k else f for f in CHECK_FIGURES if k is not None or not f.per_k]


@dataclass(frozen=True)
class Comparison:
    label: str
    latex: str
    check: str
    key: str

    def value(self, vs_retrain: dict[str, Any]) -> Any:
        return (vs_retrain.get(self.check) or {}).get(self.key)


CKA_TO_RETRAIN = Comparison("CKA to Retrain", "CKA to Retrain", "probe", "cka_vs_retrain")
CKA_TO_ORIGINAL = Comparison("CKA to original", "CKA to original", "probe", "cka_vs_original")
PRIVLEAK = Comparison("privleak", "PrivLeak", "heldout", "privleak")
COMPARISONS = (CKA_TO_RETRAIN, CKA_TO_ORIGINAL, PRIVLEAK)
