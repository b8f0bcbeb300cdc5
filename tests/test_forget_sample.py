"""forget=sample: seeded sample subsets, N per class, index files, validation, and one run end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import compose_config, read_results, run_cli
from famr_cli.dataset import load_dataset
from famr_cli.errors import FamrError
from famr_cli.evaluate.metrics import accuracy
from famr_cli.evaluate.model_eval import Predictions, score
from famr_cli.forget import make_forget_split
from famr_cli.model_store import original_cache_key
from famr_cli.pipeline import FORGET_INDICES_FILE, write_forget_indices
from famr_cli.prepared import prepare
from famr_cli.results import write_results

NUM_TRAIN, NUM_TEST = 1437, 360  # digits with the default stratified 20 % hold-out


def split_for(overrides: list[str], tmp_path):
    cfg = compose_config(["forget=sample", *overrides])
    data = load_dataset(cfg.dataset, tmp_path)
    return make_forget_split(cfg.forget, data), data


def test_fraction_split_partitions_the_training_set_and_keeps_the_whole_test_set(tmp_path):
    split, data = split_for([], tmp_path)
    assert len(data.y_train) == NUM_TRAIN and len(data.y_test) == NUM_TEST
    forget, retain = split.forget_train.tolist(), split.retain_train.tolist()
    assert len(forget) == round(0.1 * NUM_TRAIN) == 144
    assert forget == sorted(forget) and retain == sorted(retain)
    assert not set(forget) & set(retain)
    assert sorted(forget + retain) == list(range(NUM_TRAIN))
    assert split.forget_test.dtype == torch.long and split.forget_test.numel() == 0
    assert torch.equal(split.retain_test, torch.arange(NUM_TEST))
    assert split.forgotten_classes == []
    assert split.description == "1,437 × 10% = 144 samples (seed 0)"


@pytest.mark.slow
def test_draw_is_reproducible_for_a_seed_and_differs_across_seeds(tmp_path):
    a, _ = split_for(["forget.seed=3"], tmp_path)
    b, _ = split_for(["forget.seed=3"], tmp_path)
    c, _ = split_for(["forget.seed=4"], tmp_path)
    assert torch.equal(a.forget_train, b.forget_train)
    assert not torch.equal(a.forget_train, c.forget_train)
    assert len(a.forget_train) == len(c.forget_train)
    # forget.seed follows the run seed by default
    assert torch.equal(split_for(["seed=3"], tmp_path)[0].forget_train, a.forget_train)


@pytest.mark.slow
def test_train_test_split_and_original_model_do_not_depend_on_the_forget_seed(tmp_path):
    """The spec only picks among training indices: every forget sample was trained on (unlike SalUn's split)."""
    cfgs = [compose_config(["forget=sample", f"forget.seed={s}"]) for s in (1, 2)] + [compose_config(["forget=class"])]
    datas = [load_dataset(cfg.dataset, tmp_path) for cfg in cfgs]
    for other in datas[1:]:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(datas[0], name), getattr(other, name)), name
    # the original model's cache key (everything it is trained from) ignores the forget spec and its seed
    assert len({original_cache_key(cfg) for cfg in cfgs}) == 1
    s1, s2 = (make_forget_split(cfg.forget, data) for cfg, data in zip(cfgs[:2], datas[:2]))
    assert not torch.equal(s1.forget_train, s2.forget_train)
    for split in (s1, s2):
        assert int(split.forget_train.max()) < NUM_TRAIN and torch.equal(split.retain_test, torch.arange(NUM_TEST))


def test_per_class_draws_exactly_n_of_every_class_and_beats_fraction(tmp_path):
    split, data = split_for(["forget.per_class=7", "forget.fraction=0.5"], tmp_path)
    assert torch.bincount(data.y_train[split.forget_train], minlength=10).tolist() == [7] * 10
    assert len(split.retain_train) == NUM_TRAIN - 70
    assert split.description == "7 samples per class × 10 classes (seed 0)"
    again, _ = split_for(["forget.per_class=7"], tmp_path)
    other, _ = split_for(["forget.per_class=7", "forget.seed=1"], tmp_path)
    assert torch.equal(split.forget_train, again.forget_train)
    assert not torch.equal(split.forget_train, other.forget_train)


