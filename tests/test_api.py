"""The Python API: docs/api.md's example runs as written and forgets; bad options fail like famr-run's."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from famr_cli import api
from famr_cli.errors import FamrError

REPO = Path(__file__).resolve().parents[1]
API_PAGE = REPO / "docs" / "api.md"


def _example_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", API_PAGE.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/api.md holds one runnable example"
    return blocks[0]


@pytest.fixture(scope="module")
def example() -> tuple[dict, str]:
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_example_code(), str(API_PAGE), "exec"), namespace)
    return namespace, out.getvalue()


def test_the_documented_example_forgets_the_class_and_moves_toward_the_retrained_model(example):
    ns, printed = example
    before = ns["before"]
    assert before["scores"]["forget_test_acc"] > 90
    for label, (result, report) in ns["runs"].items():
        assert report["scores"]["forget_test_acc"] < 40, label
        assert report["gaps"]["avg_gap"] < before["gaps"]["avg_gap"], label
        assert set(report["gaps"]["avg_gap_over"]) == {"UA", "RA", "TA", "MIA"} and result.certificate["param_dist"] > 0
    kept, kept_report = ns["runs"]["FAMR + retain_kd=3 (ours)"]
    assert kept_report["scores"]["TA"] > before["scores"]["TA"] - 3
    assert kept_report["gaps"]["avg_gap"] < before["gaps"]["avg_gap"] / 4
    assert "forget-test" in printed and "stationarity" in printed


def test_unlearn_leaves_the_given_model_untouched(example):
    ns, _ = example
    trained = ns["train"](ns["train_x"], ns["train_y"])
    snapshot = [p.detach().clone() for p in trained.parameters()]
    result = api.unlearn(trained, ns["data"], method="grad_ascent", lr=1e-3, epochs=1, certificate=False)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, trained.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(snapshot, result.model.parameters()))


def _tiny_data(retain: bool = True) -> api.UnlearningData:
    x, y = torch.randn(40, 1, 4, 4), torch.arange(40) % 4
    forget = y == 0
    return api.UnlearningData(forget=(x[forget], y[forget]), retain=(x[~forget], y[~forget]) if retain else None, test=(x, y))


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 4))


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        ({"lamm": 5}, "method.lamm is not a setting of method=famr; check its spelling (valid keys:"),
        ({"lam": -1}, "method.lam must be >= 0 (got -1)"),
    ],
)
def test_bad_options_fail_with_famr_runs_sentence(options, sentence):
    with pytest.raises(FamrError, match=re.escape(sentence)):
        api.unlearn(_tiny_model(), _tiny_data(), **options)


def test_an_unknown_method_and_retrain_are_refused_with_the_fix():
    with pytest.raises(FamrError, match=re.escape("Unknown method 'famrr': set method=<name> to one of")):
        api.unlearn(_tiny_model(), _tiny_data(), method="famrr")
    with pytest.raises(FamrError, match="pass it as evaluate"):
        api.unlearn(_tiny_model(), _tiny_data(), method="retrain")


def test_a_named_variant_of_famr_runs_with_its_own_values():
    method = api.build_method("famr_entropy", lam=3.0)
    assert (type(method).__name__, method.settings.loss, method.settings.lam) == ("FAMR", "entropy", 3.0)
    assert api.build_method("famr").settings.loss == "kl_uniform"
    # FAMR+KD reads a retained buffer, so it asks for retained data like the retain-based baselines.
    with pytest.raises(FamrError, match="pass retain="):
        api.unlearn(_tiny_model(), _tiny_data(retain=False), method="famr_retain_kd", epochs=1)


def test_a_method_that_trains_on_retained_data_asks_for_it_and_famr_does_not():
    with pytest.raises(FamrError, match="pass retain="):
        api.unlearn(_tiny_model(), _tiny_data(retain=False), method="finetune")
    result = api.unlearn(_tiny_model(), _tiny_data(retain=False), epochs=2)
    assert len(result.epoch_losses) == 2


def test_class_forgetting_is_read_from_the_labels_and_sample_forgetting_is_asked_for():
    assert _tiny_data().forgotten_classes == [0]
    x, y = torch.randn(8, 1, 4, 4), torch.arange(8) % 2
    sample = api.UnlearningData(forget=(x[:2], y[:2]), retain=(x[2:], y[2:]), test=(x, y))
    assert sample.forgotten_classes == [] and len(sample.split().forget_test) == 0


@pytest.mark.parametrize(
    ("forget", "fragment"),
    [((torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.zeros(3)), "must be a float N x C x H x W tensor"), ([], "holds no images")],
)
def test_bad_data_is_one_sentence(forget, fragment):
    with pytest.raises(FamrError, match=fragment):
        api.UnlearningData(forget=forget)
