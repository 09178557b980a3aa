"""Logging set-up: the one place that holds global logging state.

Every module gets its logger with ``structlog.get_logger()`` and logs a
constant snake_case event with its data as keyword arguments.  Nothing is
configured at import time: the entry points call :func:`configure` once.

Logs go to standard error, JSON lines when it is not a terminal (journald
keeps them as they are; ``journalctl -o cat | jq``) and a readable console
format on a terminal.  Standard error rather than standard output, so that
``dedupd groups --format json | jq`` gets only the data it asked for.
Python warnings (from libraries: watchdog warns on deeply nested trees) are
log lines too, ``python_warning``, never raw text between the JSON lines.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

import structlog

from dedupd.errors import display_path

LEVELS = ("debug", "info", "warning", "error")


def _safe_values(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Paths (and path-like bytes) become safe text: no control characters, no invalid UTF-8."""
    for key, value in event.items():
        if key != "event":
            event[key] = _safe(value)
    return event


def _safe(value: Any) -> Any:
    if isinstance(value, (Path, bytes)):
        return display_path(value)
    if isinstance(value, str):
        return value if value.isprintable() else display_path(value)
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _safe(v) for k, v in value.items()}
    return value


#: a warning's text is cut to this many characters (watchdog's repeat a whole
#: watch table in each)
WARNING_TEXT_MAX = 300


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replaced: a warning from a library (watchdog's
    RuntimeWarnings on deep nesting, say) becomes one log line in the
    configured format, not lines of raw text between the JSON ones."""
    text = str(message)
    if len(text) > WARNING_TEXT_MAX:
        text = text[:WARNING_TEXT_MAX] + "..."
    structlog.get_logger().warning(
        "python_warning", category=category.__name__, message=text, source=f"{filename}:{lineno}"
    )


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog for this process.  ``fmt`` is ``json``, ``console`` or ``auto``."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() and os.environ.get("TERM") != "dumb" else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _safe_values,
    ]
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    warnings.showwarning = _log_warning
