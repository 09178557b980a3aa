"""Shared fixtures: the real CLI in a subprocess with a private store, and a thread-leak check."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The package is not installed in the test environment; make it importable
# from the checkout the tests belong to (pyproject's `pythonpath = ["."]`
# would do the same).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLI_TIMEOUT = 120.0
THREAD_GRACE = 5.0

#: subcommands that take --db
_DB_COMMANDS = {"scan", "groups", "status", "audit", "restore", "ignore", "run"}


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running after it returns."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for t in leaked:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """An environment for the CLI whose state, config and cache dirs are under tmp_path."""
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(
        PYTHONPATH=str(ROOT),
        XDG_STATE_HOME=str(tmp_path / "xdg-state"),
        XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
        XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
        LC_ALL="C.UTF-8",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the CLI's store lives for this test."""
    return tmp_path / "state" / "dedupd.db"


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(tmp_path: Path, db_path: Path, cli_env: dict[str, str]) -> RunCli:
    """Run ``python -m dedupd ARGS`` with this test's store; ``--db`` is added where it applies."""

    def run(
        *args: str | Path,
        db: Path | None = None,
        cwd: Path | None = None,
        prefix: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        if argv and argv[0] in _DB_COMMANDS and "--db" not in argv:
            argv[1:1] = ["--db", str(db or db_path)]
        return subprocess.run(
            [*prefix, sys.executable, "-m", "dedupd", *argv],
            cwd=cwd or tmp_path,
            env=cli_env,
            capture_output=True,
            text=True,
            errors="surrogateescape",
            timeout=CLI_TIMEOUT,
            check=False,
        )

    return run
