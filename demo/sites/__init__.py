"""Pluggable demo-world sites: every module here that defines `SITE` (a `Site` subclass)
is mounted by the world under its prefix. Adding a source to the demo world is adding a
module; nothing else needs to change."""

from __future__ import annotations

import importlib
import pkgutil

from demo.web import Site


def site_classes() -> list[type[Site]]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        site = getattr(module, "SITE", None)
        if site is not None:
            found.append(site)
    return found
