"""Unlearning methods: one module and one ``conf/method/<name>.yaml`` each, registered here.

Adding a method: write ``famr_cli/method/<name>.py`` with a frozen dataclass of its options (a
:class:`MethodSettings`, one field per key) and a class ``UnlearningMethod[<its settings>]`` decorated
by ``@METHODS.register("<name>")``, and ``conf/method/<name>.yaml`` with ``name: <name>`` and every
option's default. Every module in this package is imported at start-up, so nothing else needs
editing; what several methods share lives in :mod:`famr_cli.method.shared`, never in a method module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin

import torch
import torch.nn as nn
from omegaconf import DictConfig

from famr_cli.batches import Augment, StreamedBatches, TensorBatches, make_batches
from famr_cli.dataset import ImageData
from famr_cli.errors import FamrError
from famr_cli.forget import ForgetSplit
from famr_cli.registry import Registry, import_submodules


@dataclass
class UnlearnContext:
    """Everything a method may use. Methods that must not see retained data simply ignore it."""

    data: ImageData
    split: ForgetSplit
    device: torch.device
    seed: int
    show_progress: bool = False
    # Sends a dict of curve points to the experiment logger (wandb or nothing).
    log_metrics: Callable[[dict[str, float]], None] = lambda metrics: None
    # Forward-pass autocast dtype (bf16 on CUDA by default), None for fp32.
    autocast: torch.dtype | None = None
    # The training recipe's augmentation, for methods that train on D_r as the original did.
    augment: Augment | None = None
    # The retrained gold standard (trained once, cached) and the seconds its training took, for
    # method=retrain; None when unavailable.
    retrain_reference: Callable[[], tuple[nn.Module, float]] | None = None

    def batches(
        self,
        indices: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        augment: bool = False,
        labels: torch.Tensor | None = None,
    ) -> TensorBatches | StreamedBatches:
        """Training-set rows ``indices`` in mini-batches on the device, seeded by ``seed``.

        ``augment`` applies the training recipe's augmentation; ``labels`` (one per training
        sample, e.g. random relabels) replaces the true labels.
        """
        return make_batches(
            self.data,
            self.data.x_train,
            self.data.y_train if labels is None else labels,
            batch_size=batch_size,
            device=self.device,
            shuffle=shuffle,
            augment=self.augment if augment else None,
            seed=self.seed,
            train=True,
            indices=indices,
        )


@dataclass
class UnlearnReport:
    """What a method reports beyond the model it edited in place."""

    epoch_losses: list[float] = field(default_factory=list)
    # Method-specific figures that belong in results.json's ``certificate`` section.
    certificate: dict[str, Any] = field(default_factory=dict)
    # The method's real cost when it was paid earlier (Retrain served from the cache): reported as
    # its unlearning time instead of the wall time of this call.
    recorded_s: float | None = None


SettingsT = TypeVar("SettingsT", bound="MethodSettings")

# What a method reads of the training data -> how the tables name the group, in the tables' order.
DATA_READ: Mapping[str, str] = {
    "forget": "D_f only",
    "forget+retain": "D_f + D_r",
    "retain": "D_r only",
    "all": "all of D",
}


@dataclass(frozen=True)
class MethodSettings:
    """A method's options, typed and checked once: a frozen dataclass with one field per key of its
    ``conf/method/<name>.yaml``.

    The fields have no defaults because the YAML holds them, and two copies of a default drift apart.
    Keys that are provenance or naming, not options (``name``, ``tuned_by``, a named variant's ``variant``),
    have no field and are ignored.
    """

    # Config keys that cannot be field names (``lambda`` is a Python keyword): field name -> key.
    KEYS: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_config(cls: type[SettingsT], cfg: DictConfig) -> SettingsT:
        """The settings of the ``method`` section ``cfg``: every field's key must be present, then :meth:`parse` checks them."""
        values = {}
        for f in fields(cls):
            key = cls.KEYS.get(f.name, f.name)
            if key not in cfg:
                name = cfg.get("name")
                raise FamrError(
                    f"method={name} needs method.{key}, which the config does not set; "
                    f"restore it (its default is in conf/method/{name}.yaml)."
                )
            values[f.name] = cfg[key]
        return cls.parse(values)

    @classmethod
    def parse(cls: type[SettingsT], values: dict[str, Any]) -> SettingsT:
        """Check the raw config values (by field name) and build the settings, or raise :class:`FamrError`.

        A subclass checks its values in a fixed order, the one whose first failure users see.
        """
        if values:
            raise NotImplementedError(f"{cls.__name__} declares options, so it must define parse() to check them")
        return cls()


class UnlearningMethod(ABC, Generic[SettingsT]):
    """Subclassed as ``UnlearningMethod[XSettings]``: ``self.settings`` is then the ``XSettings`` of
    its config section, built and checked when the method is constructed."""

    # Set from the subscript of the subclass's base; a method without options keeps the empty base.
    settings_type: ClassVar[type[MethodSettings]] = MethodSettings
    # The forget specs (``forget=<name>``) the method is defined for, None for every one: a run asking for
    # another is refused before anything trains, and the tables say why that row is empty.
    forget_specs: ClassVar[tuple[str, ...] | None] = None

    @property
    def data_read(self) -> str:
        """Which training data :meth:`unlearn` reads, one of :data:`DATA_READ`: the tables group rows by it,
        so that a method stands next to the methods that read what it reads (its fair peers)."""
        return "forget+retain"

    @property
    def reads_retained_data(self) -> bool:
        """Whether :meth:`unlearn` trains on (or scores) D_r: famr_cli.api then asks for retained data."""
        return self.data_read != "forget"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):
            if get_origin(base) is UnlearningMethod and isinstance(get_args(base)[0], type):
                cls.settings_type = get_args(base)[0]

    def __init__(self, cfg: DictConfig):
        # The raw section stays available for code that reads a key by name (e.g. ``cfg.name``).
        self.cfg = cfg
        self.settings: SettingsT = self.settings_type.from_config(cfg)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`FamrError` for bad options that :attr:`settings` cannot check alone, before any training starts."""

    def check_forget(self, forget_spec: str) -> None:
        """Raise :class:`FamrError` when the method is not defined for ``forget=<forget_spec>``."""
        if self.forget_specs is not None and forget_spec not in self.forget_specs:
            raise FamrError(
                f"method={self.cfg.name} is defined for forget={' or forget='.join(self.forget_specs)} only "
                f"(got forget={forget_spec}); pick another method or forget spec."
            )

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`FamrError` for options the backbone cannot honour (called on an untrained copy)."""

    @abstractmethod
    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> UnlearnReport:
        """Edit ``model`` (a copy of the original) in place so that it forgets ``ctx.split``."""

    def certify(self, model: nn.Module, original: nn.Module, ctx: UnlearnContext, settings: Any) -> dict[str, Any]:
        """Diagnostics of the finished unlearning for results.json's ``certificate`` (FAMR: stationarity).

        Called after the timed step, so what it costs never counts in the method's RTE; ``settings``
        is the evaluate section (:class:`famr_cli.evaluate.report.EvalSettings`), not the method's
        own :attr:`settings`.
        """
        return {}


METHODS: Registry[type[UnlearningMethod]] = Registry("method", "method=<name>")


def build_method(cfg: DictConfig) -> UnlearningMethod:
    return METHODS.get(cfg.name)(cfg)


import_submodules(__name__, __path__)
