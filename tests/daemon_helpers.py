"""A real ``dedupd run`` in a subprocess, and ways to wait on what it does.

The daemon runs as ``python -m dedupd run --log-format json`` with a YAML
config, a store and a log file under the test's ``tmp_path``; its JSON log
lines (one per line, key ``event``) are read back incrementally.  Every wait
polls for an outcome with a deadline; nothing sleeps for a fixed time and
hopes.  :func:`daemon_env` kills whatever a test left running.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from helpers import encode, photo

REPO = Path(__file__).resolve().parent.parent
#: how long any single outcome may take before a test fails
DEADLINE = 30.0
#: how often a wait looks again
POLL = 0.02
#: the quick settings every daemon test starts from
BASE_CONFIG: dict[str, Any] = {
    "settle_seconds": 0.5,
    "workers": 1,
    "max_actions_per_minute": 100_000,
    "actions": {"exact": "quarantine", "pixel": "log", "near": "log"},
}

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None], what: str, timeout: float = DEADLINE, interval: float = POLL
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``.

    Predicates that start a CLI process should pass a longer ``interval``: the
    daemon under test shares the machine's cores with them.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- pictures and files -----------------------------------------------------


@functools.lru_cache(maxsize=2048)
def picture(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (256, 192)) -> bytes:
    """The bytes of a distinct structured picture (see helpers.photo), cached per seed."""
    return encode(photo(seed, size), fmt)


def sha256(data: bytes | Path) -> str:
    if isinstance(data, Path):
        data = data.read_bytes()
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def snapshot(path: Path) -> tuple[str, int, int]:
    """What must not change about a file that is left alone: its SHA-256, inode and mtime."""
    st = os.lstat(path)
    return sha256(path), st.st_ino, st.st_mtime_ns


def count_files(top: Path) -> int:
    """How many regular files are under ``top`` (cheap enough to poll)."""
    return sum(len(names) for _, _, names in os.walk(top))


def files_under(top: Path, *, records: bool = False) -> dict[Path, str]:
    """Every regular file under ``top`` (not following symlinks) with its SHA-256.

    The quarantine's own records (``NAME.dedupd.json`` beside each quarantined
    file) are left out unless ``records``.
    """
    out = {}
    for dirpath, _, names in os.walk(top):
        for name in names:
            p = Path(dirpath) / name
            if not records and name.endswith(".dedupd.json"):
                continue
            if p.is_file() and not p.is_symlink():
                out[p] = sha256(p)
    return out


@contextlib.contextmanager
def bind_mount(source: Path, target: Path) -> Iterator[None]:
    """``source`` bind-mounted over ``target`` for the duration (needs root; skips otherwise)."""
    done = subprocess.run(
        ["mount", "--bind", str(source), str(target)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.strip()}")
    try:
        yield
    finally:
        if subprocess.run(["umount", str(target)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], check=False)


def stray_temps(*tops: Path) -> list[Path]:
    """dedupd's own temporary files (``.NAME.dedupd-XXXX.tmp``) left anywhere under ``tops``."""
    found = []
    for top in tops:
        for dirpath, _, names in os.walk(top):
            found += [Path(dirpath) / n for n in names if ".dedupd-" in n and n.endswith(".tmp")]
    return found


# --- the daemon ------------------------------------------------------------------


