"""The CIFAR-10 experiments run the whole pipeline; the shared real copy loads with the right shape."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import read_results, run_cli
from test_cifar10 import make_cifar_folder

SHARED_CIFAR = Path(os.environ.get("FAMR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "cifar10-jpeg.tar.gz"


@pytest.mark.parametrize("experiment", ["cifar10_cpu", "cifar10_resnet18", "cifar10_vit"])
@pytest.mark.slow
def test_cifar10_experiments_run_end_to_end_on_a_tiny_folder(experiment, tmp_path):
    make_cifar_folder(tmp_path / "cifar")  # 3 training images per class
    # cifar10_cpu keeps 3,000 training images per class and holds 500 out: here 2 and 1, the same path in small.
    selection = ["dataset.train_per_class=2", "dataset.val_per_class=1"] if experiment == "cifar10_cpu" else []
    proc = run_cli(
        [
            f"experiment={experiment}",
            *selection,
            f"dataset.root={tmp_path / 'cifar'}",
            "train.epochs=1",
            "train.batch_size=16",
            "method.epochs=1",
            "eval_batch_size=16",
            # Every robustness check runs on each backbone, the relearning attack for one step, not 10: at 10 they
            # took 8.2 s of ResNet-18's run and 6.0 s of ViT-Tiny's, at 1 step 1.6 s and 1.2 s (2 Intel Xeon cores).
            "evaluate.robustness.relearn.steps=1",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = read_results(tmp_path / "run")
    assert results["status"] == "ok"
    assert results["dataset"]["class_names"][0] == "airplane"
    assert results["forget"]["classes"] == [0]
    assert results["config"]["backbone"]["name"] in {"resnet_narrow", "resnet18", "vit_tiny"}
    if experiment == "cifar10_cpu":
        assert results["dataset"]["num_train"] == 20 and results["config"]["dataset"]["val_per_class"] == 1


@pytest.mark.slow
def test_missing_cifar10_stops_with_one_sentence_naming_both_sources(tmp_path):
    proc = run_cli(["experiment=cifar10_cpu", f"dataset.root={tmp_path / 'nowhere'}"], cwd=tmp_path)
    assert proc.returncode == 2
    output = proc.stdout + proc.stderr
    assert "does not exist" in output and "dataset.root" in output and "download" in output
    assert "Traceback" not in output


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason=f"shared CIFAR-10 copy not found at {SHARED_CIFAR}")
@pytest.mark.slow
def test_shared_cifar10_copy_decodes_to_the_full_dataset(tmp_path):
    from conftest import compose_config
    from famr_cli.dataset import load_dataset

    cfg = compose_config(["dataset=cifar10", f"dataset.root={SHARED_CIFAR}"])
    data = load_dataset(cfg.dataset, tmp_path)
    assert data.x_train.shape == (50000, 3, 32, 32) and data.x_test.shape == (10000, 3, 32, 32)
    assert data.y_train.bincount().tolist() == [5000] * 10 and data.y_test.bincount().tolist() == [1000] * 10
    assert data.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    again = load_dataset(cfg.dataset, tmp_path)
    assert again.provenance["decode_cache"]["hit"] is True
