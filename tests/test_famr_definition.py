"""FAMR as defined, its named variants, and rows that never call anything else FAMR."""

from __future__ import annotations

from conftest import compose_config
from famr_cli.famr_definition import DEFINITION, departures, row_key, row_label
from famr_cli.method_reads import METHOD_NAMES
from famr_cli.reproduce.tables import build_table
from famr_cli.sweep.jobs import Job


def test_method_famr_is_famr_as_defined_in_every_experiment():
    for experiment in ("quickstart", "cifar10_cpu", "cifar10_resnet18", "cifar10_vit"):
        method = compose_config([f"experiment={experiment}", "method=famr"]).method
        assert departures(method) == [], experiment
        assert {k: method[k] for k in DEFINITION} == DEFINITION
        assert method.variant is None


def test_each_named_variant_changes_one_structural_option_and_carries_its_own_name():
    expected = {"famr_entropy": ["loss=entropy"], "famr_head": ["head_only=True"], "famr_retain_kd": ["retain_kd=1.0"]}
    for variant, changed in expected.items():
        method = compose_config([f"method={variant}"]).method
        assert method.name == "famr" and method.variant == variant
        assert departures(method) == changed
        assert row_key(method, "famr") == variant and row_label(variant, METHOD_NAMES) not in ("FAMR", variant)


def test_a_famr_run_that_changes_the_definition_is_never_labelled_famr():
    method = compose_config(["method=famr", "method.loss=entropy", "method.trainable=[layer4,fc]"]).method
    key = row_key(method, "famr")
    assert key == "famr[loss=entropy, trainable=[layer4,fc]]"
    assert row_label(key, METHOD_NAMES) == "FAMR (loss=entropy, trainable=[layer4,fc])"


def _job(tmp_path, name, method_cfg, seed=0):
    results = {"status": "ok", "method": "famr", "config": {"method": method_cfg, "seed": seed}, "metrics": {"unlearned": {"UA": 1.0}}}
    return Job(dir=tmp_path / name, overrides={"method": "famr", "seed": str(seed)}, results=results)


def test_the_table_puts_a_changed_famr_in_its_own_row(tmp_path):
    defined = dict(DEFINITION, name="famr")
    changed = dict(DEFINITION, name="famr", loss="entropy")
    table = build_table([_job(tmp_path, "a", defined), _job(tmp_path, "b", changed)], "e")
    assert [row.label for row in table.rows] == ["FAMR", "FAMR (loss=entropy)"]