def test_text_index_file_with_comments_wins_over_per_class(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("# forget these\n\n5\n  3   # inline comment\n\n1436\n0\n")
    split, _ = split_for([f"forget.indices_file='{path}'", "forget.per_class=3"], tmp_path)
    assert split.forget_train.tolist() == [0, 3, 5, 1436]
    assert len(split.retain_train) == NUM_TRAIN - 4
    assert split.description == "4 samples from ids.txt"


def test_npy_index_file_round_trips(tmp_path):
    path = tmp_path / "ids.npy"
    np.save(path, np.array([9, 2, 700], dtype=np.int32))
    split, _ = split_for([f"forget.indices_file='{path}'"], tmp_path)
    assert split.forget_train.tolist() == [2, 9, 700]


def test_saved_forget_indices_reproduce_the_split(tmp_path):
    drawn, _ = split_for(["forget.seed=11"], tmp_path)
    path = write_forget_indices(tmp_path / "run", drawn)
    assert path.name == FORGET_INDICES_FILE
    assert len(path.read_text().splitlines()) == len(drawn.forget_train)
    reread, _ = split_for([f"forget.indices_file='{path}'"], tmp_path)
    assert torch.equal(reread.forget_train, drawn.forget_train)
    assert torch.equal(reread.retain_train, drawn.retain_train)


def _text(content: str):
    return _raw("ids.txt", content.encode())


def _raw(name: str, content: bytes):
    def write(d):
        (d / name).write_bytes(content)
        return d / name

    return write


def _npy(array: np.ndarray, allow_pickle: bool = False):
    def write(d):
        np.save(d / "ids.npy", array, allow_pickle=allow_pickle)
        return d / "ids.npy"

    return write


BAD = [
    (["forget.fraction=0"], None, r"forget\.fraction must lie strictly between 0 and 1 \(got 0\)"),
    (["forget.fraction=1.0"], None, r"forget\.fraction must lie strictly between 0 and 1"),
    (["forget.fraction=-0.1"], None, r"forget\.fraction must lie strictly between 0 and 1"),
    (["forget.fraction=abc"], None, r"forget\.fraction must lie strictly between 0 and 1"),
    (["forget.fraction=0.0001"], None, r"forget\.fraction=0\.0001 of 1,437 training samples rounds to an empty forget set"),
    (["forget.fraction=0.9999"], None, r"rounds to the whole training set"),
    (["forget.per_class=0"], None, r"forget\.per_class must be a whole number of at least 1"),
    (["forget.per_class=2.5"], None, r"forget\.per_class must be a whole number"),
    (["forget.per_class=1000"], None, r"forget\.per_class=1000 exceeds the smallest class, which has \d+ training samples"),
    (["forget.indices_file=does_not_exist.txt"], None, r"forget\.indices_file does_not_exist\.txt does not exist"),
    ([], _text("1\nabc\n"), r"line 2 is not an integer \('abc'\)"),
    ([], _text("1\n2.5\n"), r"line 2 is not an integer"),
    ([], _text("3\n1437\n"), r"index 1437 out of range \(1 in all\); training indices run from 0 to 1436"),
    ([], _text("-1\n"), r"index -1 out of range"),
    ([], _text("4\n8\n4\n"), r"lists index 4 more than once"),
    ([], _text("# nothing here\n\n"), r"lists no indices, so the forget set would be empty"),
    ([], _text("\n".join(map(str, range(NUM_TRAIN)))), r"lists all 1,437 training samples, which leaves nothing to retain"),
    ([], _raw("ids.txt", b"\xff\xfe\x00bad"), r"cannot be read"),
    ([], _npy(np.array([1.0, 2.0])), r"holds a float64 array of shape \(2,\); save a 1-D integer array"),
    ([], _npy(np.array([[1, 2], [3, 4]])), r"save a 1-D integer array"),
    ([], _npy(np.array([1, 2], dtype=object), allow_pickle=True), r"is not a readable \.npy array"),
    ([], _raw("ids.npy", b"not an npy file"), r"is not a readable \.npy array"),
]


@pytest.mark.parametrize("overrides, make_file, message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_sample_specs_are_rejected_with_one_sentence(overrides, make_file, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative index-file paths start from the working directory
    if make_file is not None:
        overrides = [*overrides, f"forget.indices_file='{make_file(tmp_path)}'"]
    cfg = compose_config(["forget=sample", *overrides])
    with pytest.raises(FamrError, match=message) as info:
        make_forget_split(cfg.forget, load_dataset(cfg.dataset, tmp_path))
    text = str(info.value)
    assert text.startswith("forget.") and text.endswith(".") and "\n" not in text


def test_bad_spec_fails_in_prepare_before_any_training(tmp_path):
    cfg = compose_config(["forget=sample", "forget.fraction=2", "device=cpu", f"cache_dir={tmp_path}"])
    with pytest.raises(FamrError, match="forget.fraction"):
        prepare(cfg)  # validation and data loading only; training starts after prepare
    assert not any(tmp_path.rglob("model.safetensors"))


def test_score_reports_no_forget_test_figure_and_retain_test_on_the_full_test_set(tmp_path):
    split, data = split_for([], tmp_path)
    test_pred = data.y_test.clone()
    test_pred[::4] = (test_pred[::4] + 1) % 10  # a quarter wrong
    metrics = score(Predictions(train=data.y_train.clone(), test=test_pred), data, split)
    assert math.isnan(metrics["forget_test_acc"])
    assert metrics["retain_test_acc"] == pytest.approx(metrics["test_acc"]) == pytest.approx(accuracy(test_pred, data.y_test))
    assert metrics["retain_test_acc"] == pytest.approx(75.0)
    assert metrics["forget_train_acc"] == metrics["retain_train_acc"] == 100.0
    saved = json.loads(write_results(tmp_path / "out", {"metrics": metrics}).read_text())["metrics"]
    assert saved["forget_test_acc"] is None and saved["retain_test_acc"] == pytest.approx(75.0)


@pytest.mark.slow
def test_cli_run_writes_forget_indices_and_results(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        ["forget=sample", "forget.fraction=0.05", "train.epochs=1", "method.epochs=2", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (run_dir / FORGET_INDICES_FILE).read_text().splitlines()
    indices = [int(line) for line in lines]
    assert len(indices) == round(0.05 * NUM_TRAIN) == len(set(indices))
    assert indices == sorted(indices) and 0 <= indices[0] and indices[-1] < NUM_TRAIN
    results = read_results(run_dir)
    assert results["status"] == "ok"
    assert results["forget"]["num_forget_train"] == len(indices)
    assert results["forget"]["indices_file"] == FORGET_INDICES_FILE
    assert results["forget"]["classes"] == []
    assert results["forget"]["description"] == "1,437 × 5% = 72 samples (seed 0)"
    for model in ("original", "unlearned"):
        assert results["metrics"][model]["forget_test_acc"] is None
        assert results["metrics"][model]["retain_test_acc"] == pytest.approx(results["metrics"][model]["test_acc"])
    # The robustness checks' sample analogue: relearn on k forgotten samples per class, score on the rest of D_f.
    rob = results["robustness"]
    assert rob["kind"] == "sample" and "D_f" in rob["sets"]["pool"]
    assert rob["sets"]["sizes"]["pool"] + rob["sets"]["sizes"]["forget"] == len(indices)
    assert 0.0 <= rob["unlearned"]["relearn"]["full_k5_forget_acc"] <= 100.0
    assert rob["vs_retrain"] == {} and "retrain" not in rob  # no reference in this run: nothing to take the excess over
