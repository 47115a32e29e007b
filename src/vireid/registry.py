"""One tiny registry used for datasets, backbones, modules, heads, losses and methods.

A registry maps a name (as written in a config file) to a class or factory::

    DATASETS = Registry("dataset")

    @DATASETS.register("sysu-mm01")
    class SYSUMM01: ...

    DATASETS.get("sysu-mm01")      # -> the class
    DATASETS.build("sysu-mm01", root="...")

Unknown names raise :class:`KeyError` with one sentence listing what is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table with a decorator for registration."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"cannot register an unnamed {self.kind}; pass a name")
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        return factory(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
