"""Train once, forget many: the original model is cached by what determines it, and verified on load."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config
from famr_cli.logger import ExperimentLogger
from famr_cli.model_store import get_original_model, original_cache_key
from famr_cli.prepared import prepare


def _cfg(tmp_path, *extra):
    return compose_config([f"cache_dir={tmp_path}", "train.epochs=2", "progress=false", *extra])


@pytest.mark.slow
def test_key_depends_on_what_determines_the_model_only(tmp_path):
    base = original_cache_key(_cfg(tmp_path))
    assert original_cache_key(_cfg(tmp_path)) == base
    assert original_cache_key(_cfg(tmp_path, "seed=1")) != base
    assert original_cache_key(_cfg(tmp_path, "train.lr=0.01")) != base
    assert original_cache_key(_cfg(tmp_path, "backbone=vit_mini")) != base
    # Unlearning choices never force a retrain of the original model.
    assert original_cache_key(_cfg(tmp_path, "method.lam=5", "forget.classes=[3]")) == base


@pytest.mark.slow
def test_miss_trains_and_hit_loads_identical_weights_without_training(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    p = prepare(cfg)
    first = get_original_model(cfg, p, ExperimentLogger(), False)
    assert not first.hit

    def must_not_train(*args, **kwargs):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr("famr_cli.model_store.fit_classifier", must_not_train)
    second = get_original_model(cfg, p, ExperimentLogger(), False)
    assert second.hit and second.key == first.key
    assert second.recorded_train_s == pytest.approx(first.recorded_train_s)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_corrupt_entry_is_moved_aside_and_rebuilt(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    p = prepare(cfg)
    first = get_original_model(cfg, p, ExperimentLogger(), False)
    weights = next(tmp_path.glob("original/*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100] + b"\0" * 100)
    again = get_original_model(cfg, p, ExperimentLogger(), False)
    assert not again.hit
    assert "unusable" in caplog.text
    assert list(tmp_path.glob(f"original/{first.key}.bad-*")), "the corrupt entry should be kept aside for inspection"
    assert get_original_model(cfg, p, ExperimentLogger(), False).hit


@pytest.mark.slow
def test_original_predictions_are_computed_once_per_model(tmp_path, monkeypatch):
    from famr_cli.assessment import original_predictions

    cfg = _cfg(tmp_path)
    p = prepare(cfg)
    original = get_original_model(cfg, p, ExperimentLogger(), False)
    first = original_predictions(cfg, original, p)
    assert first.train.shape == p.data.y_train.shape and first.test.shape == p.data.y_test.shape

    def must_not_predict(*args, **kwargs):
        raise AssertionError("cached predictions must be reused")

    monkeypatch.setattr("famr_cli.assessment.predict_all", must_not_predict)
    second = original_predictions(cfg, original, p)
    assert torch.equal(first.train, second.train) and torch.equal(first.test, second.test)


@pytest.mark.slow
def test_precision_bf16_trains_on_cpu(tmp_path):
    cfg = _cfg(tmp_path, "precision=bf16", "train.epochs=1")
    p = prepare(cfg)
    assert p.autocast == torch.bfloat16
    original = get_original_model(cfg, p, ExperimentLogger(), False, p.autocast)
    assert all(t.dtype == torch.float32 for t in original.model.state_dict().values() if t.is_floating_point())
