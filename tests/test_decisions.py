"""Decisions that stick: "not duplicates" is about two files, and a restore is final."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers as H
from daemon_helpers import Env, files_under, sha256, wait_until

from dedupd.actions import KEPT

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _groups(run_cli: RunCli) -> dict[str, list[str]]:
    """original -> its duplicates (actionable tiers only)."""
    data: list[dict[str, Any]] = json.loads(run_cli("groups", "--format", "json").stdout)
    return {g["original"]: sorted(d["path"] for d in g["duplicates"] if d["tier"] != "similar") for g in data}


def test_not_duplicates_is_about_two_files_and_survives_renames_and_reuploads(tmp_path: Path, run_cli: RunCli) -> None:
    """'ignore A B' on two exact copies keeps them apart across a rename and a re-upload of B,
    while a third copy of the same picture elsewhere is still grouped; 'ignores remove'
    takes the decision back and they are grouped again."""
    root = tmp_path / "lib"
    data = H.encode(H.photo(41), "JPEG", quality=90)
    a, b = _put(root / "a.jpg", data), _put(root / "b.jpg", data)
    assert run_cli("scan", root).returncode == 0
    assert _groups(run_cli) == {str(a): [str(b)]}
    done = run_cli("ignore", a, b)
    assert done.returncode == 0 and "recorded: not duplicates" in done.stdout, done.stderr
    assert _groups(run_cli) == {}

    b2 = root / "renamed" / "b2.jpg"
    b2.parent.mkdir()
    b.rename(b2)  # followed by inode: the decision follows the file
    c = _put(root / "other" / "c.jpg", data)  # a new copy of the same picture
    assert run_cli("scan", root).returncode == 0
    assert _groups(run_cli) == {str(a): [str(c)]}

    b2.unlink()
    _put(b2, data)  # the same file saved again (a new inode)
    assert run_cli("scan", root).returncode == 0
    assert _groups(run_cli) == {str(a): [str(c)]}

    [decision] = json.loads(run_cli("ignores", "list", "--format", "json").stdout)
    assert decision["kind"] == "not_duplicates" and decision["decided_by"] == "cli"
    assert {decision["path"], decision["other_path"]} == {str(a), str(b2)}
    assert decision["time"][:4].isdigit() and ("+" in decision["time"][10:] or "-" in decision["time"][10:])
    removed = run_cli("ignores", "remove", str(decision["id"]))
    assert removed.returncode == 0, removed.stderr
    assert _groups(run_cli) == {str(a): sorted([str(b2), str(c)])}
    assert json.loads(run_cli("ignores", "list", "--format", "json").stdout) == []
    assert run_cli("ignores", "remove", "999").returncode == 66


def test_restore_while_the_daemon_runs_is_final(env: Env) -> None:
    """Two copies of a picture (a resized one and its exact copy) quarantined by the daemon
    and restored with 'restore --all' while it runs are left alone: they find each other
    as duplicates, and the daemon skips them as kept instead of moving one again."""
    original = _put(env.root / "a.jpg", H.encode(H.photo(61), "JPEG", quality=92))
    small = H.encode(H.photo(61).resize((192, 144)), "JPEG", quality=92)
    daemon = env.start(actions={"exact": "quarantine", "pixel": "quarantine", "near": "quarantine"})
    env.wait_indexed(original)
    d1 = _put(env.root / "d1.jpg", small)
    wait_until(lambda: not d1.exists(), "d1 quarantined")
    d2 = _put(env.root / "sub" / "d2.jpg", small)
    wait_until(lambda: len(env.moves()) == 2, "both copies quarantined", interval=0.25)

    env.restore_all()
    assert d1.is_file() and d2.is_file()
    event = daemon.wait_event("action_skipped", reason=KEPT)
    assert event["path"] in (str(d1), str(d2)) and event["original"] in (str(d1), str(d2))
    assert d1.is_file() and d2.is_file() and sha256(d1) == sha256(d2) == sha256(small)
    assert len(env.moves()) == 2 and files_under(env.quarantine) == {}
    kept = json.loads(env.cli("ignores", "list", "--format", "json").stdout)
    assert sorted(d["path"] for d in kept if d["kind"] == "keep") == sorted([str(d1), str(d2)])
    assert all(d["decided_by"] == "cli" for d in kept)
    assert [r["decided_by"] for r in env.audit() if r["action"] == "restore"] == ["cli", "cli"]
    assert daemon.stop() == 0


def test_readers_work_on_a_store_from_before_hosts(tmp_path: Path, run_cli: RunCli, db_path: Path) -> None:
    """A store whose migrations stop before hosts were added (as one is until a writer
    opens it after an upgrade) is read by the read-only commands: groups, errors,
    status and audit; the first writer then migrates it and its files stay this host's."""
    import sqlite_utils

    from dedupd.store.sqlite import Store, schema_migrations

    root = tmp_path / "lib"
    data = H.encode(H.photo(43), "JPEG")
    _put(root / "a.jpg", data)
    _put(root / "b.jpg", data)
    _put(root / "bad.jpg", b"not a picture")
    # a store as the migrations before m016 leave it, filled with what a scan stores
    fresh = tmp_path / "old.db"
    db = sqlite_utils.Database(fresh)
    schema_migrations().apply(db, stop_before="m016_hosts")
    db.close()
    conn = sqlite3.connect(fresh)
    assert "host" not in {r[1] for r in conn.execute("PRAGMA table_info(files)")}
    conn.close()
    assert run_cli("scan", root, db=db_path).returncode == 3  # finished, one file skipped
    src, dst = sqlite3.connect(db_path), sqlite3.connect(fresh)
    for table in ("files", "matches", "audit"):
        columns = [r[1] for r in dst.execute(f"PRAGMA table_info({table})")]
        rows = src.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
        dst.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    dst.commit()
    src.close()
    dst.close()
    groups = run_cli("groups", "--format", "json", db=fresh)
    assert groups.returncode == 0, groups.stderr
    [group] = json.loads(groups.stdout)
    assert group["original"] == str(root / "a.jpg") and [d["path"] for d in group["duplicates"]] == [str(root / "b.jpg")]
    errors = run_cli("errors", db=fresh)
    assert errors.returncode == 0 and "bad.jpg" in errors.stdout, errors.stdout + errors.stderr
    status = run_cli("status", "--format", "json", db=fresh)
    assert status.returncode == 0 and json.loads(status.stdout)["files"] == 2, status.stderr
    assert run_cli("audit", "--format", "json", db=fresh).returncode == 0
    store = Store.open(fresh)  # a writer migrates it: its files are this host's
    try:
        assert store.record_for_path(root / "a.jpg") is not None
    finally:
        store.close()


def test_readers_work_on_a_store_no_writer_has_migrated_yet(tmp_path: Path, run_cli: RunCli, db_path: Path) -> None:
    """'dedupd audit' and 'dedupd ignores' (read-only: they cannot migrate) work on a store
    from before decisions and decided_by, as one is until a writer opens it after an upgrade."""
    root = tmp_path / "lib"
    data = H.encode(H.photo(43), "JPEG")
    _put(root / "a.jpg", data)
    _put(root / "b.jpg", data)
    assert run_cli("scan", root).returncode == 0
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TABLE decisions")
    conn.execute("ALTER TABLE audit DROP COLUMN decided_by")
    conn.commit()
    conn.close()
    listed = run_cli("ignores", "list")
    assert listed.returncode == 0 and "0 decisions" in listed.stdout, listed.stderr
    [row] = json.loads(run_cli("audit", "--format", "json").stdout)
    assert row["decided_by"] is None and row["action"] == "log"
