"""make reproduce: profiles, data preflight, the table generator on canned results, and the smoke profile end to end."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from conftest import cli_env, forked_famr_run, use_cli_env
from famr_cli.config_schema import CONFIG_DIR
from famr_cli.errors import FamrError
from famr_cli.host import famr_run_command
from famr_cli.reproduce import cli as reproduce_cli
from famr_cli.reproduce import table_render, tables
from famr_cli.reproduce.data import DataError, DataPlan, find_cifar10, plan_data
from famr_cli.reproduce.profiles import PROFILES
from famr_cli.reproduce.runner import check_resumable, plan_sweeps, reproduce, run_sweeps
from famr_cli.sweep.jobs import Job, load_jobs

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "reproduce.py"
MACHINE = "Test CPU, 2 cores"


def results(method: str, seed: int, ua, ra, ta, ft, mia, gap, rte, frac) -> dict:
    return {
        "status": "ok",
        "method": method,
        "config": {"seed": seed},
        "dataset": {"class_names": ["airplane", "automobile"]},
        "forget": {"description": "class airplane", "classes": [0]},
        "metrics": {"unlearned": {"UA": ua, "RA": ra, "TA": ta, "forget_test_acc": ft, "mia_efficacy": mia}},
        "gaps": {"avg_gap": gap},
        "timing": {"unlearn_s": rte, "rte_frac_of_retrain": frac},
        "device": "cpu",
    }


# 2 methods x 2 seeds; FAMR's figures differ by 2 between seeds (sample std sqrt(2) = 1.41), Retrain's not at all.
CANNED = [
    ("famr", 0, results("famr", 0, 96, 80, 78, 4, 3, 26, 2, 0.003)),
    ("famr", 1, results("famr", 1, 98, 82, 80, 2, 5, 24, 4, 0.005)),
    ("retrain", 0, results("retrain", 0, 100, 85, 82, 0, 100, 0, 600, 1.0)),
    ("retrain", 1, results("retrain", 1, 100, 85, 82, 0, 100, 0, 600, 1.0)),
]
CAPTION = (
    "Class forgetting, cifar10_cpu, forget class 0 (airplane); mean ± std over seeds 0, 1; device: cpu (Test CPU, 2 cores). "
    "UA, RA, TA, forget-test acc and MIA-Efficacy in %; Avg. Gap to Retrain over UA, RA, TA, MIA; RTE = the unlearning step; "
    "trials = the search behind the method's values (famr-tune trials; 0 accepted = none passed the collapse guard; "
    "hand = an earlier hand search; 0 = the published defaults). reads = the training data the method's unlearning reads "
    "(D_f: the forget set, D_r: the retained set, D: both); Retrain, the reference, first, then the methods grouped by it."
)
EXPECTED_MARKDOWN = f"""**{CAPTION}**

