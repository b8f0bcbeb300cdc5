"""original_weights=PATH: a model the user trained is unlearned as is, and is never unpickled."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import NO_ROBUSTNESS, compose_config, read_results, run_cli
from famr_cli.errors import FamrError
from famr_cli.prepared import prepare

FAST = ["train.epochs=2", "method.epochs=2", NO_ROBUSTNESS]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A famr run that trained its own original model: its weights are what a user would bring."""
    tmp = tmp_path_factory.mktemp("trained")
    proc = run_cli([*FAST, f"hydra.run.dir={tmp / 'run'}"], cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (weights,) = (tmp / "cache").glob("original/*/model.safetensors")
    return tmp, weights, read_results(tmp / "run")


@pytest.mark.parametrize("form", ["safetensors", "pt", "wrapped_ddp_pt"])
@pytest.mark.slow
def test_user_weights_are_unlearned_as_they_are(tmp_path, trained, form):
    _, weights, reference = trained
    state = load_file(str(weights))
    if form == "safetensors":
        path = tmp_path / "model.safetensors"
        save_file(state, str(path))
    elif form == "pt":
        path = tmp_path / "model.pt"
        torch.save(state, path)
    else:  # what DDP training scripts usually save
        path = tmp_path / "ckpt.pth"
        torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    proc = run_cli([*FAST, f"original_weights={path}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = read_results(tmp_path / "run")
    assert results["metrics"]["original"] == reference["metrics"]["original"]
    assert results["metrics"]["unlearned"] == reference["metrics"]["unlearned"]
    assert results["cache"]["original"]["user_weights"]["path"] == str(path)
    assert f"original_weights={path}" in proc.stdout
    assert not (tmp_path / "cache" / "original").exists(), "nothing is trained when the user brings the model"


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _prepare(tmp_path, path, *extra):
    return prepare(compose_config([f"cache_dir={tmp_path / 'cache'}", f"original_weights={path}", *extra]))


def test_a_pickle_that_would_run_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": _RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(FamrError, match=r"cannot be read as a state dict of tensors .*famr never unpickles") as err:
        _prepare(tmp_path, path)
    assert not marker.exists(), "unpickling ran the payload"
    assert str(err.value).endswith(".") and "\n" not in str(err.value)


@pytest.mark.slow
def test_truncated_missing_or_foreign_weights_get_one_sentence(tmp_path, trained):
    _, weights, _ = trained
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(FamrError, match=r"original_weights=.*cut.safetensors cannot be read"):
        _prepare(tmp_path, cut)
    with pytest.raises(FamrError, match=r"is not a file; give the path"):
        _prepare(tmp_path, tmp_path / "nope.pt")
    notes = tmp_path / "notes.pt"
    torch.save({"lr": 0.1, "epoch": 3}, notes)
    with pytest.raises(FamrError, match=r"holds no state dict of tensors"):
        _prepare(tmp_path, notes)
    with pytest.raises(FamrError, match=r"does not fit backbone=vit_mini .*missing keys"):
        _prepare(tmp_path, weights, "backbone=vit_mini")
