"""dedupd as a service: what systemd, journald and an operator see of it.

A real ``dedupd run`` process (started through ``daemon_helpers``) talks to
a real AF_UNIX datagram socket standing in for the service manager, writes
JSON log lines that are read back byte for byte, and answers ``dedupd
status`` while it runs; ``dedupd check-config`` and ``dedupd run`` refuse a
broken config with exit code 78, which the unit's
``RestartPreventExitStatus=78`` relies on.  Every wait has a deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import helpers as H
import pytest
import yaml
from daemon_helpers import DEADLINE, REPO, Daemon, Env, picture, wait_until, write

T = TypeVar("T")

#: how long the test waits on a silent socket before looking at the daemon again
RECV_SLICE = 0.05
#: the WATCHDOG_USEC the daemon is started with, and the ping interval it implies
WATCHDOG_USEC = 1_000_000
WATCHDOG_EVERY = WATCHDOG_USEC / 2 / 1_000_000
#: exit code of an invalid configuration (sysexits' EX_CONFIG)
EX_CONFIG = 78


# --- the service manager's end of NOTIFY_SOCKET ---------------------------------


@dataclass(frozen=True)
class Notice:
    """One datagram from the daemon: when it arrived and its NAME=value fields, in order."""

    at: float  # time.monotonic() when it was received
    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k == name), None)

    def text(self) -> str:
        return "\\n".join(f"{k}={v}" for k, v in self.fields)


class Manager:
    """A bound AF_UNIX datagram socket, its NOTIFY_SOCKET value, and every notice received."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        self.notices: list[Notice] = []

    def _receive(self, until: float) -> bool:
        """Take one datagram if one comes before ``until`` (at most RECV_SLICE from now)."""
        self.sock.settimeout(max(0.001, min(until - time.monotonic(), RECV_SLICE)))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        at = time.monotonic()
        lines = data.decode("utf-8").split("\n")  # strict: a notification is UTF-8 text
        fields = []
        for line in lines:
            name, sep, value = line.partition("=")
            assert sep and name, f"not a NAME=value field: {line!r} in {data!r}"
            fields.append((name, value))
        self.notices.append(Notice(at, tuple(fields)))
        return True

    def receive_until(
        self,
        found: Callable[[list[Notice]], T | None],
        what: str,
        daemon: Daemon,
        timeout: float = DEADLINE,
    ) -> T:
        """Receive until ``found(notices)`` is not None and return it; fail after ``timeout``,
        or as soon as the daemon has exited and nothing more is queued."""
        deadline = time.monotonic() + timeout
        while True:
            result = found(self.notices)
            if result is not None:
                return result
            if time.monotonic() > deadline:
                got = [n.text() for n in self.notices]
                raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; received {got}")
            if not self._receive(deadline) and not daemon.alive():
                raise AssertionError(
                    f"daemon exited with {daemon.proc.returncode} before {what}:\n{daemon.tail()}"
                )

    def wait_for(
        self, name: str, value: str, daemon: Daemon, since: int = 0, timeout: float = DEADLINE
    ) -> int:
        """Receive until a notice at index ``since`` or later has ``name=value``; its index."""

        def first(notices: list[Notice]) -> int | None:
            return next((i for i in range(since, len(notices)) if notices[i].get(name) == value), None)

        return self.receive_until(first, f"{name}={value} (from notice #{since})", daemon, timeout)


@pytest.fixture
def path_manager(tmp_path: Path) -> Iterator[Manager]:
    """A manager listening on a socket file in tmp_path (NOTIFY_SOCKET=/path)."""
    path = tmp_path / "notify.sock"
    assert len(os.fsencode(path)) < 108, f"{path}: longer than sun_path allows"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield Manager(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_manager() -> Iterator[Manager]:
    """A manager listening on a unique abstract name (NOTIFY_SOCKET=@name, bound with a NUL)."""
    name = f"dedupd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    yield Manager(sock, "@" + name)
    sock.close()


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest) -> Manager:
    """Once with a socket file, once with an abstract socket."""
    chosen: Manager = request.getfixturevalue(f"{request.param}_manager")
    return chosen


