"""One small registry type, instantiated once per extension point (methods, datasets, forget specs,
backbones, loggers, robustness checks), and the one way their packages find their entries.

Every extension point follows the same pattern: an abstract base class in the package's
``__init__.py``, a :class:`Registry` of its subclasses, and, on the package's last line,
``import_submodules(__name__, __path__)``. An entry is then one module holding one subclass
decorated with ``@REGISTRY.register("<name>")``, plus one YAML file under ``conf/<group>/`` whose
``name`` (``builder`` for backbones) is that name; no list anywhere needs editing.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from famr_cli.errors import FamrError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, config_key: str, base: type | None = None):
        self.kind = kind
        # The config key users set to choose an entry, so errors can name the exact override.
        self.config_key = config_key
        # When set, only concrete subclasses of it may register: a missing method fails at import,
        # not halfway through a run that first needs it.
        self.base = base
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            if self.base is not None:
                if not (isinstance(entry, type) and issubclass(entry, self.base)):
                    raise TypeError(f"{self.kind} '{name}' must be a subclass of {self.base.__name__}, not {entry!r}")
                if inspect.isabstract(entry):
                    missing = ", ".join(sorted(entry.__abstractmethods__))
                    raise TypeError(f"{self.kind} '{name}' ({entry.__name__}) does not implement {missing}")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise FamrError(f"Unknown {self.kind} '{name}': set {self.config_key} to one of {known}.")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def import_submodules(package_name: str, package_path: Iterable[str], skip: Iterable[str] = ()) -> None:
    """Import every module of a package except ``skip``, so each one's ``@register`` runs.

    Called as ``import_submodules(__name__, __path__)`` on the last line of an extension package's
    ``__init__.py``, after the base class and registry the modules import. ``skip`` names modules
    that must not be imported eagerly (e.g. ones that import the package's heavy users back).
    """
    skipped = set(skip)
    for module in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        if module.name not in skipped:
            importlib.import_module(f"{package_name}.{module.name}")
