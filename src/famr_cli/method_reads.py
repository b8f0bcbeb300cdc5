"""The comparison's methods: their names in the field's order, and which training data each reads (the one
lookup behind every table's grouping and ``famr-run --help``'s method list).

Each method declares it (:attr:`famr_cli.method.UnlearningMethod.data_read`, a key of
:data:`famr_cli.method.DATA_READ`) and, when it is defined for some forget specs only, lists them
(``forget_specs``). Here a table row finds both by building its method: from the config its jobs ran
(results.json's ``config.method``) when there is one, since FAMR's answer depends on its options
(``retain_kd``), else from the option's own ``conf/method/<name>.yaml``. Tables then list Retrain first
(the reference) and every other method in :data:`DATA_READ`'s order, so that FAMR (D_f only) stands next
to the methods that read what it reads.

Building a method imports :mod:`famr_cli.method` (and torch), so that import waits until a lookup needs it.
Importing this module registers the ``famr_methods`` resolver that ``conf/config.yaml``'s help header
uses: famr-run imports it through its sweep-summary callback (:mod:`famr_cli.sweep.summary`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml
from omegaconf import OmegaConf

from famr_cli.config_schema import CONFIG_DIR
from famr_cli.famr_definition import DEFINITION

# The field's order and names; methods not listed follow in the order they appear. A table lists Retrain
# first and then groups the others by the data they read (below), each group in
# this order. A name here is only a label: a method runs in famr-reproduce once profiles.ALL_METHODS has it.
METHOD_NAMES = {
    "retrain": "Retrain",
    "famr": "FAMR",
    # Named variants of FAMR (ours): each its own search and row, never labelled plain FAMR.
    "famr_entropy": "FAMR-entropy",
    "famr_head": "FAMR-head",
    "famr_retain_kd": "FAMR+KD",
    "finetune": "FT",
    "grad_ascent": "GA",
    "random_label": "RL",
    "l1_sparse": "l1-sparse",
    "salun": "SalUn",
    "ssd": "SSD",
    "scrub": "SCRUB",
    "neggrad_plus": "NegGrad+",
    "bad_teacher": "Bad Teacher",
    "cf_k": "CF-k",
    "eu_k": "EU-k",
    "boundary_shrink": "Boundary Shrink",
    "boundary_expand": "Boundary Expanding",
    "unsir": "UNSIR",
    "fisher": "Fisher",
    "jit": "JiT",
}
REFERENCE = "retrain"  # its row comes first in every table: what the others are measured against
UNKNOWN = "?"
HELP_RESOLVER = "famr_methods"


def data_read_labels() -> Mapping[str, str]:
    """:data:`famr_cli.method.DATA_READ`: each data read's label, in the tables' order."""
    from famr_cli.method import DATA_READ  # torch: only once a table or --help needs it

    return DATA_READ


@dataclass(frozen=True)
class Reads:
    """What one method reads (a :data:`DATA_READ` key, None when it cannot be told) and the forget specs it is
    defined for (None: every one)."""

    data_read: str | None = None
    forget_specs: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return data_read_labels().get(self.data_read or "", UNKNOWN)

    def refusal(self, forget_spec: str | None) -> str | None:
        """Why the method has no row for ``forget=<forget_spec>`` (e.g. "defined for class forgetting only"), or None."""
        if forget_spec is None or self.forget_specs is None or forget_spec in self.forget_specs:
            return None
        return f"defined for {' or '.join(self.forget_specs)} forgetting only"


def refused_cell(reason: str) -> str:
    """How a table shows a method that is not defined for its forget spec."""
    return f"— ({reason})"


def method_options() -> list[str]:
    """Every ``method=<name>`` famr ships: one YAML each in conf/method/ (FAMR's named variants included)."""
    return sorted(p.stem for p in (CONFIG_DIR / "method").glob("*.yaml"))


@cache
def _option_file(option: str) -> dict[str, Any] | None:
    path = CONFIG_DIR / "method" / f"{option}.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def option_section(option: str) -> dict[str, Any] | None:
    """``conf/method/<option>.yaml`` as Hydra composes it (the options of its defaults list first, ``_self_`` where
    it is listed, else last); None when famr ships no such option."""
    raw = _option_file(option)
    if raw is None:
        return None
    own = {k: v for k, v in raw.items() if k != "defaults"}
    defaults = [str(d) for d in raw.get("defaults") or []]
    if "_self_" not in defaults:
        defaults.append("_self_")
    merged: dict[str, Any] = {}
    for item in defaults:
        merged.update(own if item == "_self_" else option_section(item) or {})
    return merged


def reads_of_section(section: Mapping[str, Any]) -> Reads:
    """Build the method of a ``method`` config section and ask it; an unknown method or a section it refuses
    (a key it lacks, a bad value) tells nothing."""
    from famr_cli.errors import FamrError
    from famr_cli.method import build_method  # torch: only once a table or --help needs it

    try:
        method = build_method(OmegaConf.create(dict(section)))
    except (FamrError, KeyError, TypeError, ValueError):
        return Reads()
    return Reads(str(method.data_read), method.forget_specs)


@cache
def reads_of_option(option: str) -> Reads:
    section = option_section(option)
    return Reads() if section is None else reads_of_section(section)


def _changed_famr(key: str) -> dict[str, Any] | None:
    """famr.yaml with the changes a ``famr[loss=entropy, retain_kd=0.5]`` row key names (famr_definition.row_key)."""
    if not (key.startswith("famr[") and key.endswith("]")):
        return None
    section = dict(option_section("famr") or {})
    for change in key[5:-1].split(", "):
        name, _, value = change.partition("=")
        if name in DEFINITION:
            section[name] = yaml.safe_load(value)
    return section


def reads_of_row(key: str, method_config: Mapping[str, Any] | None = None) -> Reads:
    """What the method of a table row reads: ``key`` is the row's method, named variant or changed FAMR
    (``famr[...]``); ``method_config`` the ``method`` section its jobs ran with, when known."""
    if method_config:
        reads = reads_of_section(method_config)
        if reads.data_read is not None:
            return reads
    changed = _changed_famr(key)
    return reads_of_section(changed) if changed is not None else reads_of_option(key)


def group_rank(key: str, reads: Reads) -> int:
    """Retrain first, then the groups in DATA_READ's order, rows whose data read is unknown last."""
    if key == REFERENCE:
        return 0
    order = list(data_read_labels())
    return 1 + (order.index(reads.data_read) if reads.data_read in order else len(order))


def grouped(keys: Iterable[str], reads_of: Callable[[str], Reads] = reads_of_row) -> list[str]:
    """``keys`` grouped by what they read; within a group they keep their order."""
    keys = list(keys)
    return sorted(keys, key=lambda k: (group_rank(k, reads_of(k)), keys.index(k)))


def field_order(names: Iterable[str]) -> list[str]:
    """The field's order (the tables' names, :data:`METHOD_NAMES`), then the others alphabetically."""
    known = list(METHOD_NAMES)
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def methods_help(width: int = 100) -> str:
    """``famr-run --help``'s method list: every shipped option under the data it reads, from the registry and conf/method/."""
    groups: dict[str, list[str]] = {label: [] for label in [*data_read_labels().values(), UNKNOWN]}
    for option in grouped(field_order(method_options()), reads_of_option):
        reads = reads_of_option(option)
        notes = ["the reference"] if option == REFERENCE else []
        if reads.forget_specs is not None:
            notes.append(f"{' or '.join(reads.forget_specs)} forgetting only")
        groups[reads.label].append(option + (f" ({'; '.join(notes)})" if notes else ""))
    groups = {label: names for label, names in groups.items() if names}
    lines = ["== Methods (method=<name>), by the training data they read (D_f: the forget set, D_r: the retained set) =="]
    column = max(len(label) for label in groups) + 4
    for label, names in groups.items():
        line = f"  {label:<{column - 2}}"
        for i, name in enumerate(names):  # lines break between names, never inside one
            entry = name + ("," if i < len(names) - 1 else "")
            if len(line) > column and len(line) + 1 + len(entry) > width:
                lines.append(line)
                line = " " * column
            line += ("" if len(line) == column else " ") + entry
        lines.append(line)
    return "\n".join(lines) + "\n"  # a blank line before Hydra's config groups


if not OmegaConf.has_resolver(HELP_RESOLVER):
    OmegaConf.register_new_resolver(HELP_RESOLVER, methods_help)
