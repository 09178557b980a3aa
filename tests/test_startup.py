"""The start-up check: every root readable, the store, quarantine and audit log writable.

Permissions are the kernel's own: a check that must see "no permission" runs
in a forked child that has dropped to the ``nobody`` user, and a read-only
file system is a real read-only bind mount (both need root; those cases skip
otherwise).  ``dedupd run`` and ``dedupd reload`` are run as real processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dedupd import startup
from dedupd.config import ActionSettings, Config
from dedupd.errors import ConfigError
from dedupd.models import Action

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534
EX_CONFIG = 78
EX_UNAVAILABLE = 69
TIMEOUT = 60

MOVES = ActionSettings(exact=Action.QUARANTINE)


def config(tmp_path: Path, **overrides: object) -> Config:
    roots = (tmp_path / "photos",)
    for root in roots:
        root.mkdir(exist_ok=True)
    values: dict[str, object] = {
        "roots": roots, "quarantine_dir": tmp_path / "quarantine", "actions": MOVES, **overrides
    }
    return Config(**values)  # type: ignore[arg-type]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may search (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="dedupd-startup-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def found(cfg: Config, db: Path) -> list[tuple[str, str, str]]:
    return [(p.key, str(p.path), p.why) for p in startup.problems(cfg, db)]


def as_nobody(cfg: Config, db: Path) -> list[tuple[str, str, str]]:
    """The problems the check finds when run by the unprivileged user ``nobody`` (a forked child)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the nobody user")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody for good, check, report, exit
        try:
            os.close(read)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            os.write(write, json.dumps(found(cfg, db)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return [tuple(p) for p in json.loads(data)]  # type: ignore[misc]


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` bind-mounted read-only onto itself for the duration (needs root; skips otherwise)."""
    done = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True, capture_output=True)
        yield
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_usable_setup_passes(tmp_path: Path) -> None:
    """Readable roots and a quarantine and store that can be created raise nothing."""
    startup.check(config(tmp_path), tmp_path / "state" / "dedupd.db")


def test_a_missing_and_a_non_directory_root_are_named(tmp_path: Path) -> None:
    """A root that does not exist and one that is a file are each reported with their path."""
    (tmp_path / "file").write_text("x")
    cfg = config(tmp_path, roots=(tmp_path / "gone", tmp_path / "file"))
    assert found(cfg, tmp_path / "db") == [
        ("roots", str(tmp_path / "gone"), "does not exist"),
        ("roots", str(tmp_path / "file"), "not a directory"),
    ]


def test_check_raises_78_naming_every_path(tmp_path: Path) -> None:
    """check() raises one ConfigError (exit 78) that names the config file, the user and each path."""
    source = tmp_path / "dedupd.yaml"
    cfg = config(tmp_path, roots=(tmp_path / "gone",), quarantine_dir=tmp_path / "file" / "q", source=source)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as info:
        startup.check(cfg, tmp_path / "db")
    message = info.value.message
    assert info.value.exit_code == EX_CONFIG
    assert str(source) in message and "uid" in message, message
    assert f"roots {tmp_path / 'gone'}: does not exist" in message, message
    assert f"quarantine_dir {tmp_path / 'file' / 'q'}: does not exist, and {tmp_path / 'file'} is not a directory" in message


def test_an_unreadable_root_is_named(open_dir: Path) -> None:
    """A root the user may not list is reported as unreadable."""
    cfg = config(open_dir, actions=ActionSettings())
    os.chmod(open_dir, 0o755)
    os.chmod(open_dir / "photos", 0o700)
    problems = as_nobody(cfg, open_dir / "nobody-db" / "dedupd.db")
    assert ("roots", str(open_dir / "photos"), "no permission to read it") in problems, problems


def test_roots_must_be_writable_only_when_an_action_moves_files(open_dir: Path) -> None:
    """A read-only root is fine when every action is log, and named when duplicates are quarantined."""
    os.chmod(open_dir, 0o777)
    (open_dir / "photos").mkdir()
    os.chmod(open_dir / "photos", 0o755)
    db = open_dir / "db" / "dedupd.db"
    log_only = config(open_dir, actions=ActionSettings())
    assert as_nobody(log_only, db) == []
    moving = config(open_dir)
    assert as_nobody(moving, db) == [
        ("roots", str(open_dir / "photos"),
         "no permission to write it (quarantine and symlink move files out of it)"),
    ]


def test_quarantine_on_a_read_only_mount_is_named_with_the_systemd_hint(tmp_path: Path) -> None:
    """A quarantine on a read-only file system (as outside ReadWritePaths=) is named, with the reason."""
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    cfg = config(tmp_path)
    with read_only(quarantine):
        problems = found(cfg, tmp_path / "db")
    assert problems == [
        ("quarantine_dir", str(quarantine),
         "read-only file system here (under systemd: not in the unit's ReadWritePaths=)"),
    ]


def test_a_quarantine_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    """A missing quarantine is fine if it can be made, and named if its parent is not writable."""
    parent = tmp_path / "srv"
    parent.mkdir()
    cfg = config(tmp_path, quarantine_dir=parent / "a" / "quarantine")
    assert found(cfg, tmp_path / "db") == []
    with read_only(parent):
        problems = found(cfg, tmp_path / "db")
    assert problems == [
        ("quarantine_dir", str(parent / "a" / "quarantine"),
         f"does not exist, and cannot be made in {parent}: "
         "read-only file system here (under systemd: not in the unit's ReadWritePaths=)"),
    ]


def test_store_and_audit_log_must_be_writable(open_dir: Path) -> None:
    """A store file the user cannot write, and an audit log in a read-only directory, are named."""
    state = open_dir / "state"
    state.mkdir()
    db = state / "dedupd.db"
    db.write_bytes(b"")
    os.chmod(open_dir, 0o755)
    os.chmod(state, 0o777)
    os.chmod(db, 0o644)
    logs = open_dir / "logs"
    logs.mkdir()
    os.chmod(logs, 0o755)
    cfg = config(open_dir, actions=ActionSettings(), audit_jsonl=logs / "audit.jsonl")
    assert as_nobody(cfg, db) == [
        ("db", str(db), "no permission to write it"),
        ("audit_jsonl", str(logs / "audit.jsonl"), f"its directory {logs}: no permission to write it"),
    ]


# --- through the command line ------------------------------------------------------


def dedupd(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "STATE_DIRECTORY")}
    env.update(PYTHONPATH=str(REPO), XDG_STATE_HOME=str(tmp_path / "xdg"), LC_ALL="C.UTF-8")
    return subprocess.run(
        [sys.executable, "-m", "dedupd", *map(str, args)],
        capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=tmp_path, check=False,
    )


def write_config(tmp_path: Path, **values: object) -> Path:
    path = tmp_path / "dedupd.yaml"
    (tmp_path / "photos").mkdir(exist_ok=True)
    (tmp_path / "quarantine").mkdir(exist_ok=True)  # run and reload refuse a missing one
    body = {"roots": [str(tmp_path / "photos")], "quarantine_dir": str(tmp_path / "quarantine"),
            "actions": {"exact": "quarantine"}, **values}
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def test_run_refuses_an_unwritable_quarantine_with_78_and_creates_no_store(tmp_path: Path) -> None:
    """dedupd run exits 78 naming the quarantine, before it makes the store."""
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    cfg = write_config(tmp_path)
    db = tmp_path / "state" / "dedupd.db"
    with read_only(quarantine):
        done = dedupd(tmp_path, "run", "--log-format", "json", "--config", cfg, "--db", db)
    assert done.returncode == EX_CONFIG, done.stderr
    [error] = [json.loads(line) for line in done.stderr.splitlines() if '"dedupd_error"' in line]
    assert f"quarantine_dir {quarantine}: read-only file system" in error["error"], error
    assert not db.parent.exists()


@contextlib.contextmanager
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process that SIGHUP ends (its default action): whether it got one is its return code.

    It sets SIGHUP's default action itself: an ignored signal is inherited across
    exec, so under nohup a plain ``sleep`` would ignore it."""
    code = "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); print('ready', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)


def test_reload_checks_the_config_before_it_signals(tmp_path: Path) -> None:
    """dedupd reload refuses a bad config with 78 and leaves the daemon alone; a good one sends SIGHUP."""
    db = tmp_path / "state" / "dedupd.db"
    bad = write_config(tmp_path, no_such_key=1)
    with sleeper() as proc:
        done = dedupd(tmp_path, "reload", "--pid", str(proc.pid), "--config", bad, "--db", db)
        assert done.returncode == EX_CONFIG, done.stderr
        assert "no_such_key" in done.stderr
        assert proc.poll() is None, "signalled despite the bad config"
        good = write_config(tmp_path)
        done = dedupd(tmp_path, "reload", "--pid", str(proc.pid), "--config", good, "--db", db)
        assert done.returncode == 0, done.stderr
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGHUP


def test_reload_of_no_process_exits_69(tmp_path: Path) -> None:
    """dedupd reload names a process ID that no longer runs and exits 69."""
    with sleeper() as proc:
        pid = proc.pid
    done = dedupd(tmp_path, "reload", "--pid", str(pid), "--config", write_config(tmp_path))
    assert done.returncode == EX_UNAVAILABLE, done.stderr
    assert f"pid {pid}" in done.stderr
