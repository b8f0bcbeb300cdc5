"""dataset.train_per_class / val_per_class / selection_seed and evaluate.split=val."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config, read_results, run_cli
from famr_cli.dataset import load_dataset
from famr_cli.dataset.subsets import RowSelection, select_rows
from famr_cli.errors import FamrError
from famr_cli.model_store import original_cache_key


def _digits(tmp_path, **keys):
    cfg = compose_config(["dataset=digits", *[f"dataset.{k}={v}" for k, v in keys.items()]])
    return load_dataset(cfg.dataset, tmp_path)


def test_validation_rows_are_held_out_class_balanced_and_never_trained_on(tmp_path):
    full = _digits(tmp_path)
    data = _digits(tmp_path, train_per_class=50, val_per_class=20)
    assert torch.bincount(data.y_train).tolist() == [50] * 10
    assert torch.bincount(data.y_val).tolist() == [20] * 10
    rows = {tuple(x.flatten().tolist()) for x in full.x_train}
    train = {tuple(x.flatten().tolist()) for x in data.x_train}
    val = {tuple(x.flatten().tolist()) for x in data.x_val}
    assert train <= rows and val <= rows and not (train & val)
    assert torch.equal(data.x_test, full.x_test)  # the test split is untouched


def test_the_selection_depends_on_selection_seed_alone(tmp_path):
    a = _digits(tmp_path, val_per_class=10)
    b = select_rows(_digits(tmp_path), RowSelection(None, 10, 0))
    c = _digits(tmp_path, val_per_class=10, selection_seed=1)
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)
    assert len(a.y_train) == 1437 - 100


def test_default_selection_keeps_earlier_cache_keys():
    cfg = compose_config([])
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in ("train_per_class", "val_per_class", "selection_seed"):
        del plain["dataset"][key]
    assert original_cache_key(cfg) == original_cache_key(OmegaConf.create(plain))
    assert original_cache_key(cfg) != original_cache_key(compose_config(["dataset.val_per_class=10"]))


def test_too_many_rows_per_class_is_one_sentence(tmp_path):
    with pytest.raises(FamrError, match=r"fewer than dataset.val_per_class \+ dataset.train_per_class = 1000; lower them\.$"):
        _digits(tmp_path, train_per_class=900, val_per_class=100)


@pytest.mark.slow
def test_scoring_on_the_validation_split_end_to_end(tmp_path):
    base = ["train.epochs=1", "method.epochs=5", "dataset.val_per_class=15"]
    missing = run_cli(["train.epochs=1", "evaluate.split=val"], tmp_path)
    assert missing.returncode == 2 and "set dataset.val_per_class" in missing.stdout + missing.stderr
    proc = run_cli([*base, "evaluate.split=val", f"hydra.run.dir={tmp_path / 'val'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = read_results(tmp_path / "val")
    assert results["dataset"]["eval_split"] == "val"
    assert (results["dataset"]["num_train"], results["dataset"]["num_test"]) == (1437 - 150, 150)
    test = run_cli([*base, f"hydra.run.dir={tmp_path / 'test'}"], tmp_path)
    assert test.returncode == 0
    tested = read_results(tmp_path / "test")
    assert tested["dataset"]["num_test"] == 360 and tested["cache"]["original"]["hit"]  # same original, other split
    assert tested["metrics"]["original"]["test_acc"] != results["metrics"]["original"]["test_acc"]
