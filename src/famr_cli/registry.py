"""One small registry type, instantiated once per extension point (datasets, backbones, ...)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from famr_cli.errors import FamrError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, config_key: str):
        self.kind = kind
        # The config key users set to choose an entry, so errors can name the exact override.
        self.config_key = config_key
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
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
