"""A plain (non-editable) install ships the configs inside the package and runs from anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import cli_env, read_results, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    # --no-deps: the dependencies are already in this environment; --no-build-isolation: no network.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def test_wheel_contains_every_config_file(installed):
    shipped = {p.relative_to(installed / "famr_cli" / "conf") for p in (installed / "famr_cli" / "conf").rglob("*.yaml")}
    in_repo = {p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")}
    assert shipped == in_repo
    assert not (installed / "famr_cli" / "conf").is_symlink()


@pytest.mark.slow
def test_installed_console_script_runs_from_a_foreign_directory(installed, tmp_path):
    env = cli_env(tmp_path, PYTHONPATH=str(installed))
    exe = str(installed / "bin" / "famr-run")
    where = subprocess.run(
        [sys.executable, "-c", "import famr_cli; print(famr_cli.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert where.stdout.startswith(str(installed)), "the test must exercise the installed copy, not the source tree"
    run = run_cli(["train.epochs=1", "method.epochs=2", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, exe=exe)
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "run")
    assert results["status"] == "ok" and results["config"]["method"]["name"] == "famr"
    # Its config came from the installed copy's files (what `--info` would print; tested on the checkout):
    # one famr-run start instead of three.
    sources = yaml.safe_load((tmp_path / "run" / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["config_sources"]
    assert [s["path"] for s in sources if s["provider"] == "main"] == [str(installed / "famr_cli" / "conf")]
    assert results["metrics"]["unlearned"]["forget_train_acc"] is not None