def subprocess_env(tmp_path: Path, tmpdir: Path) -> dict[str, str]:
    """The environment of every dedupd subprocess: no systemd sockets, state under tmp_path.

    ``TMPDIR`` is a short private directory: multiprocessing's forkserver puts its
    socket there (a path of at most 107 bytes), and a SIGKILLed daemon leaves it behind.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STATE_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC")
    }
    env.update(
        PYTHONPATH=str(REPO),
        XDG_STATE_HOME=str(tmp_path / "xdg-state"),
        TMPDIR=str(tmpdir),
        LC_ALL="C.UTF-8",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


class Daemon:
    """One ``dedupd run`` process, its log read back as a list of event dicts."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> None:
        self.log_path = log_path
        self.log_file = log_path.open("ab")
        self.offset = self.log_file.tell()  # only this run's lines are read
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=self.log_file,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group: teardown kills its workers too
        )
        self.pid = self.proc.pid
        self.lines: list[dict[str, Any]] = []
        self.junk: list[str] = []  # lines that are not JSON (a traceback would land here)
        self._partial = b""
        self._reaped = False

    # --- the log -----------------------------------------------------------

    def read_log(self) -> list[dict[str, Any]]:
        """Every JSON log line this run has written so far."""
        with self.log_path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            text = raw.decode("utf-8", "replace")
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                self.junk.append(text)
                continue
            if isinstance(entry, dict) and "event" in entry:
                self.lines.append(entry)
            else:
                self.junk.append(text)
        return self.lines

    def events(self, name: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Log events named ``name`` whose fields equal ``match`` (paths compared as text)."""
        return [
            e
            for e in self.read_log()
            if (name is None or e["event"] == name)
            and all(str(e.get(k)) == str(v) for k, v in match.items())
        ]

    def wait_event(self, name: str, timeout: float = DEADLINE, **match: Any) -> dict[str, Any]:
        found = wait_until(
            lambda: self.events(name, **match), f"log event {name} {match or ''}", timeout
        )
        return found[0]

    def mentions(self, path: Path) -> list[dict[str, Any]]:
        """Every log event that names ``path`` in any field."""
        text = str(path)
        return [e for e in self.read_log() if any(v == text for v in e.values())]

    # --- the process -------------------------------------------------------

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = DEADLINE) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode} before it was ready:\n{self.tail()}"
                )
            return bool(self.events("daemon_ready"))

        wait_until(ready, "daemon_ready", timeout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = DEADLINE) -> int:
        """SIGTERM, and the exit code (tests assert it is 0)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.cleanup()

    def kill(self) -> None:
        """SIGKILL the daemon and everything it started (its process group), as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(DEADLINE)
        self.cleanup()

    def cleanup(self) -> None:
        """Kill what is left of this daemon's process group (workers, forkserver), once."""
        if self._reaped:
            return
        self._reaped = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(DEADLINE)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # orphaned workers keep the group id
        self.log_file.close()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


@dataclass
class Env:
    """One test's directories, config, store, and the daemons it started."""

    base: Path
    root: Path
    quarantine: Path
    outside: Path  # beside the root, not watched: where files come from
    config_path: Path
    db: Path
    log_path: Path
    tmpdir: Path
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return subprocess_env(self.base, self.tmpdir)

    def write_config(self, **overrides: Any) -> dict[str, Any]:
        cfg = {
            "roots": [str(self.root)],
            "quarantine_dir": str(self.quarantine),
            **BASE_CONFIG,
            **overrides,
        }
        self.config_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        return cfg

    def start(self, *, ready: bool = True, **overrides: Any) -> Daemon:
        """Start ``dedupd run`` (writing the config first if overrides are given or none exists)."""
        if overrides or not self.config_path.exists():
            self.write_config(**overrides)
        argv = [
            sys.executable, "-m", "dedupd", "run",
            "--config", str(self.config_path), "--db", str(self.db), "--log-format", "json",
        ]  # fmt: skip
        daemon = Daemon(argv, self.log_path, self.env, self.base)
        self.daemons.append(daemon)
        if ready:
            daemon.wait_ready()
        return daemon

    # --- the CLI, the store -------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``python -m dedupd ARGS --db DB`` (no --config: a broken config must not stop a look)."""
        proc = subprocess.run(
            [sys.executable, "-m", "dedupd", *args, "--db", str(self.db), "--log-format", "json"],
            capture_output=True,
            text=True,
            errors="surrogateescape",
            env=self.env,
            cwd=self.base,
            timeout=120,
            check=False,
        )
        if check:
            assert proc.returncode == 0, (
                f"dedupd {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def audit(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.cli("audit", "--format", "json").stdout)
        return rows

    def moves(self) -> list[dict[str, Any]]:
        """Audit rows of completed quarantines and symlinks."""
        return [
            r
            for r in self.audit()
            if r["action"] in ("quarantine", "symlink") and r["outcome"] == "done"
        ]

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.cli("status", "--format", "json").stdout)
        return out

    def restore_all(self) -> subprocess.CompletedProcess[str]:
        return self.cli("restore", "--all")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the store directly (read-only), for evidence the CLI does not print."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def record(self, path: Path) -> dict[str, Any] | None:
        """The store's row for ``path``, or None."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute("SELECT * FROM files WHERE path = ?", [os.fsencode(path)]).fetchone()
        except sqlite3.OperationalError:  # no store or no table yet
            return None
        finally:
            conn.close()
        return dict(row) if row is not None else None

    def wait_indexed(self, *paths: Path, timeout: float = DEADLINE) -> None:
        """Wait until the store holds each file's current version (fingerprinted or skipped)."""

        def current(p: Path) -> bool:
            rec = self.record(p)
            if rec is None:
                return False
            st = os.lstat(p)
            return (rec["ino"], rec["size"], rec["mtime_ns"]) == (
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
            )

        wait_until(lambda: all(current(p) for p in paths), f"{len(paths)} files indexed", timeout)

    def daemon_status(self) -> dict[str, Any]:
        """What the daemon last wrote about itself (what ``dedupd status`` shows), read directly."""
        try:
            rows = self.query("SELECT pid, heartbeat_at, state, data FROM daemon WHERE id = 1")
        except sqlite3.OperationalError:  # not created yet
            return {}
        if not rows:
            return {}
        pid, heartbeat_at, state, data = rows[0]
        return {"pid": pid, "heartbeat_at": heartbeat_at, "state": state, **json.loads(data)}

    def wait_idle(self, daemon: Daemon, after: float, timeout: float = DEADLINE) -> dict[str, Any]:
        """Wait for a status heartbeat of ``daemon`` newer than ``after`` (a time.time())
        with nothing queued, in flight or being walked; returns that status."""

        def idle() -> dict[str, Any] | None:
            if not daemon.alive():
                raise AssertionError(f"daemon died:\n{daemon.tail()}")
            d = self.daemon_status()
            quiet = (
                d.get("pid") == daemon.pid
                and d.get("queue_depth") == 0
                and d.get("catching_up") == 0
            )
            return (
                d if quiet and d.get("state") == "running" and d["heartbeat_at"] > after else None
            )

        return wait_until(idle, "the daemon to be idle", timeout, interval=0.1)


@contextlib.contextmanager
def daemon_env(tmp_path: Path, db: Path | None = None) -> Iterator[Env]:
    """Directories for one daemon test; every daemon started is killed at the end.

    ``db``: the store, a file under ``tmp_path`` unless given (a PostgreSQL
    URL goes through as it is: ``--db`` takes either)."""
    env = Env(
        base=tmp_path,
        root=tmp_path / "root",
        quarantine=tmp_path / "quarantine",
        outside=tmp_path / "outside",
        config_path=tmp_path / "dedupd.yaml",
        db=tmp_path / "state" / "dedupd.db" if db is None else db,
        log_path=tmp_path / "daemon.log",
        tmpdir=Path(tempfile.mkdtemp(prefix="dedupd-test-")),
    )
    for d in (env.root, env.outside, env.quarantine):
        d.mkdir(parents=True)
    if db is None:
        env.db.parent.mkdir(parents=True)
    try:
        yield env
    finally:
        for daemon in env.daemons:
            daemon.cleanup()
        shutil.rmtree(env.tmpdir, ignore_errors=True)


# --- the CLI with a fault switched on, and what a settled store looks like ------


def start_cli(env: Env, *args: str, fault: str | None = None) -> subprocess.Popen[str]:
    """``python -m dedupd ARGS --db DB``, with ``DEDUPD_FAULT`` set when ``fault`` is given."""
    extra = {"DEDUPD_FAULT": fault} if fault else {}
    db = [] if args[0] in ("check-config", "compare") else ["--db", str(env.db)]
    return subprocess.Popen(
        [sys.executable, "-m", "dedupd", *args, *db, "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="surrogateescape",
        env={**env.env, **extra},
        cwd=env.base,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Wait for a CLI process; kill what is left of its process group (workers)."""
    out, err = proc.communicate(timeout=120)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, err


def cli(env: Env, *args: str, fault: str | None = None) -> tuple[int, str, str]:
    return finish(start_cli(env, *args, fault=fault))


def scan(env: Env, fault: str | None = None) -> tuple[int, str, str]:
    return cli(env, "scan", str(env.root), "--config", str(env.config_path), "--no-progress", fault=fault)


def pending_intents(env: Env) -> list[Any]:
    return env.query("SELECT id, action, path FROM intents WHERE state = 'pending'")


def check_settled(env: Env, files: dict[Path, bytes], *, symlinks: bool = False) -> None:
    """Every file once: at its path, or in quarantine with a done move and its record
    (and, for the symlink action, a symlink to its original at its path); nothing stray."""
    moves = {str(r["path"]): r for r in env.moves()}
    quarantined = files_under(env.quarantine)
    records = {p for p in files_under(env.quarantine, records=True) if p.name.endswith(".dedupd.json")}
    for path, data in files.items():
        row = moves.get(str(path))
        if row is None:
            assert path.is_file() and not path.is_symlink(), f"{path} is neither in place nor moved"
            assert sha256(path) == sha256(data), f"{path} changed"
            continue
        dest = Path(str(row["destination"]))
        assert quarantined.get(dest) == sha256(data), f"{path}: quarantine copy missing or differs"
        assert dest.with_name(dest.name + ".dedupd.json") in records, f"{dest} has no record beside it"
        if symlinks:
            assert path.is_symlink() and sha256(path) == sha256(data), f"{path} is not a link to its original"
        else:
            assert not os.path.lexists(path), f"{path} is both in place and in quarantine"
    assert set(quarantined) == {Path(str(r["destination"])) for r in moves.values()}
    assert len(records) == len(moves), "a record without its file, or a file without its record"
    assert stray_temps(env.root, env.quarantine) == [], "private or temporary names left behind"
    assert pending_intents(env) == []


def restore_everything(env: Env, files: dict[Path, bytes]) -> None:
    code, out, err = cli(env, "restore", "--all")
    assert code == 0, out + err
    for path, data in files.items():
        assert path.is_file() and not path.is_symlink() and sha256(path) == sha256(data), f"{path} not restored"
    assert files_under(env.quarantine, records=True) == {}, "quarantine not emptied (records included)"
    assert stray_temps(env.root, env.quarantine) == []
