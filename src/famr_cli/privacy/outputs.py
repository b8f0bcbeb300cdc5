"""What famr-privacy writes once its populations are scored: ``privacy.json`` (every row's figures and
per-example scores), ``privacy.md`` (one table per protocol), ``epsilon_hist.png`` (per-example ε, one panel
per row) and, with ``logger=wandb``, one wandb run holding the table and the histogram."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from famr_cli.privacy.population import COMPETITION, FULL

log = logging.getLogger("famr")

PRIVACY_JSON = "privacy.json"
PRIVACY_MD = "privacy.md"
HISTOGRAM = "epsilon_hist.png"


def histogram(rows: list, path: Path) -> Path | None:
    """Per-example epsilon, one panel per row and protocol (bins of the competition's 0.5 buckets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scored = [r for r in rows if r.per_example]
    if not scored:
        return None
    fig, axes = plt.subplots(len(scored), 1, figsize=(7, 1.6 * len(scored)), sharex=True, squeeze=False)
    bins = np.arange(0.0, 50.5, 0.5)
    for ax, row in zip(axes[:, 0], scored):
        ax.hist(np.asarray(row.per_example["epsilon"]), bins=bins, color="tab:gray" if row.reference else "tab:blue")
        ax.set_ylabel("examples", fontsize=7)
        ax.set_title(f"{row.label} ({row.protocol}, N={row.n}): F={row.figures['F']:.3f}", fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("per-example ε (official rule; 50 = the cap)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_to_wandb(logger_cfg: dict[str, Any], document: dict[str, Any], files: list[Path], out_dir: Path) -> None:
    """One wandb run holding the privacy table and the histogram; never fatal."""
    if logger_cfg.get("name") != "wandb":
        return
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=logger_cfg.get("project"),
            entity=logger_cfg.get("entity"),
            group=logger_cfg.get("group") or f"privacy/{out_dir.parent.name}/{out_dir.name}",
            job_type="privacy",
            mode=logger_cfg.get("mode"),
            dir=str(logger_cfg.get("dir") or out_dir),
            config={k: v for k, v in document.items() if k not in ("rows", "forget_indices")},
            reinit="finish_previous",
        )
        columns = [
            "protocol",
            "row",
            "reads",
            "N",
            "F",
            "final_score",
            "epsilon_median",
            "epsilon_p90",
            "ulira_auc",
            "ulira_tpr_at_1pct_fpr",
        ]
        data = [[r["protocol"], r["label"], r["reads"], r["n"], *(r["figures"].get(c) for c in columns[4:])] for r in document["rows"]]
        run.log({"privacy/table": wandb.Table(columns=columns, data=data)})
        run.log({f"privacy/{p.stem}": wandb.Image(str(p)) for p in files if p.suffix == ".png"})
        run.finish()
    except Exception as err:  # the files are on disk; wandb holds a copy
        log.warning("Logging the privacy table to wandb failed (%s); it is in %s.", err, out_dir)


def write_report(out_dir: Path, document: dict[str, Any], rows: list, problems: list[str]) -> list[Path]:
    from famr_cli.privacy.report import to_markdown

    (out_dir / PRIVACY_JSON).write_text(json.dumps(document, indent=1) + "\n")
    header = [
        f"## Per-example privacy: experiment={document['experiment']} forget={document['forget']}, N = {document['models']} per population",
        "",
        f"Machine: {document['machine']}; commit {document['commit']}; command: `{document['command']}`.",
        "",
    ]
    titles = {
        COMPETITION: "Competition protocol (one original, unlearning seed varied)",
        FULL: "Full protocol (original and unlearning seeds varied)",
    }
    body = [to_markdown(rows, p, titles[p]) for p in document["protocols"]]
    trouble = ["", "Members that did not finish ok:", *[f"- {line}" for line in problems]] if problems else []
    (out_dir / PRIVACY_MD).write_text("\n".join(header) + "\n".join(body) + "\n".join(trouble) + "\n")
    files = [out_dir / PRIVACY_JSON, out_dir / PRIVACY_MD]
    hist = histogram(rows, out_dir / HISTOGRAM)
    return files + ([hist] if hist else [])
