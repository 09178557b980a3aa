"""The throwaway PostgreSQL clusters of the tests (pg_cluster.py) do not outlive a
test session that was killed hard, and never stop another live session's cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

import pg_cluster as P

_CHILD = (
    "import time, pg_cluster as P\n"
    "c = P.Cluster.start(P.binaries())\n"
    "print(c.directory, flush=True)\n"
    "time.sleep(300)\n"
)


def _gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_new_cluster_stops_those_of_killed_sessions_and_no_live_one(pg_cluster: P.Cluster) -> None:
    """A cluster whose test process was SIGKILLed is stopped and removed when the next one
    starts; the cluster of this live session keeps answering."""
    child = subprocess.Popen(  # a test session of its own, killed hard once its cluster runs
        [sys.executable, "-c", _CHILD], cwd=Path(__file__).parent, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        left = Path(child.stdout.readline().strip())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert left.name.startswith("dedupd-pg-"), left
    postmaster = int((left / "data" / "postmaster.pid").read_text().split()[0])
    new = P.Cluster.start(pg_cluster.bin)
    try:
        assert not left.exists(), "the killed session's cluster was left behind"
        assert _gone(postmaster), "the killed session's server still runs"
        with psycopg.connect(pg_cluster.url(), autocommit=True, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        new.stop()
        if left.exists():  # before the sweep existed: do not leave it running
            P.Cluster(pg_cluster.bin, left, pg_cluster.user).stop()