| method | reads | UA | RA | TA | forget-test acc | MIA-Efficacy | Avg. Gap | RTE s | RTE % of Retrain | n | trials |
|---|---|---|---|---|---|---|---|---|---|---|---|
| Retrain | D_r only | 100.00 ± 0.00 | 85.00 ± 0.00 | 82.00 ± 0.00 | 0.00 ± 0.00 | 100.00 ± 0.00 | 0.00 ± 0.00 | 600.00 ± 0.00 | 100.00 ± 0.00 | 2 | – |
| **FAMR** | D_f only | 97.00 ± 1.41 | 81.00 ± 1.41 | 79.00 ± 1.41 | 3.00 ± 1.41 | 4.00 ± 1.41 | 25.00 ± 1.41 | 3.00 ± 1.41 | 0.40 ± 0.14 | 2 | 0 |
"""  # noqa: E501
EXPECTED_LATEX = r"""\begin{table}[t]
\centering
\caption{Class forgetting, cifar10\_cpu, forget class 0 (airplane); mean $\pm$ std over seeds 0, 1; device: cpu (Test CPU, 2 cores). UA, RA, TA, forget-test acc and MIA-Efficacy in \%; Avg. Gap to Retrain over UA, RA, TA, MIA; RTE = the unlearning step; trials = the search behind the method's values (famr-tune trials; 0 accepted = none passed the collapse guard; hand = an earlier hand search; 0 = the published defaults). reads = the training data the method's unlearning reads (D\_f: the forget set, D\_r: the retained set, D: both); Retrain, the reference, first, then the methods grouped by it.}
\label{tab:cifar10-cpu}
\begin{tabular}{llrrrrrrrrrr}
\toprule
Method & Reads & UA & RA & TA & Forget-test acc & MIA-Efficacy & Avg.\ Gap & RTE (s) & RTE (\% of Retrain) & $n$ & Trials \\
\midrule
Retrain & $D_r$ only & 100.00 $\pm$ 0.00 & 85.00 $\pm$ 0.00 & 82.00 $\pm$ 0.00 & 0.00 $\pm$ 0.00 & 100.00 $\pm$ 0.00 & 0.00 $\pm$ 0.00 & 600.00 $\pm$ 0.00 & 100.00 $\pm$ 0.00 & 2 & -- \\
\midrule
\textbf{FAMR} & $D_f$ only & 97.00 $\pm$ 1.41 & 81.00 $\pm$ 1.41 & 79.00 $\pm$ 1.41 & 3.00 $\pm$ 1.41 & 4.00 $\pm$ 1.41 & 25.00 $\pm$ 1.41 & 3.00 $\pm$ 1.41 & 0.40 $\pm$ 0.14 & 2 & 0 \\
\bottomrule
\end{tabular}
\end{table}
"""  # noqa: E501


def canned_jobs() -> list[Job]:
    return [Job(Path(f"/sweep/{i}"), {"method": m, "seed": str(s)}, r) for i, (m, s, r) in enumerate(CANNED)]


def write_sweep(sweep_dir: Path, entries: list[tuple[dict[str, str], dict | None]]) -> None:
    """A sweep dir as famr-run leaves it: <n>/.hydra/overrides.yaml and, unless None, <n>/results.json."""
    for num, (overrides, res) in enumerate(entries):
        job = sweep_dir / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
        if res is not None:
            (job / "results.json").write_text(json.dumps(res))


def test_tables_on_canned_results_markdown_latex_and_csv():
    table = tables.build_table(canned_jobs(), "cifar10_cpu", expected=("retrain", "famr"), seeds=(0, 1), machine=MACHINE)
    # Rows in the field's order (Retrain before FAMR), whatever order the jobs came in.
    assert [r.key for r in table.rows] == ["retrain", "famr"]
    assert table.failed == 0 and table.jobs == 4
    assert table_render.to_markdown(table) == EXPECTED_MARKDOWN
    assert table_render.to_latex(table) == EXPECTED_LATEX

    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(table_render.to_csv(table)))}
    assert list(rows) == ["retrain", "famr"]
    famr = rows["famr"]
    assert (famr["name"], famr["n"], famr["failed"], famr["seeds"], famr["devices"]) == ("FAMR", "2", "0", "0;1", "cpu")
    assert float(famr["UA_mean"]) == 97.0 and float(famr["UA_std"]) == pytest.approx(2**0.5, abs=1e-6)
    assert float(famr["avg_gap_mean"]) == 25.0 and float(famr["rte_s_mean"]) == 3.0
    assert float(famr["rte_pct_of_retrain_mean"]) == pytest.approx(0.4) and float(famr["rte_pct_of_retrain_std"]) == pytest.approx(0.141421)
    assert float(rows["retrain"]["TA_mean"]) == 82.0 and float(rows["retrain"]["TA_std"]) == 0.0


def test_the_forgotten_table_aggregates_the_robustness_headline_over_seeds():
    jobs = canned_jobs()
    for job, (relearn, excess) in zip(jobs, [(30.0, 10.0), (34.0, 14.0), (20.0, 0.0), (20.0, 0.0)]):
        job.results = {
            **job.results,
            "robustness": {"headline": {"relearn_k": 5, "relearn_forget_acc": relearn, "relearn_residual": excess}},
        }
    table = tables.robustness_table(jobs, "cifar10_cpu", title="Class forgetting")
    md = table_render.to_markdown(table)
    assert md.startswith("**Is it forgotten? Class forgetting, cifar10_cpu") and "docs/robustness.md" in md
    famr = next(line for line in md.splitlines() if line.startswith("| **FAMR**"))
    # reads, forget-test acc, relearn acc, relearn excess, then checks these jobs did not run
    assert famr.startswith("| **FAMR** | D_f only | 3.00 ± 1.41 | 32.00 ± 2.83 | 12.00 ± 2.83 | – |")
    rows = list(csv.DictReader(io.StringIO(table_render.to_csv(table))))
    assert rows[0]["relearn_residual_mean"] == "0.000000" and rows[1]["relearn_forget_acc_mean"] == "32.000000"


def test_a_forget_set_drawn_per_seed_is_named_once_without_its_seed():
    def sample(seed: int) -> dict:
        return {
            **results("famr", seed, 30, 70, 55, None, 37, 17, 4, 0.01),
            "forget": {"description": f"30,000 × 10% = 3,000 samples (seed {seed})"},
        }

    table = tables.build_table(
        [Job(Path(f"/sweep/{s}"), {"method": "famr", "seed": str(s)}, sample(s)) for s in (0, 1)], "cifar10_cpu", seeds=(0, 1)
    )
    assert table.forget == "30,000 × 10% = 3,000 samples (a draw per seed)"
    assert tables.build_table(canned_jobs(), "cifar10_cpu", seeds=(0, 1)).forget == "class 0 (airplane)"


def test_one_seed_shows_the_mean_alone_and_names_are_escaped():
    jobs = [Job(Path("/s/0"), {"method": "l1_sparse", "seed": "0"}, results("l1_sparse", 0, 99.5, 84, 81, 0.5, 100, 0.75, 106.1, 0.157))]
    table = tables.build_table(jobs, "cifar10_cpu", machine=MACHINE)
    md = table_render.to_markdown(table)
    assert "seed 0; device" in md
    assert "| l1-sparse | D_r only | 99.50 | 84.00 | 81.00 | 0.50 | 100.00 | 0.75 | 106.10 | 15.70 | 1 |" in md
    assert r"$\ell_1$-sparse & $D_r$ only & 99.50 & 84.00" in table_render.to_latex(table)
    assert table_render.latex_escape("a_b & 5% #1") == r"a\_b \& 5\% \#1"
    assert table_render.to_csv(table).splitlines()[1].startswith("cifar10_cpu,l1_sparse,l1-sparse,1,0,99.500000,,84.000000,")


def test_a_failed_job_is_counted_and_does_not_break_the_table(tmp_path):
    sweep = tmp_path / "methods"
    ok = [({"method": m, "seed": str(s)}, r) for m, s, r in CANNED]
    ok[1] = ({"method": "famr", "seed": "1"}, {"status": "diverged", "method": "famr", "error": "Non-finite loss in epoch 2."})
    # A job killed before it wrote results.json (only .hydra/) and a method whose every job failed.
    write_sweep(
        sweep, [*ok, ({"method": "ssd", "seed": "0"}, None), ({"method": "ssd", "seed": "1"}, {"status": "failed", "method": "ssd"})]
    )
    table = tables.build_table(load_jobs(sweep), "cifar10_cpu", expected=("retrain", "famr", "ssd", "scrub"), seeds=(0, 1), machine=MACHINE)

    # Retrain, then by the data read: FAMR (D_f only), SCRUB (D_f + D_r), SSD (all of D).
    assert [r.key for r in table.rows] == ["retrain", "famr", "scrub", "ssd"]
    assert table.failed == 5 and table.jobs == 8  # famr seed 1, ssd x2, scrub x2 (never ran)
    famr = table.rows[1]
    assert famr.n == 1 and famr.stats["UA"] == tables.Stat(96.0, None, 1)
    md = table_render.to_markdown(table)
    assert "5 of 8 jobs failed (†)" in md
    assert "| **FAMR** † | D_f only | 96.00 (n=1) | 80.00 (n=1) |" in md and md.split("\n")[5].endswith("| 1 of 2 | 0 |")
    assert "| SSD † | all of D | – | – | – | – | – | – | – | – | 0 of 2 |" in md
    assert "† FAMR, seed 1: diverged (Non-finite loss in epoch 2.)" in md
    assert "† SSD, seed 0: missing (no results.json (the job was killed or never started))" in md
    assert "† SCRUB, seed 1: missing (no job ran with this seed)" in md
    assert "| Retrain | D_r only | 100.00 ± 0.00 |" in md
    tex = table_render.to_latex(table)
    assert r"\textbf{FAMR}$^\dagger$ & $D_f$ only & 96.00 (n=1)" in tex and r"$^\dagger$ FAMR, seed 1: diverged" in tex
    rows = list(csv.DictReader(io.StringIO(table_render.to_csv(table))))
    assert [(r["method"], r["n"], r["failed"]) for r in rows] == [
        ("retrain", "2", "0"),
        ("famr", "1", "1"),
        ("scrub", "0", "2"),
        ("ssd", "0", "2"),
    ]
    assert rows[3]["UA_mean"] == ""

    # The runner, rebuilding from the sweep dirs: files written, failures reported, exit 1.
    profile = PROFILES["cpu"]
    runs = tmp_path / "runs"
    sweeps = plan_sweeps(profile, runs, DataPlan(), famr_run=["famr-run"])
    write_sweep(sweeps[0].dir, [({"method": m, "seed": str(s)}, r) for m, s, r in CANNED[:3]])
    assert [s.dir.name for s in sweeps] == ["methods", "methods_sample", "lambda"]
    assert "forget=sample" in sweeps[1].argv and "forget.fraction=0.1" in sweeps[1].argv
    write_sweep(sweeps[1].dir, [({"method": m, "seed": str(s)}, r) for m, s, r in CANNED[:2]])
    lam = results("famr", 0, 90, 80, 78, 4, 3, 26, 2, 0.003)
    write_sweep(sweeps[2].dir, [({"method": "famr", "method.lam": "0.1", "seed": "0"}, lam)])
    (sweeps[2].dir / "tradeoff.png").write_bytes(b"\x89PNG")
    out, log = tmp_path / "tables", []
    assert reproduce(profile, sweeps, out, runs, tables_only=True, log=log.append) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            f"cpu_cifar10_cpu{s}"
            for s in (
                ".md",
                ".csv",
                ".tex",
                "_sample.md",
                "_sample.csv",
                "_sample.tex",
                "_forgotten.md",
                "_forgotten.csv",
                "_forgotten.tex",
                "_sample_forgotten.md",
                "_sample_forgotten.csv",
                "_sample_forgotten.tex",
                "_lambda.md",
                "_lambda.csv",
                "_lambda.tex",
                "_lambda_tradeoff.png",
            )
        ]
    )
    sample = (out / "cpu_cifar10_cpu_sample.md").read_text()
    assert sample.startswith("**Random 10 % sample forgetting, cifar10_cpu") and "| trials |" in sample
    assert r"\label{tab:cifar10-cpu-sample}" in (out / "cpu_cifar10_cpu_sample.tex").read_text()
    assert "| λ = 0.1 | 90.00 |" in (out / "cpu_cifar10_cpu_lambda.md").read_text()
    forgotten = (out / "cpu_cifar10_cpu_forgotten.md").read_text()
    assert forgotten.startswith("**Is it forgotten? Class forgetting, cifar10_cpu") and "| relearn excess |" in forgotten
    assert r"\label{tab:cifar10-cpu-forgotten}" in (out / "cpu_cifar10_cpu_forgotten.tex").read_text()
    assert any("did not finish ok" in line for line in log)


def test_profiles_as_specified():
    paper, cpu, smoke = PROFILES["paper"], PROFILES["cpu"], PROFILES["smoke"]
    methods = (
        "retrain",
        "famr",
        "famr_entropy",
        "famr_head",
        "famr_retain_kd",
        "finetune",
        "grad_ascent",
        "random_label",
        "l1_sparse",
        "salun",
        "ssd",
        "scrub",
        "neggrad_plus",
        "bad_teacher",
        "cf_k",
        "eu_k",
        "boundary_shrink",
        "boundary_expand",
        "unsir",
        "fisher",
        "jit",
    )
    assert paper.experiments == ("cifar10_resnet18", "cifar10_vit", "imagenet100_resnet18") and paper.methods == methods
    assert paper.seeds == (0, 1, 2) and paper.seed_overrides(paper.seeds) == ["seed=0,1,2"]
    assert cpu.experiments == ("cifar10_cpu",) and cpu.methods == methods
    assert cpu.seed_overrides(cpu.seeds) == ["seed=0,1", "train.seed=0"]
    assert paper.lambdas == cpu.lambdas == (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    assert smoke.hidden and smoke.experiments == ("quickstart",) and set(smoke.methods) == {"famr", "grad_ascent", "retrain"}
    assert (
        [t.title for t in cpu.forget_tables]
        == [t.title for t in paper.forget_tables]
        == ["Class forgetting", "Random 10 % sample forgetting"]
    )


FAKE_FAMR_RUN = """
import json, pathlib, sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
sweep = pathlib.Path(args["hydra.sweep.dir"])
for num, method in enumerate(args["method"].split(",")):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- method={method}\\n- seed=0\\n")
    status = "failed" if method == "ssd" else "ok"
    res = {"status": status, "method": method, "metrics": {"unlearned": {"UA": 50.0}}, "timing": {"unlearn_s": 1.0}, "device": "cpu"}
    (job / "results.json").write_text(json.dumps(res))
