"""Source adapters by target kind: a target's `kind` in config.toml names one of these.

Every module in this package that defines a `Source` subclass with a `kind` is registered,
so adding a kind of source is adding a module. The adapters (and the HTML parsers and HTTP
client they import) load on first use of `ADAPTERS`, `Source` or `SourceError`, so
importing this package costs nothing until then.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.sources.base import Source, SourceError

    ADAPTERS: dict[str, type[Source]]


def _discover() -> dict[str, type[Source]]:
    from monitor.sources.base import Source

    adapters: dict[str, type[Source]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Source) and cls is not Source and getattr(cls, "kind", None) \
                    and cls.__module__ == module.__name__:
                adapters[cls.kind] = cls
    return dict(sorted(adapters.items()))


def __getattr__(name: str) -> Any:
    if name == "ADAPTERS":
        adapters = _discover()
        globals()["ADAPTERS"] = adapters  # discovered once; later reads find the global
        return adapters
    if name in ("Source", "SourceError"):
        from monitor.sources import base
        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ADAPTERS", "Source", "SourceError"]
