"""Every famr table groups methods by the training data they read; a method not defined for a table's forget
spec keeps its row and says why; famr-reproduce runs a subset of methods and reports its wall time; and
famr-run --help lists every method under the data it reads.

The expected groups are the methods' own declarations (``data_read`` in src/famr_cli/method/): FAMR, its
entropy and head variants and GA read D_f only; FAMR+KD (retain_kd > 0), RL, SalUn and SCRUB read D_f + D_r;
Retrain, FT and l1-sparse read D_r only; SSD reads all of D.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch.nn as nn
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import run_cli
from famr_cli import method_reads
from famr_cli.config_schema import CONFIG_DIR
from famr_cli.method import DATA_READ, METHODS, UnlearningMethod
from famr_cli.method_reads import METHOD_NAMES, methods_help, reads_of_option, reads_of_row
from famr_cli.reproduce import cli as reproduce_cli
from famr_cli.reproduce import table_render, tables
from famr_cli.reproduce.data import DataPlan
from famr_cli.reproduce.profiles import ALL_METHODS, CLASS_TABLE, PROFILES, SAMPLE_TABLE
from famr_cli.reproduce.robustness_report import main as robustness_main
from famr_cli.reproduce.runner import plan_sweeps, reproduce, wall_time
from famr_cli.sweep.files import write_summary
from famr_cli.sweep.jobs import Job, load_jobs
from famr_cli.sweep.summarize_cli import compare_table
from famr_cli.sweep.summarize_cli import table as by_table
from famr_cli.sweep.summary import to_csv, to_markdown
from famr_cli.tune import report

REPO = Path(__file__).resolve().parents[1]
# Scrambled on purpose: the tables put them in order, whatever order the jobs came in.
SCRAMBLED = ["ssd", "finetune", "scrub", "famr_retain_kd", "grad_ascent", "famr", "retrain", "l1_sparse", "famr_entropy"]
GROUPED = ["retrain", "famr", "famr_entropy", "grad_ascent", "famr_retain_kd", "scrub", "finetune", "l1_sparse", "ssd"]
READS = {
    "retrain": "D_r only",
    "famr": "D_f only",
    "famr_entropy": "D_f only",
    "grad_ascent": "D_f only",
    "famr_retain_kd": "D_f + D_r",
    "scrub": "D_f + D_r",
    "finetune": "D_r only",
    "l1_sparse": "D_r only",
    "ssd": "all of D",
}
TOY = "toy_class_only"
REFUSED = "— (defined for class forgetting only)"


def results(method: str, seed: int = 0, ua: float = 50.0, **config) -> dict:
    return {
        "status": "ok",
        "method": method,
        "config": {"seed": seed, **config},
        "metrics": {
            "unlearned": {"UA": ua, "RA": 90.0, "TA": 80.0, "forget_test_acc": 1.0, "retain_test_acc": 85.0, "mia_efficacy": 60.0},
            "original": {"retain_test_acc": 86.0},
        },
        "gaps": {"avg_gap": 5.0},
        "timing": {"unlearn_s": 3.0, "rte_frac_of_retrain": 0.01},
        "device": "cpu",
    }


def jobs_of(methods: list[str], seeds=(0,)) -> list[Job]:
    return [Job(Path(f"/sweep/{m}-{s}"), {"method": m, "seed": str(s)}, results(m, s)) for m in methods for s in seeds]


def write_sweep(sweep: Path, entries: list[tuple[dict[str, str], dict | None]]) -> None:
    """A sweep dir as famr-run leaves it: <n>/.hydra/overrides.yaml and, unless None, <n>/results.json."""
    for num, (overrides, res) in enumerate(entries):
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {k}={v}\n" for k, v in overrides.items()))
        if res is not None:
            (job / "results.json").write_text(json.dumps(res))


class ToyClassOnly(UnlearningMethod):
    """A method defined for class forgetting alone, like Boundary Shrink or UNSIR."""

    forget_specs = ("class",)

    @property
    def data_read(self) -> str:
        return "forget"

    def unlearn(self, model: nn.Module, ctx):
        raise AssertionError("a refused method never runs")


@pytest.fixture
def class_only(monkeypatch):
    """ToyClassOnly registered as method=toy_class_only, with a conf/method file of its own, for this test alone."""
    monkeypatch.setitem(METHODS._entries, TOY, ToyClassOnly)
    real = method_reads._option_file
    monkeypatch.setattr(method_reads, "_option_file", lambda option: {"name": TOY} if option == TOY else real(option))
    method_reads.reads_of_option.cache_clear()
    yield TOY
    method_reads.reads_of_option.cache_clear()


# ------------------------------------------------------------------------------------------------- the lookup


def test_the_groups_follow_data_reads_order_and_each_method_its_declaration():
    assert list(DATA_READ.values()) == ["D_f only", "D_f + D_r", "D_r only", "all of D"]
    assert {m: reads_of_option(m).label for m in READS} == READS
    # FAMR's answer follows its options: retain_kd > 0 reads D_r, from a changed-FAMR row key or from the config a job ran.
    assert reads_of_row("famr[retain_kd=0.5]").label == "D_f + D_r"
    assert reads_of_row("famr[loss=entropy]").label == "D_f only"
    famr = method_reads.option_section("famr")
    assert reads_of_row("famr", {**famr, "retain_kd": 0.5}).label == "D_f + D_r"
    assert reads_of_row("no_such_method").label == "?" and reads_of_row("famr", {"name": "famr"}).label == "D_f only"
    assert method_reads.grouped(method_reads.field_order(SCRAMBLED)) == GROUPED
    assert method_reads.grouped(["ssd", "finetune", "famr", "retrain"]) == ["retrain", "famr", "finetune", "ssd"]
    assert method_reads.grouped(["l1_sparse", "finetune"]) == ["l1_sparse", "finetune"]  # a group keeps the order it is given


# ------------------------------------------------------------------------------------------ reproduce tables


def test_the_reproduce_table_lists_retrain_then_the_groups_in_every_format():
    table = tables.build_table(jobs_of(SCRAMBLED), "cifar10_cpu", expected=SCRAMBLED)
    assert [r.key for r in table.rows] == GROUPED
    md = table_render.to_markdown(table).splitlines()
    assert md[2].startswith("| method | reads | UA | RA |")
    body = [line.split(" | ")[:2] for line in md[4:]]
    assert body == [[f"| {'**FAMR**' if m == 'famr' else METHOD_NAMES[m]}", READS[m]] for m in GROUPED]
    assert "reads = the training data the method's unlearning reads" in md[0]
    # The CSV keeps its earlier columns in place and adds reads (and refused) last.
    rows = list(csv.DictReader(io.StringIO(table_render.to_csv(table))))
    assert [(r["method"], r["reads"], r["refused"]) for r in rows] == [(m, READS[m], "") for m in GROUPED]
    assert table_render.to_csv(table).splitlines()[0].startswith("experiment,method,name,n,failed,UA_mean,UA_std,")
    assert table_render.to_csv(table).splitlines()[0].endswith(",seeds,devices,trials,reads,refused")
    # LaTeX: a Reads column and a rule between groups (Retrain | D_f only | D_f + D_r | D_r only | all of D).
    tex = table_render.to_latex(table)
    assert "Method & Reads & UA" in tex and r"\textbf{FAMR} & $D_f$ only & 50.00" in tex and r"SSD & all of $D$" in tex
    assert tex.count(r"\midrule") == 1 + 4
    # The λ table has no groups and no reads column.
    lam = tables.lambda_table([Job(Path("/l/0"), {"method.lam": "0.1", "seed": "0"}, results("famr"))], "cifar10_cpu", (0.1,))
    assert "reads" not in table_render.to_markdown(lam) and "reads" not in table_render.to_csv(lam)


def test_the_is_it_forgotten_table_is_grouped_alike():
    table = tables.robustness_table(jobs_of(SCRAMBLED), "cifar10_cpu", title="Class forgetting")
    assert [r.key for r in table.rows] == GROUPED
    assert table_render.to_markdown(table).splitlines()[2].startswith("| method | reads | forget-test acc |")


def test_a_row_whose_method_refuses_the_forget_spec_says_why_and_is_no_failure(class_only):
    jobs = jobs_of(["famr", "retrain"], seeds=(0, 1))
    table = tables.build_table(jobs, "cifar10_cpu", expected=["retrain", "famr", class_only], seeds=(0, 1), forget_spec="sample")
    toy = table.rows[-1]
    assert [r.key for r in table.rows] == ["retrain", "famr", class_only]
    assert toy.refused == "defined for class forgetting only" and toy.failures == []
    assert table.failed == 0 and "failed" not in table.caption()
    md = table_render.to_markdown(table)
    assert f"| {class_only} | D_f only | {REFUSED} | – | – |" in md and "†" not in md
    assert md.splitlines()[-1].endswith("| – | – |")  # n and trials too
    assert r"\multicolumn{10}{l}{--- (defined for class forgetting only)}" in table_render.to_latex(table)
    assert list(csv.DictReader(io.StringIO(table_render.to_csv(table))))[-1]["refused"] == "defined for class forgetting only"
    # With the spec it is defined for, the same missing jobs are failures again (the check can fail).
    table = tables.build_table(jobs, "cifar10_cpu", expected=["retrain", "famr", class_only], seeds=(0, 1), forget_spec="class")
    assert table.rows[-1].refused is None and table.failed == 2
    # Without forget_spec, the spec the jobs ran (their forget= override) decides.
    for job in jobs:
        job.overrides["forget"] = "sample"
    assert tables.build_table(jobs, "e", expected=[class_only], seeds=(0, 1)).rows[-1].refused == "defined for class forgetting only"


# ------------------------------------------------------------------------------------------- famr-reproduce


def test_reproduce_never_launches_a_refused_method_and_shows_its_row(class_only, tmp_path):
    profile = replace(PROFILES["cpu"], methods=("famr", class_only), seeds=(0,), lambdas=())
    runs, out = tmp_path / "runs", tmp_path / "tables"
    record = "import pathlib, sys; d = pathlib.Path(sys.argv[-1].split('=', 1)[1]); (d / 'argv').write_text(' '.join(sys.argv[1:]))"
    sweeps = plan_sweeps(profile, runs, DataPlan(), famr_run=[sys.executable, "-c", record])
    assert [s.table for s in sweeps] == [CLASS_TABLE, SAMPLE_TABLE] and [t.spec for t in (CLASS_TABLE, SAMPLE_TABLE)] == ["class", "sample"]
    assert f"method=famr,{class_only}" in sweeps[0].argv and sweeps[0].refused == {}
    assert "method=famr" in sweeps[1].argv and sweeps[1].refused == {class_only: "defined for class forgetting only"}
    log: list[str] = []
    reproduce(profile, sweeps, out, runs, log=log.append)
    assert f"method=famr {SAMPLE_TABLE.overrides[0]}" in (sweeps[1].dir / "argv").read_text()
    assert f"[reproduce] cifar10_cpu methods_sample: method={class_only} does not run with forget=sample {REFUSED}" in log
    sample = (out / "cpu_cifar10_cpu_sample.md").read_text()
    assert f"| {class_only} | D_f only | {REFUSED} |" in sample
    assert f"{class_only}, seed" not in sample  # no † footnote: it did not fail
    # Every chosen method refuses the spec: that sweep is not started at all, and the table still says why.
    alone = replace(profile, methods=(class_only,))
    runs = tmp_path / "alone"
    sweeps = plan_sweeps(alone, runs, DataPlan(), famr_run=[sys.executable, "-c", "raise SystemExit(9)"])
    assert [s.runs for s in sweeps] == [True, False]
    reproduce(alone, sweeps[1:], out, runs, log=[].append)
    assert not sweeps[1].dir.exists() and f"| {class_only} | D_f only | {REFUSED} |" in (out / "cpu_cifar10_cpu_sample.md").read_text()


def _dry_run(tmp_path, capsys, *extra: str) -> tuple[int, list[str], str]:
    (tmp_path / "train").mkdir(exist_ok=True)
    code = reproduce_cli.main(["--profile", "cpu", "--data", str(tmp_path), "--dry-run", "--runs", str(tmp_path / "runs"), *extra])
    printed = capsys.readouterr()
    return code, [line for line in printed.out.splitlines() if not line.startswith("#")], printed.err


def test_methods_runs_a_subset_in_the_profiles_order_and_the_lambda_sweep_only_with_famr(tmp_path, capsys):
    code, commands, _ = _dry_run(tmp_path, capsys, "--methods", "ssd, famr,retrain")
    assert code == 0 and len(commands) == 3  # class, sample, FAMR's λ sweep
    assert " method=retrain,famr,ssd " in commands[0] and " method=retrain,famr,ssd " in commands[1]
    assert commands[2].endswith("/lambda")
    code, commands, _ = _dry_run(tmp_path, capsys, "--methods", "ssd", "--tables", "class")
    assert code == 0 and [c.rsplit("/", 1)[1] for c in commands] == ["methods"] and " method=ssd " in commands[0]
    code, commands, _ = _dry_run(tmp_path, capsys, "--methods", "all")
    assert code == 0 and f" method={','.join(PROFILES['cpu'].methods)} " in commands[0]


def test_an_unknown_method_is_one_sentence_and_exit_2(tmp_path, capsys):
    code, commands, err = _dry_run(tmp_path, capsys, "--methods", "famr,sdd")
    assert code == 2 and commands == []
    assert err == f"Unknown method(s) sdd for --methods: choose from {', '.join(PROFILES['cpu'].methods)}.\n"
    # The profile's own list decides: the smoke profile runs three methods.
    assert reproduce_cli.main(["--profile", "smoke", "--dry-run", "--methods", "ssd"]) == 2
    assert capsys.readouterr().err == "Unknown method(s) ssd for --methods: choose from retrain, famr, grad_ascent.\n"


def test_make_reproduce_passes_methods_through():
    line = next(line for line in (REPO / "Makefile").read_text().splitlines() if "famr-reproduce --profile" in line)
    assert "$(if $(METHODS),--methods $(METHODS))" in line and line.rstrip().endswith("$(REPRODUCE_ARGS)")


def test_the_profiles_wall_time_is_the_last_line(tmp_path):
    assert [wall_time(s) for s in (0.4, 42, 65, 4865)] == ["0 s", "42 s", "65 s (1 min 5 s)", "4865 s (1 h 21 min 5 s)"]
    profile = replace(PROFILES["cpu"], methods=("famr",), seeds=(0,), lambdas=(), forget_tables=(CLASS_TABLE,))
    sweeps = plan_sweeps(profile, tmp_path / "runs", DataPlan(), famr_run=["famr-run"])
    log: list[str] = []
    assert reproduce(profile, sweeps, tmp_path / "out", tmp_path / "runs", tables_only=True, log=log.append) == 1
    assert re.fullmatch(r"\[reproduce\] wall time of profile cpu: \d+ s\.", log[-1]), log[-1]
    assert "did not finish ok" in log[-2]


# -------------------------------------------------------------------------------------- sweep summaries


def test_the_sweep_summary_and_famr_summarize_group_rows_by_data_read(tmp_path, class_only):
    sweep = tmp_path / "sweep"
    entries = [({"method": m}, results(m)) for m in SCRAMBLED]
    refusal = "method=toy_class_only is defined for forget=class only (got forget=sample); pick another method or forget spec."
    entries.append(
        ({"method": class_only, "forget": "sample"}, {"status": "failed", "method": class_only, "error": refusal, "exit_code": 2})
    )
    write_sweep(sweep, entries)
    summary, _ = write_summary(sweep, plots=False)
    # Retrain, then the groups; a group keeps the jobs' order (SCRAMBLED's, then the toy's job, the last one).
    order = ["retrain", "grad_ascent", "famr", "famr_entropy", class_only, "scrub", "famr_retain_kd", "finetune", "l1_sparse", "ssd"]
    assert [row["method"] for row in summary.rows()] == order
    md = to_markdown(summary).splitlines()
    head = md[4].split(" | ")
    assert head[head.index("method") + 1] == "reads"
    assert [line.split(" | ")[head.index("reads")] for line in md[6 : 6 + len(order)]] == [READS.get(m, "D_f only") for m in order]
    toy_line = md[6 + order.index(class_only)]
    assert toy_line.endswith(f"| {REFUSED} |")  # its status cell says why, not "failed"
    csv_rows = list(csv.DictReader(io.StringIO(to_csv(summary))))
    assert to_csv(summary).splitlines()[0].endswith(",error,reads") and csv_rows[0]["reads"] == "D_r only"
    assert csv_rows[order.index(class_only)]["status"] == "failed"  # the CSV keeps the job's own status

    compare = compare_table(load_jobs(sweep)).splitlines()
    assert compare[0].startswith("| method | reads | UA |")
    assert [line.split(" | ")[0][2:] for line in compare[2:]] == order
    assert f"| {class_only} | D_f only | {REFUSED} | – |" in compare[2 + order.index(class_only)]
    grouped = by_table(load_jobs(sweep), None).splitlines()
    assert grouped[0].startswith("| forget | method | reads |") and grouped[2].startswith("|  | retrain | D_r only |")


# ------------------------------------------------------------------------------------ famr-tune's report


def test_the_tune_report_lists_methods_by_data_read(tmp_path):
    record = {"number": 0, "params": {"method.lr": 0.1}, "state": "ok", "objective": 1.0, "wall_s": 2.0, "unlearned": {}}
    for method in ("ssd", "scrub", "famr", "finetune", "famr_entropy"):
        (tmp_path / method).mkdir()
        (tmp_path / method / "trials.jsonl").write_text(json.dumps(record) + "\n")
    rows = [line.split(" | ")[:2] for line in report.summary_table(tmp_path).splitlines()[2:]]
    assert rows == [
        ["| famr", "D_f only"],
        ["| famr_entropy", "D_f only"],
        ["| scrub", "D_f + D_r"],
        ["| finetune", "D_r only"],
        ["| ssd", "all of D"],
    ]
    assert report.summary_table(tmp_path).splitlines()[0].startswith("| method | reads | trials |")
    assert report.trials_table(tmp_path / "ssd").startswith("**ssd** (reads all of D)")


# ------------------------------------------------------------------------------------- famr-robustness


def test_famr_robustness_groups_its_job_rows(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    figures = {"relearn": {"forget_acc_before": 1.0, "full_k5_forget_acc": 30.0}}
    rob = {"sets": {}, "original": figures, "retrain": figures, "unlearned": figures, "vs_retrain": {}}
    write_sweep(sweep, [({"method": m}, {"status": "ok", "method": m, "robustness": rob}) for m in ("ssd", "finetune", "famr")])
    assert robustness_main([str(sweep)]) == 0
    rows = [line.split(" | ")[:2] for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [
        ["| Original", "–"],
        ["| Retrain", "D_r only"],
        ["| method=famr", "D_f only"],
        ["| method=finetune", "D_r only"],
        ["| method=ssd", "all of D"],
    ]


# ---------------------------------------------------------------------------------------- famr-run --help


def _help_groups(text: str) -> dict[str, str]:
    """The help's method block as {group label: the names listed under it (wrapped lines joined)}."""
    block = text.split("== Methods (method=<name>)", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    groups: dict[str, str] = {}
    label = ""
    for line in block:
        if not line.startswith("   "):
            label = next(lab for lab in [*DATA_READ.values(), "?"] if line.strip().startswith(lab))
            line = line.strip()[len(label) :]
        groups[label] = (groups.get(label, "") + " " + line.strip()).strip()
    return groups


def _listed(groups: dict[str, str]) -> dict[str, str]:
    """{method: its group} from :func:`_help_groups`."""
    return {name.split(" (")[0]: label for label, names in groups.items() for name in re.split(r",\s+(?![^(]*\))", names)}


def test_the_help_lists_every_registered_method_and_option_under_its_data_read(class_only, monkeypatch):
    options = method_reads.method_options()
    listed = _listed(_help_groups(methods_help()))
    assert set(METHODS.names()) - {class_only} <= set(listed) and set(options) == set(listed)  # the toy has no YAML yet
    assert {m: listed[m] for m in READS} == READS
    assert all(listed[m] == reads_of_option(m).label for m in options)
    assert list(_help_groups(methods_help())) == [label for label in DATA_READ.values() if label in listed.values()]
    assert "retrain (the reference)" in methods_help()
    assert all(len(line) <= 100 for line in methods_help().splitlines()[1:])
    # A method defined for some forget specs only says so beside its name.
    monkeypatch.setattr(method_reads, "method_options", lambda: [*options, class_only])
    assert f"{class_only} (class forgetting only)" in _help_groups(methods_help())["D_f only"]


def test_the_help_template_asks_the_registry():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    header = OmegaConf.select(cfg, "hydra.help.header")
    assert header.startswith("famr-run: post-hoc unlearning") and methods_help() in header + "\n"


@pytest.mark.slow
def test_famr_run_help_prints_the_method_list(tmp_path):
    proc = run_cli(["--help"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _listed(_help_groups(proc.stdout)) == _listed(_help_groups(methods_help()))
    assert "\n\n== Configuration groups ==" in proc.stdout


# ----------------------------------------------------------------------------------------------------- docs


def _tables_with_a_reads_column(page: str) -> dict[str, str]:
    """{method: its reads cell} from every Markdown table of ``page`` whose header has a reads column."""
    found: dict[str, str] = {}
    column = None
    for line in page.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] if line.startswith("|") else None
        if cells is None:
            column = None
        elif column is None:
            column = cells.index("reads") if "reads" in cells else -1
        elif column >= 0 and (name := re.fullmatch(r"`(\w+)`", cells[0])):
            found[name.group(1)] = cells[column]
    return found


def test_the_docs_reads_column_matches_the_code():
    documented = _tables_with_a_reads_column((REPO / "docs" / "configuration.md").read_text())
    assert set(READS) <= set(documented), sorted(documented)
    assert {m: reads_of_option(m).label for m in documented} == documented


def test_every_method_config_has_a_row_and_a_label_in_the_comparison():
    """A method with a YAML runs in famr-run at once; its row in the tables needs it listed and labelled (docs/development.md)."""
    options = {p.stem for p in (Path(CONFIG_DIR) / "method").glob("*.yaml")}
    assert options - set(ALL_METHODS) == set(), "add these to ALL_METHODS in src/famr_cli/reproduce/profiles.py"
    assert options - set(METHOD_NAMES) == set(), "add their table labels to METHOD_NAMES in src/famr_cli/method_reads.py"
    assert set(ALL_METHODS) <= options, "ALL_METHODS names a method without conf/method/<name>.yaml"