sys.exit(2 if "ssd" in args["method"] else 0)
"""


def test_runner_builds_tables_from_the_ok_jobs_when_famr_run_fails(tmp_path):
    profile = replace(PROFILES["cpu"], methods=("famr", "ssd"), seeds=(0,))
    runs, out = tmp_path / "runs", tmp_path / "tables"
    sweeps = plan_sweeps(profile, runs, DataPlan(), famr_run=[sys.executable, "-c", FAKE_FAMR_RUN])
    (sweeps[0].dir / "0").mkdir(parents=True)  # a previous run's sweep is set aside, not mixed in
    log: list[str] = []
    assert reproduce(profile, sweeps, out, runs, log=log.append) == 1
    assert len(list(sweeps[0].dir.parent.glob("methods.prev-*/0"))) == 1
    md = (out / "cpu_cifar10_cpu.md").read_text()
    assert "| **FAMR** | D_f only | 50.00 | – |" in md and "| SSD † | all of D | – |" in md and "1 of 2 jobs failed" in md
    assert any("famr-run exited non-zero for 2 sweep(s)" in line for line in log)
    assert (runs / "cpu" / "machine.txt").read_text().strip() in md


def test_resume_keeps_the_sweep_dirs_and_asks_famr_run_to_skip_finished_jobs(tmp_path):
    profile = replace(PROFILES["cpu"], methods=("famr",), seeds=(0,), lambdas=())
    runs, out = tmp_path / "runs", tmp_path / "tables"
    record = "import pathlib, sys; d = pathlib.Path(sys.argv[-1].split('=', 1)[1]); (d / 'argv').write_text(' '.join(sys.argv[1:]))"
    sweeps = plan_sweeps(profile, runs, DataPlan(), famr_run=[sys.executable, "-c", record], resume=True)
    earlier = sweeps[0].dir / "0" / "results.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}")
    reproduce(profile, sweeps, out, runs, resume=True, log=[].append)
    assert earlier.is_file() and not list(sweeps[0].dir.parent.glob("*.prev-*"))
    assert "skip_finished=true" in (sweeps[0].dir / "argv").read_text().split()
    assert all("skip_finished=true" not in s.argv for s in plan_sweeps(profile, runs, DataPlan(), famr_run=["famr-run"]))


def test_resume_refuses_a_sweep_dir_started_with_other_methods(tmp_path):
    """Hydra numbers job dirs by position: resuming with another method list would put other jobs in them."""
    runs, out = tmp_path / "runs", tmp_path / "tables"
    record = "import pathlib, sys; d = pathlib.Path(sys.argv[-1].split('=', 1)[1]); (d / 'argv').write_text(' '.join(sys.argv[1:]))"
    first = replace(PROFILES["cpu"], methods=("famr", "ssd"), seeds=(0,), lambdas=())
    sweeps = plan_sweeps(first, runs, DataPlan(), famr_run=[sys.executable, "-c", record])
    reproduce(first, sweeps, out, runs, log=[].append)
    same = plan_sweeps(first, runs, DataPlan(), famr_run=[sys.executable, "-c", record], resume=True)
    check_resumable(same)  # the same jobs: resumable
    other = plan_sweeps(replace(first, methods=("ssd",)), runs, DataPlan(), famr_run=[sys.executable, "-c", record], resume=True)
    with pytest.raises(FamrError, match=r"^--resume would continue .*methods, which was started with other jobs"):
        check_resumable(other)


def test_a_sweep_that_runs_nothing_sets_its_earlier_jobs_aside(tmp_path):
    """Every method refuses forget=sample: the sample sweep does not run, and an earlier one's jobs leave no rows."""
    runs = tmp_path / "runs"
    profile = replace(PROFILES["cpu"], methods=("unsir",), seeds=(0,), lambdas=())
    sweeps = plan_sweeps(profile, runs, DataPlan(), famr_run=["famr-run"], resume=True)
    sample = next(s for s in sweeps if s.table.spec == "sample")
    assert not sample.runs
    (sample.dir / "0").mkdir(parents=True)
    (sample.dir / "0" / "results.json").write_text("{}")
    run_sweeps([sample], log=[].append, resume=True)
    assert not sample.dir.exists() and len(list(sample.dir.parent.glob(f"{sample.dir.name}.prev-*"))) == 1


