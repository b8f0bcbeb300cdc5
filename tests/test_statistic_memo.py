"""A study's trials share the statistics their searched values do not change, with bit-identical results."""

from __future__ import annotations

import copy

import pytest
import torch

from famr_cli import statistic_memo
from famr_cli.augment import Augment
from famr_cli.method import METHODS, UnlearnContext
from tiny_problem import CPU, method_from_yaml, tiny_problem


def _unlearned(name: str, model, data, split, seed: int = 0, **overrides) -> dict[str, torch.Tensor]:
    edited = copy.deepcopy(model)
    ctx = UnlearnContext(data, split, CPU, seed=seed, augment=Augment(crop_padding=1, hflip=True))
    method_from_yaml(METHODS.get(name), name, **overrides).unlearn(edited, ctx)
    return {k: v.clone() for k, v in edited.state_dict().items()}


# Each method with two values of what its search varies, and one option that does enter the statistic.
CASES = [
    ("fisher", [{"alpha": 1e-6}, {"alpha": 1e-4}], {"fisher_batch_size": 4}),
    ("ssd", [{"alpha": 1.0, "lambda": 1.0}, {"alpha": 0.5, "lambda": 2.0}], {"fisher_batch_size": 4}),
]


@pytest.fixture
def memo_on(monkeypatch):
    """What famr-tune sets for its studies."""
    monkeypatch.setenv(statistic_memo.ENV_SWITCH, "1")


@pytest.mark.parametrize(("name", "searched", "statistic_option"), CASES, ids=[c[0] for c in CASES])
def test_a_second_trial_reuses_the_statistic_and_gets_what_a_fresh_process_would(memo_on, name, searched, statistic_option):
    data, split, model = tiny_problem(fit_steps=20)
    first, second = ({**statistic_option, **values} for values in searched)
    statistic_memo.clear()
    fresh_second = _unlearned(name, model, data, split, **second)  # a process that ran only the second trial
    statistic_memo.clear()
    _unlearned(name, model, data, split, **first)
    computed = statistic_memo.computed
    reused_second = _unlearned(name, model, data, split, **second)
    assert statistic_memo.computed == computed, "the second trial recomputed a statistic its searched values do not change"
    assert fresh_second.keys() == reused_second.keys()
    for key in fresh_second:
        assert torch.equal(fresh_second[key], reused_second[key]), key


@pytest.mark.parametrize(("name", "searched", "statistic_option"), CASES, ids=[c[0] for c in CASES])
def test_what_the_statistic_depends_on_is_never_served_from_the_memo(memo_on, name, searched, statistic_option):
    data, split, model = tiny_problem(fit_steps=20)
    values = {**statistic_option, **searched[0]}
    statistic_memo.clear()
    _unlearned(name, model, data, split, **values)
    computed = statistic_memo.computed
    other_model = tiny_problem(fit_steps=21)[2]
    _unlearned(name, other_model, data, split, **values)  # other weights
    assert statistic_memo.computed > computed
    computed = statistic_memo.computed
    _unlearned(name, model, data, split, **{**values, "fisher_batch_size": 2})  # another batching of the statistic
    assert statistic_memo.computed > computed
    computed = statistic_memo.computed
    _unlearned(name, model, data, split, seed=1, **values)  # another seed (the Fisher's augmentation draws)
    assert statistic_memo.computed > computed


@pytest.mark.parametrize(("name", "searched", "statistic_option"), CASES, ids=[c[0] for c in CASES])
def test_outside_famr_tune_every_run_pays_for_its_statistic(monkeypatch, name, searched, statistic_option):
    """A famr-run sweep or a table is one process too: its RTE must hold the whole pass in every job."""
    monkeypatch.delenv(statistic_memo.ENV_SWITCH, raising=False)
    data, split, model = tiny_problem(fit_steps=20)
    statistic_memo.clear()
    before = statistic_memo.computed
    for values in searched:
        _unlearned(name, model, data, split, **statistic_option, **values)
    assert statistic_memo.computed - before == len(searched) * (2 if name == "ssd" else 1)
    assert not statistic_memo._entries


def test_the_memo_keeps_only_the_last_few_statistics(memo_on):
    data, split, model = tiny_problem()
    statistic_memo.clear()
    ctx = UnlearnContext(data, split, CPU, seed=0)
    for size in range(statistic_memo.MEMO_SIZE + 2):
        statistic_memo.memoised("probe", (size,), model, ctx, lambda: [torch.zeros(1)])
    assert len(statistic_memo._entries) == statistic_memo.MEMO_SIZE
    statistic_memo.clear()