def start_notifying(env: Env, manager: Manager, **variables: str) -> Daemon:
    """``dedupd run`` as systemd starts a Type=notify unit: NOTIFY_SOCKET (and ``variables``) set.

    WATCHDOG_PID is left unset: the child's pid is only known after it started.
    """
    if not env.config_path.exists():
        env.write_config()
    environ = {k: v for k, v in env.env.items() if k not in ("WATCHDOG_PID", "WATCHDOG_USEC")}
    environ.update(NOTIFY_SOCKET=manager.address, **variables)
    argv = [
        sys.executable, "-m", "dedupd", "run",
        "--config", str(env.config_path), "--db", str(env.db), "--log-format", "json",
    ]  # fmt: skip
    daemon = Daemon(argv, env.log_path, environ, env.base)
    env.daemons.append(daemon)
    return daemon


def status_only(notice: Notice) -> bool:
    """A periodic STATUS= update (not the one that comes with READY=1)."""
    return notice.get("STATUS") is not None and notice.get("READY") is None


# --- 1. the notify protocol ---------------------------------------------------------


def test_notify_protocol_through_the_life_of_the_daemon(env: Env, manager: Manager) -> None:
    """The real daemon sends READY=1 once its root is watched, STATUS= lines, WATCHDOG=1 every
    half WATCHDOG_USEC, RELOADING=1 then READY=1 on SIGHUP, and STOPPING=1 on SIGTERM (exit 0)."""
    write(env.root / "a.jpg", picture(1))
    daemon = start_notifying(env, manager, WATCHDOG_USEC=str(WATCHDOG_USEC))

    ready = manager.wait_for("READY", "1", daemon)
    # received as soon as it was sent: the root's observer must already be running
    watching = daemon.events("watching", root=env.root)
    assert watching, f"READY=1 came before the root was watched:\n{daemon.tail()}"
    assert watching[0]["observer"] == "inotify"
    ready_at = manager.notices[ready].at

    def pings(notices: list[Notice]) -> list[float] | None:
        times = [n.at for n in notices if n.get("WATCHDOG") == "1"]
        return times[:4] if len(times) >= 4 else None

    times = manager.receive_until(pings, "four WATCHDOG=1", daemon, timeout=5.0)
    assert times[2] - ready_at <= 2.5, f"fewer than 3 pings within 2.5s of READY=1: {times}"
    gaps = [b - a for a, b in zip(times, times[1:])]
    # never as long as the timeout itself (systemd would kill the service), and about half of it
    assert max(gaps) < WATCHDOG_USEC / 1_000_000, f"a watchdog gap reached WATCHDOG_USEC: {gaps}"
    assert 0.8 * WATCHDOG_EVERY <= statistics.median(gaps) <= 1.6 * WATCHDOG_EVERY, gaps

    # a periodic status once the file is in: "1 files indexed, 0 queued, 0 duplicates"
    def indexed_status(notices: list[Notice]) -> str | None:
        texts = [n.get("STATUS") or "" for n in notices if status_only(n)]
        return next((t for t in texts if t.startswith("1 files indexed")), None)

    text = manager.receive_until(indexed_status, "STATUS=1 files indexed...", daemon)
    assert "files indexed" in text and "queued" in text, text
    assert "files indexed" in (manager.notices[ready].get("STATUS") or ""), "READY=1 without a status"

    mark = len(manager.notices)
    before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    daemon.signal(signal.SIGHUP)
    reloading = manager.wait_for("RELOADING", "1", daemon, since=mark)
    after_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    stamp = manager.notices[reloading].get("MONOTONIC_USEC")
    assert stamp is not None and before_us <= int(stamp) <= after_us, manager.notices[reloading]
    manager.wait_for("READY", "1", daemon, since=reloading + 1)
    daemon.wait_event("config_reloaded")
    assert not any(n.get("READY") for n in manager.notices[mark:reloading]), "READY=1 before RELOADING=1"

    mark = len(manager.notices)
    daemon.signal(signal.SIGTERM)
    manager.wait_for("STOPPING", "1", daemon, since=mark)
    assert daemon.proc.wait(DEADLINE) == 0, daemon.tail()
    daemon.cleanup()


