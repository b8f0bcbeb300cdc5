"""``famr-reproduce --privacy``: famr-privacy on each experiment of a profile (class forgetting), its table beside the others.

A profile offers it when ``Profile.privacy_models`` is above 0; the populations go under ``<runs>/<profile>/privacy``
(run again, a study keeps its finished members) and ``<profile>_<experiment>_privacy.{md,json,png}`` into the tables'
folder.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from famr_cli.host import famr_privacy_command
from famr_cli.reproduce.data import DataPlan
from famr_cli.reproduce.profiles import Profile

OUTPUTS = {"privacy.md": ".md", "privacy.json": ".json", "epsilon_hist.png": "_epsilon_hist.png"}


@dataclass(frozen=True)
class PrivacyStudy:
    experiment: str
    argv: list[str]
    folder: Path  # where famr-privacy writes this experiment's tables: <dir>/<experiment>/class

    def command(self) -> str:
        return shlex.join(self.argv)


def plan_privacy(
    profile: Profile, runs_root: Path, data: DataPlan, tables_only: bool = False, overrides: list[str] | None = None
) -> list[PrivacyStudy]:
    """One famr-privacy per experiment of the profile, with its methods (Retrain is always a row) and overrides."""
    root = runs_root / profile.name / "privacy"
    methods = [m for m in profile.methods if m != "retrain"]
    studies = []
    for experiment in profile.experiments:
        argv = [
            *famr_privacy_command(),
            f"experiment={experiment}",
            "forget=class",
            "--methods",
            ",".join(methods),
            "--models",
            str(profile.privacy_models),
            "--protocols",
            ",".join(profile.privacy_protocols),
            "--dir",
            str(root),
            *(["--tables-only"] if tables_only else []),
            *data.overrides.get(experiment, []),
            *profile.overrides,
            *(overrides or []),
        ]
        studies.append(PrivacyStudy(experiment, argv, root / experiment / "class"))
    return studies


def run_privacy(profile: Profile, studies: list[PrivacyStudy], out_dir: Path, log=print) -> tuple[int, list[Path]]:
    """Run each study; copy its tables into ``out_dir``. Returns the worst exit code and the files written."""
    worst, files = 0, []
    out_dir.mkdir(parents=True, exist_ok=True)
    for study in studies:
        log(f"[reproduce] {study.command()}")
        code = subprocess.run(study.argv).returncode
        worst = max(worst, code)
        for name, suffix in OUTPUTS.items():
            source = study.folder / name
            if source.is_file():
                target = out_dir / f"{profile.name}_{study.experiment}_privacy{suffix}"
                shutil.copyfile(source, target)
                files.append(target)
        log(f"[reproduce] privacy study of {study.experiment}: exit {code}")
    return worst, files
