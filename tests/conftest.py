"""Shared fixtures: the real CLI in a subprocess with a private store, and a thread-leak check."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The package is not installed in the test environment; make it importable
# from the checkout the tests belong to (pyproject's `pythonpath = ["."]`
# would do the same).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import helpers as H  # noqa: E402  (needs the package on sys.path)

THREAD_GRACE = 5.0


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
    return H.cli_environment(tmp_path)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the CLI's store lives for this test."""
    return tmp_path / "state" / "dedupd.db"


@pytest.fixture
def run_cli(tmp_path: Path, db_path: Path, cli_env: dict[str, str]) -> H.RunCli:
    """Run ``python -m dedupd ARGS`` with this test's store (``--db`` added where it applies) and env."""

    def run(*args: str | Path, db: Path | None = None, cwd: Path | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run the CLI; ``db`` and ``cwd`` override this test's store and working directory."""
        return H.run_dedupd(*args, db=db or db_path, env=cli_env, cwd=cwd or tmp_path, **kw)  # type: ignore[arg-type]

    return run