def test_no_watchdog_pings_without_watchdog_usec(env: Env, abstract_manager: Manager) -> None:
    """With WATCHDOG_USEC unset the daemon (on an abstract socket) says READY=1 and STATUS=
    but never WATCHDOG=1, over two status periods."""
    manager = abstract_manager
    daemon = start_notifying(env, manager)
    ready = manager.wait_for("READY", "1", daemon)

    def two_statuses(notices: list[Notice]) -> list[Notice] | None:
        later = [n for n in notices[ready + 1 :] if status_only(n)]
        return later if len(later) >= 2 else None

    statuses = manager.receive_until(two_statuses, "two STATUS= updates after READY=1", daemon)
    assert statuses[1].at - manager.notices[ready].at >= 1.0  # a real stretch of time was watched
    for n in statuses:
        assert "files indexed" in (n.get("STATUS") or "") and "queued" in (n.get("STATUS") or "")
    assert [n.text() for n in manager.notices if n.get("WATCHDOG") is not None] == []

    mark = len(manager.notices)
    assert daemon.stop() == 0
    manager.wait_for("STOPPING", "1", daemon, since=mark)
    assert [n.text() for n in manager.notices if n.get("WATCHDOG") is not None] == []


def test_a_slow_move_neither_stops_the_watchdog_pings_nor_ingest(env: Env, path_manager: Manager) -> None:
    """While a move's copy and re-hash are held up 4 s (DEDUPD_FAULT sleep on the action thread),
    WATCHDOG=1 keeps coming every half WATCHDOG_USEC and a new file is still fingerprinted;
    the move then completes."""
    manager = path_manager
    pause = 4.0
    original = write(env.root / "a.jpg", picture(1))
    env.write_config(actions={"exact": "quarantine", "pixel": "log", "near": "log"})
    daemon = start_notifying(
        env, manager, WATCHDOG_USEC=str(WATCHDOG_USEC), DEDUPD_FAULT=f"quarantine.after_copy:sleep={pause}"
    )
    manager.wait_for("READY", "1", daemon)
    manager.receive_until(lambda _: env.record(original) or None, "a.jpg indexed", daemon)

    copy = write(env.root / "b.jpg", picture(1))
    placed = env.quarantine / "b.jpg"

    def moving(notices: list[Notice]) -> float | None:  # the copy is placed, the file not yet taken
        return time.monotonic() if placed.exists() and copy.exists() else None

    started = manager.receive_until(moving, "the move's copy placed", daemon)
    other = write(env.root / "c.jpg", picture(2))

    def ingested_meanwhile(notices: list[Notice]) -> bool | None:
        if not copy.exists():
            raise AssertionError(f"the move finished before c.jpg was fingerprinted:\n{daemon.tail()}")
        rec = env.record(other)
        return True if rec is not None and rec["sha256"] is not None else None

    manager.receive_until(ingested_meanwhile, "c.jpg fingerprinted during the move", daemon, timeout=pause)
    ended = manager.receive_until(
        lambda _: time.monotonic() if not copy.exists() else None, "the move to complete", daemon
    )
    assert ended - started >= pause * 0.8, "the fault did not hold the move up"
    daemon.wait_event("file_quarantined", path=copy)

    pings = [n.at for n in manager.notices if n.get("WATCHDOG") == "1" and started <= n.at <= ended]
    gaps = [b - a for a, b in zip([started, *pings], [*pings, ended])]
    assert len(pings) >= (ended - started) / WATCHDOG_EVERY - 3, pings
    assert max(gaps) < WATCHDOG_USEC / 1_000_000, f"the watchdog went unpinged during the move: {gaps}"
    assert daemon.stop() == 0