def run_script(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_dry_run_prints_the_commands(tmp_path):
    args = ["--profile", "cpu", "--data", str(tmp_path), "--dry-run", "--runs", str(tmp_path / "runs")]
    # A dry run never stops on data: it says what would stop the real run, then prints the commands.
    proc = run_script(args, cli_env(tmp_path), tmp_path)
    assert (
        proc.returncode == 0 and f"# a real run would stop here: CIFAR-10 at {tmp_path} (DATA / --data) has neither train/" in proc.stdout
    )
    (tmp_path / "train").mkdir()
    proc = run_script(args, cli_env(tmp_path), tmp_path)
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert len(commands) == 3
    assert commands[0].endswith(
        "famr-run -m experiment=cifar10_cpu "
        "method=retrain,famr,famr_entropy,famr_head,famr_retain_kd,finetune,grad_ascent,random_label,l1_sparse,salun,ssd,scrub,"
        "neggrad_plus,bad_teacher,cf_k,eu_k,boundary_shrink,boundary_expand,unsir,fisher,jit "
        f"seed=0,1 train.seed=0 dataset.root={tmp_path} progress=false hydra.sweep.dir={tmp_path}/runs/cpu/cifar10_cpu/methods"
    )
    # The class-only methods (Boundary Shrink/Expanding, UNSIR) are left out of the sample sweep.
    assert "ssd,scrub,neggrad_plus,bad_teacher,cf_k,eu_k,fisher,jit forget=sample forget.fraction=0.1 seed=0,1" in commands[1]
    assert commands[1].endswith("/methods_sample")
    assert "method=famr method.lam=0.01,0.1,1,10,100,1000 seed=0 train.seed=0" in commands[2]
    assert not (tmp_path / "runs").exists()


def test_sweeps_start_the_venvs_famr_run_unless_the_environment_names_another(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FAMR_RUN_COMMAND", raising=False)
    assert famr_run_command() == [str(Path(sys.executable).with_name("famr-run"))]
    monkeypatch.setenv("FAMR_RUN_COMMAND", "srun --ntasks=1 'famr run'")
    sweeps = plan_sweeps(PROFILES["cpu"], tmp_path, DataPlan())
    assert all(s.argv[:4] == ["srun", "--ntasks=1", "famr run", "-m"] for s in sweeps)
    # One that does not split is one sentence and exit 2, before anything runs.
    (tmp_path / "train").mkdir()
    monkeypatch.setenv("FAMR_RUN_COMMAND", "famr-run 'unclosed")
    assert reproduce_cli.main(["--profile", "cpu", "--data", str(tmp_path), "--runs", str(tmp_path / "runs")]) == 2
    assert 'FAMR_RUN_COMMAND="famr-run \'unclosed" does not split as a shell line' in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_tables_picks_the_forget_tables_and_the_lambda_sweep_goes_with_class(tmp_path, capsys):
    from famr_cli.reproduce.cli import main

    (tmp_path / "train").mkdir()
    base = ["--profile", "cpu", "--data", str(tmp_path), "--dry-run", "--runs", str(tmp_path / "runs")]
    assert main([*base, "--tables", "sample"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(commands) == 1 and commands[0].endswith("/methods_sample") and "forget=sample forget.fraction=0.1" in commands[0]
    assert main([*base, "--tables", "class"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [c.rsplit("/", 1)[1] for c in commands] == ["methods", "lambda"]
    assert main([*base, "--tables", "sample,styles"]) == 2
    assert capsys.readouterr().err == "Unknown table(s) styles for --tables: choose from class, sample.\n"


def test_the_machine_names_its_cpu_generation_where_the_os_lists_it(tmp_path):
    from famr_cli.host import cpu_flags, cpu_name

    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\n"
    )
    assert cpu_name(info) == "AMD EPYC, family 26, model 2, AVX-512"
    assert cpu_flags(info) == {"fpu", "avx2", "avx512f"}
    info.write_text("model name\t: Some CPU\nflags\t\t: fpu avx2\n")
    assert cpu_name(info) == "Some CPU"
    assert cpu_flags(tmp_path / "missing") == set()


def test_cifar10_sources_in_order(tmp_path, monkeypatch):
    monkeypatch.delenv("FAMR_CIFAR10_ROOT", raising=False)
    monkeypatch.delenv("FAMR_SHARED_DATA", raising=False)
    repo, cache = tmp_path / "work" / "repo", tmp_path / "cache"
    with pytest.raises(DataError, match=r"^No local CIFAR-10 found .*--allow-download to let torchvision fetch it\.$"):
        find_cifar10(None, repo, cache, allow_download=False)
    assert find_cifar10(None, repo, cache, allow_download=True)[0] is None
    paper = plan_data(PROFILES["paper"].with_experiments(("cifar10_vit",)), repo, cache, None, None, allow_download=False)
    assert paper.overrides == {"cifar10_vit": ["dataset.root=null"]}  # the paper profile may download
    (cache / "downloads" / "cifar-10-batches-py").mkdir(parents=True)
    assert find_cifar10(None, repo, cache, False)[0] == cache / "downloads"
    (tmp_path / "work" / "shared" / "data").mkdir(parents=True)
    (tmp_path / "work" / "shared" / "data" / "cifar10-jpeg.tar.gz").write_bytes(b"")
    assert find_cifar10(None, repo, cache, False)[0] == tmp_path / "work" / "shared" / "data" / "cifar10-jpeg.tar.gz"
    monkeypatch.setenv("FAMR_SHARED_DATA", str(tmp_path))
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(b"")
    assert find_cifar10(None, repo, cache, False)[0] == tmp_path / "cifar10-jpeg.tar.gz"
    monkeypatch.setenv("FAMR_CIFAR10_ROOT", str(tmp_path / "cifar10-jpeg.tar.gz"))
    assert find_cifar10(None, repo, cache, False) == (tmp_path / "cifar10-jpeg.tar.gz", "FAMR_CIFAR10_ROOT")
    assert find_cifar10(str(cache / "downloads"), repo, cache, False) == (cache / "downloads", "DATA / --data")


def test_missing_data_exits_2_with_one_sentence_before_running_anything(tmp_path):
    runs = tmp_path / "runs"
    proc = run_script(["--profile", "cpu", "--data", "/nonexistent", "--runs", str(runs)], cli_env(tmp_path), tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (
        "CIFAR-10 not found at /nonexistent (DATA / --data): pass DATA=/path/to/cifar10 (a folder or .tar.gz in the CIFAR layout) "
        "or set FAMR_CIFAR10_ROOT.\n"
    )
    assert proc.stdout == "" and not runs.exists()
    # The same for a missing FAMR_CIFAR10_ROOT and, in the paper profile, a missing ImageNet.
    proc = run_script(["--profile", "cpu", "--runs", str(runs)], cli_env(tmp_path, FAMR_CIFAR10_ROOT="/nope"), tmp_path)
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("CIFAR-10 not found at /nope (FAMR_CIFAR10_ROOT)")
        and "Traceback" not in proc.stderr
    )
    (tmp_path / "cifar" / "train").mkdir(parents=True)
    args = ["--profile", "paper", "--data", str(tmp_path / "cifar"), "--imagenet", "/nope", "--runs", str(runs)]
    proc = run_script(args, cli_env(tmp_path), tmp_path)
    assert proc.returncode == 2 and "ImageNet not found at /nope" in proc.stderr and "Traceback" not in proc.stderr
    assert not runs.exists()


@pytest.mark.slow
def test_smoke_profile_end_to_end(tmp_path, monkeypatch, capfd):
    out, runs = tmp_path / "tables", tmp_path / "runs"
    # famr-reproduce in this process (the tests above run the script); the famr-run sweeps it starts are
    # real, forks of the session's server.
    use_cli_env(monkeypatch, tmp_path, **forked_famr_run())
    code = reproduce_cli.main(["--profile", "smoke", "--out", str(out), "--runs", str(runs)])
    printed = capfd.readouterr()
    assert code == 0, printed.out[-3000:] + printed.err[-3000:]
    for suffix in (".md", ".csv", ".tex"):
        assert (out / f"smoke_quickstart{suffix}").is_file() and (out / f"smoke_quickstart_lambda{suffix}").is_file()
    rows = list(csv.DictReader((out / "smoke_quickstart.csv").open()))
    assert [(r["method"], r["n"], r["failed"], r["seeds"]) for r in rows] == [
        ("retrain", "2", "0", "0;1"),
        ("famr", "2", "0", "0;1"),
        ("grad_ascent", "2", "0", "0;1"),
    ]
    assert all(r["UA_mean"] and r["rte_s_mean"] and r["avg_gap_mean"] for r in rows)
    md = (out / "smoke_quickstart.md").read_text()
    assert "mean ± std over seeds 0, 1; device: cpu (" in md and "| **FAMR** |" in md
    lam = list(csv.DictReader((out / "smoke_quickstart_lambda.csv").open()))
    assert [r["lam"] for r in lam] == ["0.01", "0.1", "1"] and all(r["n"] == "1" for r in lam)
    # The cpu profile's seed scheme: one original model and one Retrain for both seeds.
    jobs = load_jobs(runs / "smoke" / "quickstart" / "methods")
    assert len({j.results["cache"]["original"]["key"] for j in jobs}) == 1
    assert len({j.results["cache"]["retrain"]["key"] for j in jobs}) == 1
    # The λ sweep's own overrides reach its jobs alone.
    famr_epochs = {j.results["config"]["method"]["epochs"] for j in jobs if j.results["method"] == "famr"}
    tuned = yaml.safe_load((Path(CONFIG_DIR) / "method" / "tuned" / "quickstart" / "class" / "famr.yaml").read_text())
    assert famr_epochs == {tuned["epochs"]} != {20} and {
        j.results["config"]["method"]["epochs"] for j in load_jobs(runs / "smoke" / "quickstart" / "lambda")
    } == {20}


def test_the_trials_column_names_the_search_behind_a_row():
    def job(method: str, tuned_by: dict | None) -> dict:
        return {"method": method, "config": {"method": {"name": method, **({"tuned_by": tuned_by} if tuned_by else {})}}}

    assert tables.trials_behind(job("famr", {"protocol": "famr-tune", "trials": 4, "accepted": 3})) == "4"
    assert tables.trials_behind(job("famr", {"protocol": "famr-tune", "trials": 4, "accepted": 0})) == "4 (0 accepted)"
    assert tables.trials_behind(job("scrub", {"protocol": "hand sweep", "trials": 6})) == "6 (hand)"
    assert tables.trials_behind(job("ssd", None)) == "0"
    assert tables.trials_behind(job("retrain", None)) == tables.MISSING


def test_privacy_runs_famr_privacy_per_experiment_where_the_profile_offers_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "train").mkdir()
    base = ["--profile", "cpu", "--data", str(tmp_path), "--dry-run", "--runs", str(tmp_path / "runs"), "--methods", "retrain,famr,ssd"]
    assert reproduce_cli.main([*base, "--privacy"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith(
        "famr-privacy experiment=cifar10_cpu forget=class --methods famr,ssd --models 16 --protocols competition "
        f"--dir {tmp_path}/runs/cpu/privacy dataset.root={tmp_path}"
    )
    assert reproduce_cli.main(["--profile", "paper", "--dry-run", "--privacy"]) == 2
    assert "--privacy is not offered for profile paper" in capsys.readouterr().err

    # The step copies each study's tables beside the others and passes a failure on.
    from famr_cli.reproduce import privacy_step

    writer = "import sys, pathlib; d = pathlib.Path(sys.argv[sys.argv.index('--dir') + 1]) / 'quickstart' / 'class'; " + (
        "d.mkdir(parents=True); (d / 'privacy.md').write_text('table'); (d / 'privacy.json').write_text('{}'); sys.exit(1)"
    )
    monkeypatch.setattr(privacy_step, "famr_privacy_command", lambda: [sys.executable, "-c", writer])
    smoke = PROFILES["smoke"]
    studies = privacy_step.plan_privacy(smoke, tmp_path / "runs", DataPlan())
    assert "--models" in studies[0].argv and studies[0].argv[studies[0].argv.index("--protocols") + 1] == "competition,full"
    code, files = privacy_step.run_privacy(smoke, studies, tmp_path / "tables", log=[].append)
    assert code == 1 and sorted(f.name for f in files) == ["smoke_quickstart_privacy.json", "smoke_quickstart_privacy.md"]
    assert (tmp_path / "tables" / "smoke_quickstart_privacy.md").read_text() == "table"
