"""Shared fixtures: the real CLI in a subprocess with a private store, a daemon's directories
(``env``), a PostgreSQL cluster for the store tests, and a thread-leak check."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The package is not installed in the test environment; make it importable
# from the checkout the tests belong to (pyproject's `pythonpath = ["."]`
# would do the same).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import helpers as H  # noqa: E402  (needs the package on sys.path)
from daemon_helpers import Env, daemon_env  # noqa: E402

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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """A throwaway PostgreSQL cluster for the session (see pg_cluster.py); skipped
    without Debian's postgresql binaries, except in CI, where that is a failure."""
    import pg_cluster as P  # noqa: PLC0415 - psycopg only for the tests that use it

    bin_dir = P.binaries()
    if bin_dir is None:
        message = "PostgreSQL binaries not found under /usr/lib/postgresql (Debian's postgresql package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    cluster = P.Cluster.start(bin_dir)
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: object) -> str:
    """The URL of a new, empty PostgreSQL database in the session's cluster."""
    return pg_cluster.new_database()  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Opens connections to this test's store, a SQLite file or a PostgreSQL
    database: the store tests run once against each backend."""
    from dedupd.models import PostgresUrl  # noqa: PLC0415
    from dedupd.store import open_store as open_any  # noqa: PLC0415

    location: Any = tmp_path / "s.db" if request.param == "sqlite" else PostgresUrl(request.getfixturevalue("pg_url"))
    opened: list[Any] = []

    def open_(*, readonly: bool = False) -> Any:
        store = open_any(location, readonly=readonly)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A root, a quarantine, a config and a store under tmp_path for ``dedupd run``;
    every daemon the test started is killed at the end."""
    with daemon_env(tmp_path) as e:
        yield e