# --- 2. the JSON log ------------------------------------------------------------------

SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
LEVELS = {"debug", "info", "warning", "error", "critical"}


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a parsed JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


def safe_text(s: str) -> bool:
    """Printable, and encodable as UTF-8 (no lone surrogate smuggled in as a \\udcXX escape)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return s.isprintable()


def parse_log(raw: bytes) -> list[dict[str, Any]]:
    """Every line of a daemon's output, each checked to be one well-formed JSON log object."""
    text = raw.decode("utf-8")  # strict: the log is valid UTF-8 throughout
    assert text.endswith("\n"), text[-200:]
    entries = []
    for line in text.splitlines():
        entry = json.loads(line)  # every line, not only those that look like JSON
        assert isinstance(entry, dict), line
        entries.append(entry)
        assert SNAKE_CASE.fullmatch(entry["event"]), line
        assert entry["level"] in LEVELS, line
        when = dt.datetime.fromisoformat(entry["timestamp"])
        assert when.utcoffset() == dt.timedelta(0), line
        assert abs(time.time() - when.timestamp()) < 600, line
        unsafe = [s for s in strings_in(entry) if not safe_text(s)]
        assert not unsafe, f"control characters or invalid text {unsafe!r} in {line}"
    return entries


def test_every_log_line_is_one_json_object_even_for_hostile_file_names(env: Env) -> None:
    """Each line a daemon run writes is one JSON object with a snake_case event, a level and a UTC
    ISO 8601 timestamp; duplicate_found carries its fields; a newline or invalid UTF-8 in a file
    name never splits a line nor puts invalid text in it."""
    original = write(env.root / "a.jpg", picture(1))
    daemon = env.start(actions={"exact": "log", "pixel": "log", "near": "log"})
    env.wait_indexed(original)

    root = os.fsencode(env.root)
    for name in (b"new\nline.jpg", b"bad\xff\xfebytes.jpg"):
        with open(root + b"/" + name, "wb") as f:
            f.write(picture(1))
    with open(root + b"/junk\n\xff.jpg", "wb") as f:
        f.write(b"not a picture at all")

    def both_found() -> list[dict[str, Any]] | None:
        dups = daemon.events("duplicate_found")
        return dups if len(dups) >= 2 else None

    found = wait_until(both_found, "two duplicate_found events")
    daemon.wait_event("file_skipped")
    assert daemon.stop() == 0

    entries = parse_log(env.log_path.read_bytes())
    names = [e["event"] for e in entries]
    assert {"watching", "daemon_ready", "duplicate_found", "file_skipped", "daemon_stopped"} <= set(names)
    assert names.index("daemon_ready") < names.index("duplicate_found") < names.index("daemon_stopped")

    assert len(found) == 2, found
    for dup in found:
        assert {"path", "original", "tier", "distance", "similarity", "reason"} <= dup.keys(), dup
        assert (dup["original"], dup["tier"], dup["distance"], dup["similarity"]) == (
            str(original), "exact", 0, 100.0
        ), dup
        assert isinstance(dup["reason"], str) and dup["reason"], dup
    paths = sorted(d["path"] for d in found)
    prefix = f"{env.root}/"
    assert paths[0].startswith(prefix + "bad") and paths[0].endswith("bytes.jpg"), paths
    assert paths[1].startswith(prefix + "new") and paths[1].endswith("line.jpg"), paths
    [skipped] = [e for e in entries if e["event"] == "file_skipped"]
    assert skipped["path"].startswith(prefix + "junk") and skipped["path"].endswith(".jpg"), skipped


