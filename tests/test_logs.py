"""Logging set-up: Python warnings become log lines in the configured format."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator

import pytest
import structlog

from dedupd import logs


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """dedupd's JSON logging into a buffer; the global state put back afterwards."""
    stream = io.StringIO()
    saved = warnings.showwarning
    try:
        logs.configure("json", stream=stream)
        yield stream
    finally:
        warnings.showwarning = saved
        structlog.reset_defaults()


def test_a_python_warning_is_one_json_log_line_with_its_text_cut_short(configured: io.StringIO) -> None:
    """warnings.warn from a library writes one JSON line (python_warning, its category, the
    text cut to WARNING_TEXT_MAX) and nothing else to the log stream."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("Callback with id 1 already exists for watch " + "x" * 5000, RuntimeWarning, stacklevel=1)
    lines = configured.getvalue().splitlines()
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert entry["event"] == "python_warning" and entry["level"] == "warning"
    assert entry["category"] == "RuntimeWarning"
    assert entry["message"].startswith("Callback with id 1 already exists")
    assert len(entry["message"]) == logs.WARNING_TEXT_MAX + 3
    assert entry["source"].endswith(".py:" + entry["source"].rsplit(":", 1)[1])
