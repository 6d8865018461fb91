"""A row read again after its keys were loaded: what asyncpg.Record offers readers, over opened values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class OpenedRecord:
    """Indexable by name and position, iterates its values, `keys()`/`values()`/`items()`/`get()` like a Record."""

    __slots__ = ("_index", "_names", "_values")

    def __init__(self, names: list[str], values: list[Any]) -> None:
        self._names = names
        self._values = values
        self._index = {name: i for i, name in enumerate(names)}

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        i = self._index.get(key)
        return default if i is None else self._values[i]

    def keys(self) -> Iterator[str]:
        return iter(self._names)

    def values(self) -> Iterator[Any]:
        return iter(self._values)

    def items(self) -> Iterator[tuple[str, Any]]:
        return zip(self._names, self._values, strict=True)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return "<OpenedRecord " + " ".join(f"{k}={v!r}" for k, v in self.items()) + ">"