def test_watchdogs_warnings_on_a_deep_tree_are_json_log_lines(env: Env) -> None:
    """A tree 60 levels deep made while the daemon watches makes watchdog warn (RuntimeWarning:
    a callback overwritten, its text a whole watch table); each warning is one python_warning
    JSON line and nothing in the log is anything but JSON."""
    daemon = env.start(actions={"exact": "log", "pixel": "log", "near": "log"})
    for tree in range(3):  # the warning comes from a race in watchdog: another tree if none came
        level = env.root / f"tree{tree}"
        for i in range(60):
            level = level / f"level{i:03d}_{'x' * 40}"
            level.mkdir(parents=True)
            (level / "note.txt").write_bytes(b"x")
        try:
            wait_until(lambda: daemon.events("python_warning"), "a python_warning", timeout=5)
            break
        except AssertionError:
            continue
    else:
        pytest.skip("watchdog did not warn on three deep trees (its race did not happen)")
    assert daemon.stop() == 0
    daemon.read_log()
    assert daemon.junk == [], daemon.junk[:3]
    warned = daemon.events("python_warning")[0]
    assert warned["category"] == "RuntimeWarning" and "watchdog" in warned["source"], warned
    assert len(warned["message"]) <= 303


def test_hostile_root_name_is_logged_as_safe_text(env: Env) -> None:
    """A root given with --watch whose name holds a newline and invalid UTF-8 still gives only
    safe, printable, valid text in every log line (daemon_ready's list of roots included)."""
    hostile = os.fsencode(env.base) + b"/ro\xffot\nx"
    os.mkdir(hostile)
    env.write_config(roots=[])
    argv = [
        sys.executable, "-m", "dedupd", "run", "--watch", os.fsdecode(hostile),
        "--config", str(env.config_path), "--db", str(env.db), "--log-format", "json",
    ]  # fmt: skip
    daemon = Daemon(argv, env.log_path, env.env, env.base)
    env.daemons.append(daemon)
    daemon.wait_ready()
    assert daemon.stop() == 0
    entries = parse_log(env.log_path.read_bytes())
    assert "daemon_ready" in [e["event"] for e in entries]


# --- 3. dedupd status ------------------------------------------------------------------


def test_status_while_running_and_after_stop(env: Env) -> None:
    """`dedupd status` shows the running daemon (pid, inotify root, file count, queue depth)
    in JSON and as a table, and says not running once it stopped."""
    files = [write(env.root / f"{i}.jpg", picture(10 + i)) for i in range(3)]
    daemon = env.start()
    env.wait_indexed(*files)
    env.wait_idle(daemon, after=time.time())

    out = env.status()
    assert out["daemon"]["running"] is True, out
    assert out["daemon"]["pid"] == daemon.pid, out
    assert out["daemon"]["state"] == "running", out
    [root] = out["daemon"]["roots"]
    assert (root["path"], root["observer"]) == (str(env.root), "inotify"), root
    assert out["files"] == 3, out
    assert out["daemon"]["queue_depth"] == 0, out

    table = env.cli("status").stdout
    assert re.search(rf"^daemon:\s+running, pid {daemon.pid}\b", table, re.M), table
    assert f"{env.root}: inotify" in table, table
    assert re.search(r"^files:\s+3 indexed", table, re.M), table

    assert daemon.stop() == 0
    out = env.status()
    assert out["daemon"]["running"] is False, out
    assert out["daemon"]["pid"] is None, out  # the writer lock was released
    table = env.cli("status").stdout
    assert re.search(r"^daemon:\s+not running$", table, re.M), table


# --- 4. check-config and exit code 78 --------------------------------------------------


