"""Name → object registries, so that anything is reachable from a config by its name (as timm's ``create_model``)."""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from cxrdistill.errors import CxrError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories. ``@REG.register("name")`` adds one; ``REG.create("name", **kw)`` builds it."""

    def __init__(self, kind: str, plugins: tuple[str, ...] = (), discover: str | None = None):
        """``plugins``: modules of the registry's own package that register entries; ``discover``: a module name
        (e.g. ``"methods"``) that any top-level package of cxrdistill may have to register entries here, so that a
        low layer's registry reaches the entries of higher layers without naming them. Both are imported on the
        first lookup of a name not registered yet, not at start-up."""
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._plugins = plugins
        self._discover = discover
        self._loaded = not (plugins or discover)

    def _load_plugins(self) -> None:
        if not self._loaded:
            import importlib

            self._loaded = True
            for mod in self._plugins + discovered_modules(self._discover):
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


def discovered_modules(name: str | None) -> tuple[str, ...]:
    """``cxrdistill.<package>.<name>`` for every top-level package of cxrdistill that has a module or subpackage
    called ``name`` (found on disk, without importing anything), in alphabetical order."""
    if not name:
        return ()
    import pkgutil
    from pathlib import Path

    base = Path(__file__).parent  # the cxrdistill package directory
    return tuple(f"cxrdistill.{pkg.name}.{name}" for pkg in sorted(pkgutil.iter_modules([str(base)]), key=lambda m: m.name)
                 if pkg.ispkg and any(m.name == name for m in pkgutil.iter_modules([str(base / pkg.name)])))
