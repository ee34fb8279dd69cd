"""Named entries of one kind (methods, datasets, partition schemes), each registered next to its definition and
looked up by the name a config gives; an unknown name is a ConfigError that lists the known ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hpcfed.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, config_key: str):
        self.kind, self.config_key = kind, config_key  # e.g. "method", "method.name"
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """`@REGISTRY.register("name")` above a definition, or `REGISTRY.register("name", entry)` for entries made
        in a loop (e.g. one reader per dataset of a family)."""

        def add(item: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = item
            return item

        return add if entry is None else add(entry)

    def remove(self, name: str) -> None:
        """Forget an entry (tests that register a throw-away entry)."""
        del self._entries[name]

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(self.config_key, f"unknown {self.kind} {name!r}", f"choose one of {self.names()}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self):
        return self._entries.items()
