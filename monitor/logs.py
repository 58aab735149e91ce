"""Structured logging: JSON lines for machines, readable lines on a terminal.

Context (target, run id) is bound through contextvars, so every line a crawl writes, from
any module, says which target and run it belongs to. Tracebacks are rendered without local
variables, which could hold secrets. Standard-library loggers (APScheduler, httpx) are
routed through the same renderer so the output stays one format.

structlog (with the asyncio it imports) costs a command ~35 ms to load, and the reading
commands never log through it. So it is not imported here: it is configured the moment
something imports it (the crawler, the fetcher, the adapters all do, at module level, before
they can log), and the stdlib handler builds its structlog formatter on its first record.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import structlog


def configure_logging(level: str = "info", *, stream: TextIO | None = None,
                      json: bool | None = None) -> None:
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    numeric = logging.getLevelName(level.upper())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter(json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # httpx logs every request URL at INFO, API keys included; we log our own redacted line.
    for noisy in ("httpx", "httpcore", "apscheduler.executors", "mail.log"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    _ConfigureOnImport.cancel()
    if "structlog" in sys.modules:
        _configure_structlog(numeric, json)
    else:
        sys.meta_path.insert(0, _ConfigureOnImport(lambda: _configure_structlog(numeric, json)))


def _configure_structlog(numeric: int, json: bool) -> None:
    import structlog

    structlog.configure(
        processors=[*_shared(json), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )


def _shared(json: bool) -> list[structlog.types.Processor]:
    """The processors of structlog's own lines and of stdlib records alike."""
    import structlog

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        shared.append(structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)))
    return shared


class _Formatter(logging.Formatter):
    """Stdlib records rendered as structlog renders its own lines; built on the first
    record, so a command that logs nothing never imports structlog."""

    def __init__(self, json: bool):
        super().__init__()
        self._json = json
        self._formatter: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._formatter is None:
            import structlog

            renderer: structlog.types.Processor
            if self._json:
                renderer = structlog.processors.JSONRenderer()
            else:
                from monitor.output import colour_wanted

                renderer = structlog.dev.ConsoleRenderer(
                    colors=colour_wanted() is not False,
                    exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
                    if _has_rich() else structlog.dev.plain_traceback)
            self._formatter = structlog.stdlib.ProcessorFormatter(
                processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
                foreign_pre_chain=[structlog.stdlib.add_logger_name, *_shared(self._json)])
        return self._formatter.format(record)


class _ConfigureOnImport(importlib.abc.MetaPathFinder):
    """Finds structlog as the other finders do, and runs `then` once it is imported."""

    def __init__(self, then: Callable[[], None]):
        self.then = then

    @classmethod
    def cancel(cls) -> None:
        """Drop a pending configuration (logging is being configured again)."""
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, cls)]

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "structlog":
            return None
        self.cancel()
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenLoader(spec.loader, self.then)
        return spec


class _ThenLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, then: Callable[[], None]):
        self.loader = loader
        self.then = then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.then()

    def __getattr__(self, name: str) -> object:
        # Whatever else is asked of a loader (get_source for a traceback, resources).
        return getattr(self.loader, name)


def _has_rich() -> bool:
    return importlib.util.find_spec("rich") is not None
