"""Source adapters by target kind: a target's `kind` in config.toml names one of these.

Every module in this package that defines a `Source` subclass with a `kind` is registered,
so adding a kind of source is adding a module.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from monitor.sources.base import Source, SourceError


def _discover() -> dict[str, type[Source]]:
    adapters: dict[str, type[Source]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Source) and cls is not Source and getattr(cls, "kind", None) \
                    and cls.__module__ == module.__name__:
                adapters[cls.kind] = cls
    return dict(sorted(adapters.items()))


ADAPTERS: dict[str, type[Source]] = _discover()

__all__ = ["ADAPTERS", "Source", "SourceError"]
