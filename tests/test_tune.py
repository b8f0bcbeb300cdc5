"""famr-tune: declared spaces, the collapse guard, a resumable journal study, and the command end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import cli_env, compose_config, forked_famr_run, use_cli_env
from famr_cli.api import method_config
from famr_cli.cli import CONFIG_DIR
from famr_cli.errors import FamrError
from famr_cli.tune import cli as tune_cli
from famr_cli.tune import report
from famr_cli.tune.space import SPACES_DIR, Param, declared_forget_sets, declared_space, draw, tunable_methods
from famr_cli.tune.study import FAILED, OK, REJECTED, already_tried, distinct_settings, finish_trial, open_study, spent_trials
from famr_cli.tune.sweeper import combined_outcome, settings_from, trial_outcome, trial_record
from famr_cli.tune.tuned_file import write_tuned_file

FAMR_TUNE = str(Path(sys.executable).with_name("famr-tune"))
SPACE_FILES = sorted(SPACES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", SPACE_FILES, ids=[p.stem for p in SPACE_FILES])
def test_every_declared_space_names_real_keys_of_its_method_with_one_to_three_parameters(path):
    for method in yaml.safe_load(path.read_text()):
        shipped = compose_config([f"method={method}"]).method  # a named variant's keys are its base method's
        space = declared_space(path.stem, method)
        assert 1 <= len(space) <= 3, method
        for param in space:
            assert param.key.startswith("method.") and param.key.removeprefix("method.") in shipped, (method, param.key)


@pytest.mark.parametrize("path", SPACE_FILES, ids=[p.stem for p in SPACE_FILES])
def test_every_space_holds_its_methods_published_setting(path):
    """A search that cannot reach the official recipe cannot show the recipe was given its chance."""
    for method in yaml.safe_load(path.read_text()):
        published = method_config(method)  # the method's own YAML, no experiment's tuned file
        drawn = {}
        for param in declared_space(path.stem, method):
            value = drawn[param.key] = published[param.key.removeprefix("method.")]
            if param.key == "method.epochs" and path.stem == "quickstart":
                continue  # digits runs an order of magnitude more epochs than the published CIFAR recipes
            if method.startswith("famr"):
                continue  # FAMR's values are our own starting points, not a published recipe
            assert param.contains(value) and (param.choices is not None or value <= param.upper(drawn)), (method, param.key, value)


def _tpe_draws(space, objective_key: str, trials: int = 30) -> list[dict]:
    """What ``trials`` seeded TPE trials draw from ``space``, each told the value of one of its keys."""
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    drawn = []
    for _ in range(trials):
        trial = study.ask()
        values = draw(space, trial)
        study.tell(trial, values[objective_key])
        drawn.append(values)
    return drawn


def test_scrub_draws_max_steps_below_its_epochs_so_no_trial_repeats_another():
    for values in _tpe_draws(declared_space("cifar10_cpu", "scrub"), "method.lr"):
        assert 1 <= values["method.max_steps"] < values["method.epochs"], values
    with pytest.raises(FamrError, match="bounds integers only"):
        Param.parse("method.lr", {"low": 1, "high": 2, "below": "method.epochs"})


def test_ssd_draws_lambda_at_most_alpha_so_no_trial_repeats_another():
    import optuna

    space = declared_space("cifar10_cpu", "ssd")
    for values in _tpe_draws(space, "method.alpha"):
        assert 0.1 <= values["method.lambda"] <= values["method.alpha"] <= 12.0, values
    assert space[1].as_dict()["at_most"] == "method.alpha"
    with pytest.raises(FamrError, match="bounds plain floats only"):
        Param.parse("method.epochs", {"low": 1, "high": 5, "int": True, "at_most": "method.alpha"})
    with pytest.raises(FamrError, match="bounded by method.alpha, which must be declared before it"):
        draw([space[1]], optuna.create_study().ask())


def test_a_weight_near_one_is_drawn_log_uniformly_in_its_distance_to_one():
    import optuna

    param = Param.parse("method.beta", {"low": 0.9, "high": 0.9999, "log_from_one": True})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [draw([param], study.ask())["method.beta"] for _ in range(600)]
    assert all(param.contains(v) for v in values)
    # 1 - beta log-uniform in [1e-4, 0.1]: a third of the draws in each decade, where a uniform beta
    # would put 1 % of them above 0.999 and almost none near the published 0.9999.
    above = sum(v > 0.999 for v in values) / len(values)
    assert 0.27 < above < 0.40, above
    assert param.as_dict() == {"low": 0.9, "high": 0.9999, "log_from_one": True}
    with pytest.raises(FamrError, match="log_from_one"):
        Param.parse("method.beta", {"low": 0.9, "high": 1.5, "log_from_one": True})


def test_every_method_but_retrain_has_a_declared_space():
    methods = {p.stem for p in (Path(CONFIG_DIR) / "method").glob("*.yaml")}
    assert set(tunable_methods()) == methods - {"retrain"}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [({"low": 1, "high": 1}, "low < high"), ({"low": 0, "high": 1, "log": True}, "low must be positive"), ({"lo": 1}, "unknown fields")],
)
def test_bad_space_entries_are_one_sentence(spec, fragment):
    with pytest.raises(FamrError, match=fragment):
        Param.parse("method.lr", spec)


def _results(unlearned_retain: float, gap: float | None = 2.0, status: str = "ok") -> dict:
    metrics = {"original": {"retain_test_acc": 90.0}, "unlearned": {"retain_test_acc": unlearned_retain}}
    return {"status": status, "metrics": metrics, "gaps": {} if gap is None else {"avg_gap": gap}}


def test_the_collapse_guard_and_failures_reject_a_trial():
    assert trial_outcome(_results(85.0), "gaps.avg_gap", 10.0) == (OK, 2.0, "")
    state, value, reason = trial_outcome(_results(70.0), "gaps.avg_gap", 10.0)
    assert (state, value) == (REJECTED, 2.0) and "fell 20.00 points" in reason
    assert trial_outcome(_results(85.0, status="diverged"), "gaps.avg_gap", 10.0)[0] == FAILED
    assert trial_outcome(_results(85.0, gap=None), "gaps.avg_gap", 10.0)[:2] == (FAILED, math.inf)
    assert trial_outcome(None, "gaps.avg_gap", 10.0)[0] == FAILED


def test_a_trial_scores_the_mean_of_its_forget_sets_and_the_guard_holds_on_each():
    sets = ["forget.classes=[3]", "forget.classes=[8]"]
    ok = [trial_outcome(_results(85.0, gap=2.0), "gaps.avg_gap", 10.0), trial_outcome(_results(88.0, gap=4.0), "gaps.avg_gap", 10.0)]
    assert combined_outcome(ok, sets) == (OK, 3.0, "")
    # One forget set collapsing rejects the trial, however good the other: the values must hold for the task.
    one_bad = [ok[0], trial_outcome(_results(70.0, gap=0.5), "gaps.avg_gap", 10.0)]
    state, value, reason = combined_outcome(one_bad, sets)
    assert (state, value) == (REJECTED, 1.25) and reason.startswith("forget.classes=[8]: retained accuracy fell 20.00")
    failed = [ok[0], trial_outcome(None, "gaps.avg_gap", 10.0)]
    assert combined_outcome(failed, sets)[:2] == (FAILED, math.inf)


def test_the_declared_forget_sets_never_include_what_the_tables_report():
    for experiment in ("quickstart", "cifar10_cpu"):
        classes = declared_forget_sets(experiment, "class")
        samples = declared_forget_sets(experiment, "sample")
        assert len(classes) >= 2 and len(samples) >= 2
        assert "forget.classes=[0]" not in classes  # the class tables forget class 0
        assert not {"forget.seed=0", "forget.seed=1"} & set(samples)  # the 10 % tables draw with seeds 0 and 1
    with pytest.raises(FamrError, match="list of override strings"):
        settings_from({"forget_sets": "forget.classes=[3]"})


def test_a_resumed_study_keeps_finished_trials_and_retries_the_interrupted_one(tmp_path):
    journal = tmp_path / "study.journal"
    study = open_study("s", str(journal), seed=0)
    finish_trial(study, study.ask(), 1.5, OK)
    finish_trial(study, study.ask(), math.inf, REJECTED)
    study.ask()  # left running, as when the process is killed mid-trial
    resumed = open_study("s", str(journal), seed=0)
    assert spent_trials(resumed) == 2
    assert [t.state.name for t in resumed.get_trials()] == ["COMPLETE", "PRUNED", "FAIL"]
    assert resumed.best_value == 1.5


def test_a_resumed_study_draws_new_points_and_a_replay_counts_once(tmp_path):
    journal = tmp_path / "s.journal"
    first = open_study("s", str(journal), seed=0)
    trial = first.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    first.tell(trial, 1.0)
    resumed = open_study("s", str(journal), seed=0)  # a new process: the sampler starts again
    again = resumed.ask()
    assert again.suggest_float("x", 0.0, 1.0) != x  # seeded by (seed, trials so far), not by seed alone
    resumed.tell(again, 2.0)
    replay = resumed.ask()
    replay.suggest_float("x", 0.0, 1.0)
    resumed._storage.set_trial_param(replay._trial_id, "x", x, replay.distributions["x"])
    resumed.tell(replay, 1.0)
    assert len(resumed.trials) == 3 and spent_trials(resumed) == 2
    assert already_tried(resumed, {"x": x}) and not already_tried(resumed, {"x": -1.0})


def test_a_setting_run_twice_counts_once_in_the_trials_and_the_report(tmp_path):
    def record(number, lr, state=OK, gap=1.0):
        scores = {"UA": 90.0, "RA": 99.0, "TA": 70.0, "forget_test_acc": 5.0, "mia_efficacy": 95.0}
        return {"number": number, "params": {"method.lr": lr}, "state": state, "objective": gap, "wall_s": 10.0, "unlearned": scores}

    # Trials 0 and 1 ran the same lr (a study resumed before replays were skipped).
    records = [record(0, 0.1), record(1, 0.1), record(2, 0.2, REJECTED, None), record(3, 0.3, gap=0.5)]
    assert [r["number"] for r in distinct_settings(records)] == [0, 2, 3]
    (tmp_path / "famr").mkdir()
    (tmp_path / "famr" / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    row = report.summary_table(tmp_path).splitlines()[2].split(" | ")
    assert row[1:5] == ["D_f only", "3", "2", "40"]  # what FAMR reads, 3 settings, 2 accepted, every run's seconds
    assert row[5] == "0.50" and row[6] == "lr=0.3000"


def test_the_tuned_file_holds_only_what_the_search_chose_and_names_its_search(tmp_path):
    path = tmp_path / "famr.yaml"
    path.write_text("lam: 0.1\nloss: entropy\ntrainable: [layer4, fc]\ntuned_by:\n  protocol: old\n")
    provenance = {"search": "2 trials", "trials": 2, "accepted": 2, "budget_s": 10, "selection": "val", "study": "x", "commit": "abc"}
    write_tuned_file(
        path, experiment="e", forget="class", best_params={"method.lam": 3.0}, provenance=provenance, objective="gaps.avg_gap", guard=10
    )
    written = yaml.safe_load(path.read_text())
    # Nothing of the earlier file is carried over: every other key is the method's own default.
    assert set(written) == {"lam", "tuned_by"} and written["lam"] == 3.0
    assert written["tuned_by"]["protocol"] == "famr-tune" and written["tuned_by"]["trials"] == 2 and written["tuned_by"]["commit"] == "abc"
    assert path.read_text().startswith("# Values for experiment=e forget=class")


@pytest.mark.parametrize("earlier", [None, "lr: 1.0e-4\n"], ids=["new file", "scalars only"])
def test_a_tuned_file_of_scalars_alone_is_valid_yaml_for_hydra(tmp_path, earlier):
    # PyYAML writes a mapping of scalars alone in flow style; with tuned_by after it, the file would not parse.
    path = tmp_path / "grad_ascent.yaml"
    if earlier is not None:
        path.write_text(earlier)
    provenance = {"search": "s", "trials": 4, "accepted": 4, "budget_s": 9, "selection": "x", "study": "y", "commit": "abc"}
    best = {"method.lr": 2e-5, "method.epochs": 5}
    write_tuned_file(path, experiment="e", forget="class", best_params=best, provenance=provenance, objective="gaps.avg_gap", guard=10)
    loaded = OmegaConf.load(path)  # what Hydra's file config source calls
    assert loaded.lr == 2e-5 and loaded.epochs == 5 and loaded.tuned_by.trials == 4


def _tune_args(tmp_path: Path, *args: str) -> list[str]:
    return ["--dir", str(tmp_path / "tuning"), "--no-write", *args, "dataset.val_per_class=10", "train.epochs=2"]


def _tune(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = cli_env(tmp_path, **forked_famr_run())
    argv = [FAMR_TUNE, *_tune_args(tmp_path, *args)]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def test_famr_tune_needs_a_validation_split(capsys):
    assert tune_cli.main(["--methods", "famr", "--trials", "1"]) == 2
    assert "add dataset.val_per_class=N" in capsys.readouterr().err


def test_famr_tune_stops_before_any_trial_on_a_famr_run_command_that_does_not_split(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAMR_RUN_COMMAND", "famr-run 'unclosed")
    assert tune_cli.main(["--dir", str(tmp_path), "--methods", "famr", "--trials", "1", "dataset.val_per_class=10"]) == 2
    assert "does not split as a shell line" in capsys.readouterr().err and not any(tmp_path.iterdir())


@pytest.mark.slow
def test_famr_tune_gives_every_method_the_same_budget_on_validation_and_resumes(tmp_path, monkeypatch, capfd):
    proc = _tune(tmp_path, "--methods", "famr,ssd", "--trials", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    root = tmp_path / "tuning" / "quickstart" / "class"
    for method in ("famr", "ssd"):
        trials = [json.loads(line) for line in (root / method / "trials.jsonl").read_text().splitlines()]
        assert [t["number"] for t in trials] == [0, 1]
        assert all(t["eval_split"] == "val" and t["wall_s"] > 0 and set(t["params"]) for t in trials)
        assert all(t["state"] != OK or math.isfinite(t["objective"]) for t in trials)
        # Every trial ran on the declared forget sets, and its objective is their mean.
        for t in trials:
            sets = t["forget_sets"]
            assert [s["forget_set"] for s in sets] == ["forget.classes=[3]", "forget.classes=[8]"]
            assert all(s["eval_split"] == "val" for s in sets)
            if t["state"] == OK:
                assert t["objective"] == pytest.approx(sum(s["objective"] for s in sets) / 2)
    assert "famr " in proc.stdout and "ssd " in proc.stdout and "2 trials" in proc.stdout
    # A larger budget later runs only the missing trial; the same budget again runs none (SSD's study:
    # its trials take a second, FAMR's up to 16 s). Those two calls run famr-tune in this process (the
    # console script ran above); the famr-run study it starts is real, a fork of the session's server.
    use_cli_env(monkeypatch, tmp_path, **forked_famr_run())
    in_process = _tune_args(tmp_path, "--methods", "ssd", "--trials", "3")
    assert tune_cli.main(in_process) == 0, capfd.readouterr().err[-3000:]
    assert len((root / "ssd" / "trials.jsonl").read_text().splitlines()) == 3
    summary_file = root / "ssd" / "runs" / "optimization_results.yaml"
    # The study records the space it drew from: what a tuned file's provenance names.
    assert yaml.safe_load(summary_file.read_text())["space"] == {p.key: p.as_dict() for p in declared_space("quickstart", "ssd")}
    written = summary_file.stat().st_mtime_ns
    assert tune_cli.main(in_process) == 0
    assert len((root / "ssd" / "trials.jsonl").read_text().splitlines()) == 3
    assert summary_file.stat().st_mtime_ns == written, "a study whose budget is spent starts no famr-run"
    assert "ssd " in capfd.readouterr().out
    # The report the docs show: one summary row per method (with its best trial), then every trial.
    summary = report.summary_table(root)
    assert summary.splitlines()[2].startswith("| famr | D_f only | 2 |") and summary.splitlines()[3].startswith("| ssd | all of D | 3 |")
    assert len(report.trials_table(root / "ssd").splitlines()) == 4 + 3


def test_a_trial_record_names_its_run_dir_relative_to_the_search_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = trial_record(0, {"method.lr": 0.1}, OK, 1.0, "", None, 2.0, tmp_path / "outputs" / "tuning" / "runs" / "0")
    outside = trial_record(1, {"method.lr": 0.2}, OK, 1.0, "", None, 2.0, Path("/elsewhere/runs/1"))
    assert inside["run_dir"] == "outputs/tuning/runs/0" and outside["run_dir"] == "/elsewhere/runs/1"


def test_class_only_methods_have_no_sample_search(capsys):
    from famr_cli.tune.cli import defined_for

    assert defined_for(["famr", "unsir", "boundary_shrink", "jit"], "sample", named=False) == ["famr", "jit"]
    assert "unsir skipped (defined for class forgetting only)" in capsys.readouterr().out
    assert defined_for(["famr", "unsir"], "class", named=True) == ["famr", "unsir"]
    with pytest.raises(FamrError, match=r"^method=unsir is defined for class forgetting only, so it has no forget=sample search"):
        defined_for(["famr", "unsir"], "sample", named=True)


class _FakeLauncher:
    """Writes each job's results.json as famr-run would (Avg. Gap = |lr - 0.01| * 100), recording every batch;
    ``stop_after`` batches it raises KeyboardInterrupt instead, as a study killed mid-batch."""

    def __init__(self, root: Path, stop_after: int | None = None):
        self.root, self.stop_after, self.batches, self.dirs = root, stop_after, [], []

    def __call__(self, jobs: list[list[str]], index: int) -> list[Path]:
        if self.stop_after is not None and len(self.batches) == self.stop_after:
            raise KeyboardInterrupt
        self.batches.append(len(jobs))
        dirs = []
        for offset, overrides in enumerate(jobs):
            run_dir = self.root / str(index + offset)
            assert not run_dir.exists(), f"job dir {run_dir} reused"
            lr = float(dict(o.split("=", 1) for o in overrides)["method.lr"])
            metrics = {"original": {"retain_test_acc": 90.0}, "unlearned": {"retain_test_acc": 89.0}}
            run_dir.mkdir(parents=True)
            (run_dir / "results.json").write_text(
                json.dumps({"status": "ok", "metrics": metrics, "gaps": {"avg_gap": abs(lr - 0.01) * 100}})
            )
            dirs.append(run_dir)
        self.dirs += dirs
        return dirs


def _study_config(tmp_path: Path):
    choices = {"experiment": "quickstart", "forget": "class", "method": "famr"}
    return OmegaConf.create(
        {"objective": "gaps.avg_gap", "hydra": {"runtime": {"choices": choices}, "sweep": {"dir": str(tmp_path / "runs")}}}
    )


def test_parallel_trials_run_in_batches_count_distinct_settings_and_resume_without_running_anything_twice(tmp_path):
    from famr_cli.tune.study import read_trials
    from famr_cli.tune.sweeper import run_study

    space = {"method.lr": {"low": 1e-4, "high": 1e-1, "log": True}}
    sets = ["forget.classes=[3]", "forget.classes=[8]"]
    kwargs = dict(params=space, n_trials=5, parallel_trials=2, storage=str(tmp_path / "s.journal"), forget_sets=sets)
    killed = _FakeLauncher(tmp_path / "runs", stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        run_study(settings_from(kwargs), _study_config(tmp_path), [], killed)
    assert killed.batches == [4]  # two trials x two forget sets in one launcher call
    resumed = _FakeLauncher(tmp_path / "runs")
    summary = run_study(settings_from(kwargs), _study_config(tmp_path), [], resumed)
    # The killed batch's two trials are retried under new numbers: 5 distinct settings in all, the last batch of one.
    assert resumed.batches == [4, 2]
    trials = read_trials(tmp_path / "s.trials.jsonl")
    assert len(trials) == 5 and len({t["params"]["method.lr"] for t in trials}) == 5
    assert len(set(killed.dirs + resumed.dirs)) == len(killed.dirs) + len(resumed.dirs) == 10
    assert all([s["forget_set"] for s in t["forget_sets"]] == sets for t in trials)
    assert summary["best_value"] == min(t["objective"] for t in trials)
    with pytest.raises(FamrError, match="parallel_trials must be a whole number >= 1"):
        settings_from({"parallel_trials": 0})
