"""Name → object registries, so that anything is reachable from a config by its name (as timm's ``create_model``)."""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from cxrdistill.errors import CxrError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories. ``@REG.register("name")`` adds one; ``REG.create("name", **kw)`` builds it."""

    def __init__(self, kind: str, plugins: tuple[str, ...] = ()):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._plugins = plugins  # modules that register entries here; imported on first lookup, not at start-up
        self._loaded = not plugins

    def _load_plugins(self) -> None:
        if not self._loaded:
            import importlib

            self._loaded = True
            for mod in self._plugins:
                importlib.import_module(mod)

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            key = name or obj.__name__
            if key in self._items and self._items[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._items:
            self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise CxrError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items)) or '(none registered)'}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self._load_plugins()
        return name in self._items

    def __iter__(self):
        return iter(self.names())