def dedupd(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m dedupd ARGS`` with state under tmp_path, cwd elsewhere, and a deadline."""
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "dedupd", *map(str, args)],
        cwd=cwd,
        env=H.cli_environment(tmp_path),
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=DEADLINE,
        check=False,
    )


def test_check_config_prints_the_example_back_as_the_effective_config(tmp_path: Path) -> None:
    """config.example.yaml is valid, and since it spells out every default, the effective
    config printed is exactly the example (its root, which must exist, moved under tmp_path)."""
    text = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    assert "/srv/photos" in text
    photos = tmp_path / "srv" / "photos"
    photos.mkdir(parents=True)
    example = write(tmp_path / "example.yaml", text.replace("/srv/photos", str(photos)).encode())
    done = dedupd(tmp_path, "check-config", example)
    assert done.returncode == 0, done.stderr
    effective = yaml.safe_load(done.stdout)
    assert effective == yaml.safe_load(example.read_text(encoding="utf-8"))
    assert effective["match"]["near_distance"] == 10
    assert effective["roots"] == [str(photos)]


def test_check_config_fills_in_defaults_for_a_minimal_file(tmp_path: Path) -> None:
    """A minimal file exits 0 and prints YAML with its own values (relative roots resolved
    against the file) and every default filled in."""
    config = tmp_path / "etc" / "dedupd.yaml"
    write(config, b"roots: [photos]\nsettle_seconds: 7.5\nmatch:\n  rotations: false\n")
    (tmp_path / "etc" / "photos").mkdir()
    done = dedupd(tmp_path, "check-config", config)
    assert done.returncode == 0, done.stderr
    effective = yaml.safe_load(done.stdout)
    assert effective["roots"] == [str(tmp_path / "etc" / "photos")]
    assert effective["settle_seconds"] == 7.5
    assert effective["match"]["rotations"] is False
    assert effective["match"]["near_distance"] == 10
    assert effective["actions"] == {"exact": "log", "pixel": "log", "near": "log"}
    assert effective["workers"] == 0


BAD_CONFIGS = {
    "unknown_key": ("root: [/srv/photos]\n", "root"),
    "unknown_nested_key": ("match:\n  bogus: 1\n", "match.bogus"),
    "out_of_range": ("match:\n  near_distance: 99\n", "match.near_distance"),
    "wrong_type": ('workers: "two"\n', "workers"),
    "bad_enum": ("actions:\n  near: delete\n", "actions.near"),
    "quarantine_without_dir": ("actions:\n  exact: quarantine\n", "quarantine_dir"),
    "invalid_yaml": ("match: {near_distance: 10\nroots: [\n", None),
}


def config_error(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line's message (the command's last word on stderr)."""
    errors = [e for e in H.log_events(done.stderr) if e.get("level") == "error"]
    assert len(errors) == 1, done.stderr
    assert errors[0]["event"] == "dedupd_error" and errors[0]["exit_code"] == EX_CONFIG, errors
    return str(errors[0]["error"])


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_check_config_refuses_a_bad_file_with_78_naming_the_key(tmp_path: Path, case: str) -> None:
    """An invalid config exits 78, prints no YAML, and its error line names the file and the key."""
    text, key = BAD_CONFIGS[case]
    config = write(tmp_path / "bad.yaml", text.encode())
    done = dedupd(tmp_path, "check-config", config)
    assert done.returncode == EX_CONFIG, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    error = config_error(done)
    assert str(config) in error, error
    if key is None:
        assert "YAML" in error, error
    else:
        assert f"key '{key}'" in error, error


@pytest.mark.parametrize("case", ["unknown_nested_key", "invalid_yaml"])
def test_run_refuses_a_bad_config_with_78(env: Env, case: str) -> None:
    """`dedupd run --config BAD` exits 78 before watching anything, so that systemd's
    RestartPreventExitStatus=78 stops the restart loop."""
    text, key = BAD_CONFIGS[case]
    write(env.config_path, f"roots: [{env.root}]\n{text}".encode())
    daemon = env.start(ready=False)  # the config exists: it is used as it is
    assert daemon.proc.wait(DEADLINE) == EX_CONFIG, daemon.tail()
    [error] = daemon.events(level="error")
    assert (error["event"], error["exit_code"]) == ("dedupd_error", EX_CONFIG), error
    assert str(env.config_path) in error["error"], error
    assert key is None or f"key '{key}'" in error["error"], error
    assert not daemon.events("watching") and not daemon.events("daemon_ready"), daemon.tail()
    assert daemon.junk == [], daemon.junk
