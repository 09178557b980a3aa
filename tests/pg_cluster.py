"""A throwaway PostgreSQL cluster for the tests: Debian's ``postgresql`` binaries
(``.ci/run`` installs them), a data directory in a temporary directory, and a Unix
socket in that directory only (no TCP port, so nothing else on the machine can
reach it and the Debian package's own cluster does not matter).

initdb refuses to run as root; CI runs as root, so there the cluster is made and
run by the ``postgres`` system user, in a directory that user owns.

Each cluster's directory names the test process it belongs to (``owner``: its pid
and start time).  A session that was killed hard never stops its cluster, so
starting a cluster first stops and removes those whose owner is gone; a cluster
whose owner lives, or that names none, is never touched.  Under pytest-xdist each
worker is a test session of its own, with its own cluster (its own directory and
socket) named after the worker's process, so workers sweep beside each other: a
sweeper holds a lock on the directory it judges, and a directory another sweeper
is removing is gone once the lock is had.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg


def binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl, else None."""
    found = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            try:
                found.append((float(candidate.parent.name), candidate))
            except ValueError:
                continue
    return max(found)[1] if found else None


#: the name every cluster directory starts with, in the temporary directory
PREFIX = "dedupd-pg-"

#: the file in a cluster's directory that names its owner: "<pid> <start time>"
OWNER = "owner"


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks after boot, from /proc), or None
    when there is no such process.  A pid alone may name a later process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in () may hold spaces


def _write_owner(directory: Path) -> None:
    """Name this test process as the owner of the cluster in ``directory``."""
    pid = os.getpid()
    part = directory / f".{OWNER}.tmp"
    part.write_text(f"{pid} {_started(pid)}\n")
    part.replace(directory / OWNER)  # whole or absent: a sweep never reads half of it


def _owner_gone(directory: Path) -> bool:
    """True only when ``directory`` names an owner and that process no longer runs."""
    try:
        pid, started = (directory / OWNER).read_text().split()
        return _started(int(pid)) != started
    except (OSError, ValueError):
        return False  # no owner named (yet, or by an older run): not ours to judge


def stop_orphans(bin: Path) -> list[Path]:
    """Stop (``pg_ctl stop -m immediate``) and remove the test clusters whose owning
    test process is gone; returns their directories.  A cluster whose owner runs is
    left alone, whoever started it."""
    stopped = []
    for directory in sorted(Path(tempfile.gettempdir()).glob(f"{PREFIX}*")):
        with _sweeping(directory) as ours:
            if ours and _stop_orphan(bin, directory):
                stopped.append(directory)
    return stopped


@contextlib.contextmanager
def _sweeping(directory: Path) -> Iterator[bool]:
    """Hold the sweepers' lock on ``directory`` (waiting for another sweeper to finish
    with it); yields False when it is not there any more or cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield False  # removed meanwhile, or another user's
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory.exists()
    finally:
        os.close(fd)


def _stop_orphan(bin: Path, directory: Path) -> bool:
    """Stop and remove the cluster in ``directory`` if its owner is gone; True if it was."""
    if not _owner_gone(directory):
        return False
    try:
        uid = directory.stat().st_uid
    except OSError:
        return False  # removed meanwhile
    user = None
    if uid != os.geteuid():
        if os.geteuid() != 0:
            return False  # another user's: not ours to stop
        user = pwd.getpwuid(uid).pw_name
    pg_ctl = [str(bin / "pg_ctl"), "-D", str(directory / "data")]
    if user is not None:
        pg_ctl = ["runuser", "-u", user, "--", *pg_ctl]
    if (directory / "data" / "postmaster.pid").exists():
        try:
            subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, check=False, timeout=120)
            if subprocess.run([*pg_ctl, "status"], capture_output=True, check=False, timeout=60).returncode == 0:
                return False  # still running: left for the next sweep rather than lost
        except subprocess.TimeoutExpired:
            return False
    shutil.rmtree(directory, ignore_errors=True)
    return True


@dataclass
class Cluster:
    """A running cluster; :meth:`new_database` gives each test a database of its own."""

    bin: Path
    directory: Path
    user: str | None  # the system user that runs it (when the tests run as root)
    port: int = 5432  # only names the socket file: there is no TCP listener
    created: int = 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)

    @classmethod
    def start(cls, bin: Path) -> Cluster:
        """initdb and start a cluster in a new temporary directory; wait until it answers."""
        user = "postgres" if os.geteuid() == 0 else None
        stop_orphans(bin)
        directory = Path(tempfile.mkdtemp(prefix=PREFIX))
        _write_owner(directory)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        cluster = cls(bin, directory, user)
        data = directory / "data"
        cluster._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        cluster.resume()
        return cluster

    def resume(self) -> None:
        """Start the server on this cluster's data; wait until it answers."""
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.directory}' -p {self.port}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        data, log = str(self.directory / "data"), str(self.directory / "log")
        self._run("pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")

    def halt(self) -> None:
        """Stop the server as an administrator would restart it (fast: every
        session is cut), keeping its data; :meth:`resume` starts it again."""
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "fast", "-w", "-t", "60", "stop")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.directory}&port={self.port}"

    def new_database(self) -> str:
        """A new, empty database; its URL."""
        self.created += 1
        name = f"t{os.getpid()}_{self.created}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
