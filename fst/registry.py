"""One registry type for every extension point (strategies, backends, models, datasets, ...).

Keys are the Hydra config file stems (``configs/sparsity/fst.yaml`` <-> ``STRATEGIES["fst"]``),
so an unknown key fails with the list of valid ones instead of a bare ``KeyError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from omegaconf import OmegaConf

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping ``key -> object`` with a decorator to fill it and helpful lookup errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self.version = 0  # bumped by every (un)registration: memos keyed on it stay valid

    def register(self, name: str, obj: T | None = None):
        """``REG.register("key", obj)`` or ``@REG.register("key")`` on a function or class."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def deco(o: T) -> T:
            self._add(name, o)
            return o

        return deco

    def _add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        self.version += 1

    def unregister(self, name: str) -> T:
        """Remove and return ``name`` (plugins and tests that register temporarily)."""
        self.get(name)  # the helpful error for an unknown key
        self.version += 1
        return self._items.pop(name)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(sorted(self._items))}"
            ) from None

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def items(self):
        return self._items.items()

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self._items)})"


def build(registry: Registry[Callable[..., T]], name: str, **kwargs) -> T:
    """Look up ``name`` and call it with ``kwargs``."""
    return registry.get(name)(**kwargs)


def group_kwargs(node: Any, drop: Iterable[str] = ("name",)) -> dict[str, Any]:
    """A config group (``DictConfig`` or mapping) as builder keyword arguments: resolved, plain
    Python, the keys in ``drop`` removed (``name`` is the registry key, not an argument)."""
    d = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    for k in drop:
        d.pop(k, None)
    return d
