"""results.json (the public contract, docs/results_json.md) and the console summary table."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from famr_cli.robustness_figures import COMPARISONS, check_figures

RESULTS_FILE = "results.json"


def _clean(value: Any) -> Any:
    """NaN/inf become null so every JSON reader accepts the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write atomically: a reader (sweep summary, table script) never sees a partial file."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results.", dir=run_dir)
    with os.fdopen(fd, "w") as fh:
        json.dump(_clean(results), fh, indent=2)
        fh.write("\n")
    target = run_dir / RESULTS_FILE
    os.replace(tmp, target)
    return target


def finished_results(run_dir: str | Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The ok results.json already in ``run_dir`` when it was written for this very ``config``; else None.

    A multirun's job dirs are numbered in the order of its overrides, so running the same sweep again
    into the same dir finds each job's earlier results at the same place; a config that differs in any
    value (another commit's defaults, another override) does not match and the job runs again.
    """
    path = Path(run_dir) / RESULTS_FILE
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or results.get("status") != "ok" or not isinstance(results.get("config"), dict):
        return None
    # skip_finished itself does not make a job different: a sweep run without it may be resumed with it.
    earlier = {k: v for k, v in results["config"].items() if k != "skip_finished"}
    now = {k: v for k, v in json.loads(json.dumps(_clean(config))).items() if k != "skip_finished"}
    return results if earlier == now else None


ROWS = [
    ("test acc", "test_acc", None),
    ("forget-test acc", "forget_test_acc", None),
    ("retain-test acc", "retain_test_acc", None),
    ("forget-train acc", "forget_train_acc", None),
    ("retain-train acc", "retain_train_acc", None),
    ("stylized test acc", "stylized_test_acc", None),
    ("attack success", "attack_success_rate", None),
    ("UA", "UA", "UA"),
    ("RA", "RA", "RA"),
    ("TA", "TA", "TA"),
    ("MIA-Efficacy", "mia_efficacy", "MIA"),
]


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def summary_table(results: dict[str, Any]) -> str:
    """Original, unlearned and (when evaluated) Retrain side by side, with |unlearned − Retrain| per metric."""
    metrics, gaps = results["metrics"], results.get("gaps") or {}
    columns = [name for name in ("original", "unlearned", "retrain") if name in metrics]
    header = f"{'metric (%)':<18}" + "".join(f"{c:>11}" for c in columns) + (f"{'gap':>9}" if gaps else "")
    lines = [header]
    for label, key, gap_key in ROWS:
        if not any(key in metrics[c] for c in columns):
            continue
        row = f"{label:<18}" + "".join(f"{_fmt(metrics[c].get(key)):>11}" for c in columns)
        if gaps:
            row += f"{_fmt(gaps.get(gap_key)) if gap_key else '':>9}"
        lines.append(row)
    timing, cache = results["timing"], results["cache"]["original"]
    origin = "loaded from cache" if cache["hit"] else f"trained in {timing['train_s']:.1f} s"
    if "user_weights" in cache:
        origin = f"from original_weights={cache['user_weights']['path']}"
    lines.append(
        f"unlearn time {timing['unlearn_s']:.2f} s | ||theta-theta0||_2 {results['certificate']['param_dist']:.4f} | "
        f"original model {origin} (key {cache['key']})"
    )
    if gaps:
        frac = timing.get("rte_frac_of_retrain")
        share = f" ({100 * frac:.1f} % of Retrain's {timing['retrain_s']:.1f} s)" if frac is not None else ""
        lines.append(
            f"Avg. Gap to Retrain {_fmt(gaps.get('avg_gap'))} over {', '.join(gaps.get('avg_gap_over', []))} | "
            f"JS to Retrain: D_f {gaps.get('js_forget', float('nan')):.4f}, test {gaps.get('js_test', float('nan')):.4f} | "
            f"RTE {timing['unlearn_s']:.2f} s{share}"
        )
    lines += certificate_lines(results["certificate"])
    lines += robustness_lines(results.get("robustness") or {})
    return "\n".join(lines)


def robustness_lines(rob: dict[str, Any]) -> list[str]:
    """The second block: is it forgotten or only hidden? Each check on each model, and the excess over Retrain."""
    if not rob or "headline" not in rob:
        return [f"robustness checks: {rob['error']}"] if rob.get("error") else []
    columns = [name for name in ("original", "unlearned", "retrain") if name in rob]
    vs = rob.get("vs_retrain") or {}
    lines = ["", f"{'is it forgotten?':<22}" + "".join(f"{c:>11}" for c in columns) + (f"{'excess':>9}" if vs else "")]
    for figure in check_figures(rob["headline"].get("relearn_k")):
        values = [figure.value(rob[c]) for c in columns]
        if figure.label is None or all(v is None for v in values):
            continue
        row = f"{figure.label:<22}" + "".join(f"{_fmt(v):>11}" for v in values)
        if vs:
            row += f"{_fmt(figure.excess_value(vs)) if figure.excess else '':>9}"
        lines.append(row)
    head = rob["headline"]
    # The headline's comparisons even when Retrain was not evaluated (n/a), then any other one measured.
    extras = [f"{c.label} {_g(head.get(c.key))}" for c in COMPARISONS if c.key in head]
    extras += [f"{c.label} {_g(value)}" for c in COMPARISONS if c.key not in head and (value := c.value(vs)) is not None]
    if extras:
        lines.append(" | ".join(extras) + f" (forgotten images: {rob['sets'].get('forget', '')})")
    return lines


def _g(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def certificate_lines(cert: dict[str, Any]) -> list[str]:
    """The certificate (docs/theory.md) in words: stationarity, the head's Newton/influence check, output drift."""
    lines = []
    if "grad_norm" in cert:
        dist = cert.get("anchored_param_dist", cert["param_dist"])
        lines.append(
            f"certificate: g* = ||grad L_f(theta*)|| {_g(cert['grad_norm'])} | g*/(2 lam) {_g(cert['stationarity_bound'])} "
            f"vs ||theta*-theta0|| {_g(dist)} | residual ||grad L_f + 2 lam (theta*-theta0)|| {_g(cert['stationarity_residual'])}"
        )
    if "newton_rel_dist" in cert:
        lines.append(f"head update vs the exact minimiser of FAMR's head objective: relative distance {_g(cert.get('exact_rel_dist'))}")
        lines.append(
            f"head update vs damped Newton step: relative distance {_g(cert['newton_rel_dist'])}, cosine {_g(cert.get('newton_cosine'))} | "
            f"vs influence (Retrain) step: relative distance {_g(cert.get('influence_rel_dist'))}, "
            f"cosine {_g(cert.get('influence_cosine'))}"
        )
    if "drift_kl_mean" in cert:
        changed = cert["changed_predictions"]
        lines.append(
            f"drift on retained test images: KL(original||unlearned) mean {_g(cert['drift_kl_mean'])}, max {_g(cert['drift_kl_max'])} | "
            f"{'n/a' if changed is None else f'{100 * changed:.2f} %'} of their predictions changed"
        )
    return lines
