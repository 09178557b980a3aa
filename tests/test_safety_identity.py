"""One identity per file and per directory; a quarantine that describes itself.

Each test is one reproduction from the adversarial run, against the real
CLI or a real ``dedupd run``: paths compared as text (a root reachable twice,
a symlinked root, reference and quarantine directories spelled through
symlinks, a restore through a replaced parent), a file under two names, a
lost or damaged store, an audit JSONL on a full device, a 255-byte name.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from daemon_helpers import (
    BASE_CONFIG,
    Daemon,
    Env,
    bind_mount,
    check_settled,
    cli,
    files_under,
    picture,
    restore_everything,
    scan,
    sha256,
    stray_temps,
    wait_until,
    write,
)
from helpers import png_chunk

from dedupd.audit import Audit
from dedupd.restore import adopt_records
from dedupd.store import Store

EX_CONFIG = 78
EX_IOERR = 74


def check_config(env: Env, **cfg: object) -> tuple[int, dict[str, object] | str]:
    env.config_path.write_text(yaml.safe_dump({**BASE_CONFIG, **cfg}), encoding="utf-8")
    code, out, err = cli(env, "check-config", str(env.config_path))
    return code, (yaml.safe_load(out) if code == 0 else err)


# --- 1. paths compared as text -------------------------------------------------------


def test_overlapping_and_misplaced_directories_are_merged_or_refused_with_78(env: Env) -> None:
    """A root listed again through a symlink alias is merged into one; a quarantine that is
    a root (directly or through a symlink), that holds a root, or that is missing, and a
    missing root, are each refused with 78 naming the key and the reason."""
    alias = env.base / "alias"
    alias.symlink_to(env.root, target_is_directory=True)
    (env.root / "sub").mkdir()
    code, out = check_config(env, roots=[str(env.root), str(alias), str(alias / "sub")],
                             quarantine_dir=str(env.quarantine))
    assert code == 0, out
    assert isinstance(out, dict) and out["roots"] == [str(env.root)]

    q_alias = env.base / "q-alias"
    q_alias.symlink_to(env.root, target_is_directory=True)
    refused = {
        "quarantine is the root": ({"roots": [str(env.root)], "quarantine_dir": str(env.root)}, "quarantine_dir"),
        "quarantine is the root via a symlink": (
            {"roots": [str(env.root)], "quarantine_dir": str(q_alias)}, "quarantine_dir"),
        "quarantine holds the root": ({"roots": [str(env.root)], "quarantine_dir": str(env.base)}, "quarantine_dir"),
        "quarantine missing": ({"roots": [str(env.root)], "quarantine_dir": str(env.base / "nope")}, "quarantine_dir"),
        "root missing": ({"roots": [str(env.base / "gone")], "quarantine_dir": str(env.quarantine)}, "roots"),
    }
    for case, (cfg, key) in refused.items():
        code, err = check_config(env, **cfg)
        assert code == EX_CONFIG, f"{case}: {code} {err}"
        assert f"key '{key}'" in str(err), f"{case}: {err}"


def test_the_same_directory_as_two_roots_through_a_bind_mount_is_refused(env: Env) -> None:
    """A root reachable twice (a bind mount listed as a second root), where every file
    would be its own duplicate: `dedupd run` exits 78 before touching anything."""
    twin = env.base / "twin"
    twin.mkdir()
    only = write(env.root / "only.jpg", picture(7500))
    with bind_mount(env.root, twin):
        daemon = env.start(ready=False, roots=[str(env.root), str(twin)])
        assert daemon.proc.wait(60) == EX_CONFIG, daemon.tail()
        assert "same directory" in daemon.tail()
    assert only.is_file() and not only.is_symlink()


def test_a_bind_mount_of_a_directory_inside_a_root_as_another_root_or_quarantine_is_refused(env: Env) -> None:
    """A directory inside a root, bind-mounted elsewhere and listed as a second root (either
    order) or as the quarantine: `run` and `check-config` exit 78 naming both directories,
    before touching anything (the mount table says it is one place on disk); a bind mount of
    a directory outside every root is an ordinary second root."""
    inner = env.root / "albums" / "2024"
    only = write(inner / "only.jpg", picture(7520))
    shown = env.base / "shown"
    shown.mkdir()
    elsewhere = env.base / "elsewhere"
    write(elsewhere / "e.jpg", picture(7521))
    other = env.base / "other"
    other.mkdir()
    with bind_mount(inner, shown):
        for roots in ([env.root, shown], [shown, env.root]):
            daemon = env.start(ready=False, roots=[str(r) for r in roots])
            assert daemon.proc.wait(60) == EX_CONFIG, daemon.tail()
            error = daemon.events("dedupd_error")[0]["error"]
            assert str(shown) in error and str(env.root) in error and "bind mount" in error, error
            code, err = check_config(env, roots=[str(r) for r in roots], quarantine_dir=str(env.quarantine))
            assert code == EX_CONFIG and "bind mount" in str(err) and "key 'roots'" in str(err), err
        code, err = check_config(env, roots=[str(env.root)], quarantine_dir=str(shown))
        assert code == EX_CONFIG and str(shown) in str(err) and "key 'quarantine_dir'" in str(err), err
    with bind_mount(elsewhere, other):
        code, out = check_config(env, roots=[str(env.root), str(other)], quarantine_dir=str(env.quarantine))
        assert code == 0, out
        assert isinstance(out, dict) and set(out["roots"]) == {str(env.root), str(other)}, out
    assert only.is_file() and not only.is_symlink()
    assert files_under(env.quarantine, records=True) == {}


def test_symlinked_root_and_quarantine_inside_it_work_by_real_path(env: Env) -> None:
    """A root given as a symlink is watched for real (a new duplicate is acted on without a
    restart), and a quarantine given through a symlink into that root is excluded by its
    real path: the duplicate is moved once, not again and again, and restore brings it back."""
    real_q = env.root / "q"
    real_q.mkdir()
    root_link = env.base / "root-link"
    root_link.symlink_to(env.root, target_is_directory=True)
    q_link = env.base / "q-link"
    q_link.symlink_to(real_q, target_is_directory=True)
    data = picture(7510)
    original = write(env.root / "a.jpg", data)
    daemon = env.start(roots=[str(root_link)], quarantine_dir=str(q_link))
    env.wait_indexed(original)
    dup = write(env.root / "b.jpg", data)
    wait_until(lambda: not dup.exists(), "the duplicate quarantined through the symlinked root")
    env.wait_idle(daemon, after=time.time() + 1.0)
    assert daemon.stop() == 0
    assert len(env.moves()) == 1, env.moves()
    assert files_under(real_q) == {real_q / "b.jpg": sha256(data)}
    code, out, err = cli(env, "restore", "--all")
    assert code == 0, out + err
    assert sha256(dup) == sha256(data) and files_under(real_q, records=True) == {}


def test_a_reference_directory_spelled_through_a_symlink_is_still_a_reference(env: Env) -> None:
    """reference_dirs given through a symlink while the root is spelled for real: the
    curated reference file stays, and the other copy is the one quarantined."""
    data = picture(7520)
    keep = write(env.root / "z-reference" / "keep.jpg", data)
    other = write(env.root / "a-inbox" / "copy.jpg", data)
    link = env.base / "ref-link"
    link.symlink_to(env.root / "z-reference", target_is_directory=True)
    env.write_config(actions={"exact": "quarantine"}, reference_dirs=[str(link)])
    assert scan(env)[0] == 0
    assert keep.is_file(), "a reference file was quarantined"
    assert not other.exists()


def test_one_file_under_two_names_is_never_its_own_duplicate(env: Env) -> None:
    """Two hard links to one file are one file: never symlinked to itself, never moved."""
    data = picture(7530)
    a = write(env.root / "a.jpg", data)
    b = env.root / "b.jpg"
    os.link(a, b)
    env.write_config(actions={"exact": "symlink"})
    assert scan(env)[0] == 0
    assert a.is_file() and b.is_file() and not a.is_symlink() and not b.is_symlink()
    assert env.moves() == []


def test_a_restore_refuses_a_parent_replaced_by_a_symlink_to_elsewhere(env: Env) -> None:
    """After the duplicate's directory is replaced by a symlink to a directory outside the
    roots, restore refuses (exit 3) and writes nothing there; put right, it restores."""
    data = picture(7540)
    write(env.root / "a.jpg", data)
    dup = write(env.root / "album" / "b.jpg", data)
    env.write_config(actions={"exact": "quarantine"})
    assert scan(env)[0] == 0 and not dup.exists()
    (env.root / "album").rmdir()
    (env.root / "album").symlink_to(env.outside, target_is_directory=True)
    code, out, _ = cli(env, "restore", "--all")
    assert code == 3 and "outside the watched roots" in out, out
    assert list(env.outside.iterdir()) == []
    (env.root / "album").unlink()
    restore_everything(env, {dup: data})


# --- 8. the store is not the only record ------------------------------------------


def test_with_the_store_lost_restore_from_quarantine_brings_every_file_back(env: Env) -> None:
    """Every quarantined file has a record beside it; with the store (and its WAL) deleted,
    `restore --from-quarantine DIR` puts each file back byte-identical (a record with a key
    from a later dedupd too)."""
    files = {}
    for i in range(3):
        data = picture(7550 + i)
        files[write(env.root / f"o{i}.jpg", data)] = data
        files[write(env.root / "copies" / f"c{i}.jpg", data)] = data
    env.write_config(actions={"exact": "quarantine"})
    assert scan(env)[0] == 0
    assert len(env.moves()) == 3
    # one record as a later dedupd may write it: a key this one does not know, left aside
    record = next(env.quarantine.rglob("*.dedupd.json"))
    record.write_text(json.dumps({**json.loads(record.read_text()), "written_later": {"x": 1}}))
    for p in env.db.parent.iterdir():
        p.unlink()
    code, out, err = cli(env, "restore", "--from-quarantine", str(env.quarantine))
    assert code == 0, out + err
    assert "3 restored" in out
    for path, data in files.items():
        assert sha256(path) == sha256(data)
    assert files_under(env.quarantine, records=True) == {}


def test_moves_whose_records_the_store_lost_are_adopted_back_on_start(env: Env) -> None:
    """The WAL deleted before a kill -9 (the store forgets the moves it held): on restart
    the daemon re-records each quarantined file from the record beside it, with a warning,
    and `restore --all` brings every file back."""
    files = {}
    data = picture(7570)
    files[write(env.root / "a.jpg", data)] = data
    daemon = env.start()
    env.wait_indexed(*files)
    for i in range(3):
        files[write(env.root / f"copy{i}.jpg", data)] = data
    # the moves done and committed (a copy shows in quarantine before its file is taken
    # from its path and the move committed: a kill then is another test's crash)
    wait_until(lambda: len(daemon.events("file_quarantined")) == 3, "three duplicates quarantined")
    assert len(files_under(env.quarantine)) == 3
    wal = env.db.with_name(env.db.name + "-wal")
    wal.unlink()
    daemon.kill()
    second = env.start()
    adopted = second.events("quarantine_record_adopted")
    assert second.stop() == 0
    assert len(adopted) == 3, second.tail()
    assert len(env.moves()) == 3, env.moves()
    restore_everything(env, files)


def test_moves_whose_rows_a_torn_checkpoint_kept_in_part_are_repaired_once_each(env: Env) -> None:
    """A store that lost its WAL in the middle of a checkpoint keeps some rows of a move
    and not others: whichever survived (audit row, intent, both, neither), adoption
    leaves exactly one done audit row with its intent per move, and all are restorable."""
    data = picture(7575)
    files = {write(env.root / "a.jpg", data): data}
    for i in range(4):
        files[write(env.root / f"copy{i}.jpg", data)] = data
    env.write_config()
    assert scan(env)[0] == 0
    done = "SELECT a.id, a.path FROM audit a WHERE a.action = 'quarantine' AND a.outcome = 'done'"
    moves = {Path(os.fsdecode(path)).name: audit_id for audit_id, path in env.query(done)}
    assert sorted(moves) == [f"copy{i}.jpg" for i in range(4)]
    store = Store.open(env.db)
    try:
        with store.atomic():  # what the main file holds when only some pages were checkpointed
            store.db.execute("DELETE FROM audit WHERE id = ?", [moves["copy0.jpg"]])  # the intent survived
            store.db.execute("DELETE FROM intents WHERE audit_id = ?", [moves["copy1.jpg"]])  # the audit row did
            store.db.execute("DELETE FROM intents WHERE audit_id = ?", [moves["copy2.jpg"]])  # neither did
            store.db.execute("DELETE FROM audit WHERE id = ?", [moves["copy2.jpg"]])
        assert adopt_records(store, Audit(store), env.quarantine) == 3
        assert adopt_records(store, Audit(store), env.quarantine) == 0  # repaired once
    finally:
        store.close()
    after = sorted(Path(os.fsdecode(path)).name for _, path in env.query(done))
    assert after == [f"copy{i}.jpg" for i in range(4)], after
    linked = env.query(
        "SELECT COUNT(*) FROM audit a JOIN intents i ON i.id = a.intent_id AND i.audit_id = a.id"
        " WHERE a.outcome = 'done' AND i.state = 'done'"
    )
    assert linked == [(4,)]
    restore_everything(env, files)


def test_a_damaged_store_stops_the_daemon_with_74(env: Env) -> None:
    """A store whose pages are damaged is refused at start with exit 74 and a clear line,
    instead of running on and losing records silently."""
    for i in range(40):
        write(env.root / f"f{i}.jpg", picture(7560 + i, size=(64, 48)))
    env.write_config()
    assert scan(env)[0] == 0
    size = env.db.stat().st_size
    with open(env.db, "r+b") as f:  # keep the header page, scribble over the rest
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    daemon = env.start(ready=False)
    assert daemon.proc.wait(60) == EX_IOERR, daemon.tail()
    assert "damaged" in daemon.tail() or "malformed" in daemon.tail(), daemon.tail()


def test_after_a_clean_stop_the_store_is_checked_beside_the_start(env: Env) -> None:
    """quick_check reads the whole store (seconds at a million files): after a clean
    stop the daemon is READY first and checks in the background; after a kill it
    checks before READY."""
    write(env.root / "a.jpg", picture(7580))
    first = env.start()
    env.wait_indexed(env.root / "a.jpg")
    first.kill()  # not a clean stop: the next start checks first
    second = env.start()
    order = [e["event"] for e in second.read_log() if e["event"] in ("store_checked", "daemon_ready")]
    assert order == ["store_checked", "daemon_ready"], second.tail()
    assert second.events("store_checked")[0]["before_start"] is True
    assert second.stop() == 0
    third = env.start()  # after a clean stop
    wait_until(lambda: third.events("store_checked"), "the background check")  # logged by that thread only
    assert third.events("store_checked")[0]["damaged"] is False
    assert third.events("store_checked")[0]["before_start"] is False
    assert third.stop() == 0


def test_a_long_check_before_the_start_keeps_systemd_waiting(env: Env, tmp_path: Path) -> None:
    """After a kill the store is checked before READY; at tens of millions of files
    that takes minutes, past systemd's start timeout and the watchdog. Meanwhile the
    daemon tells systemd (a real datagram socket as NOTIFY_SOCKET) that the start goes
    on (EXTEND_TIMEOUT_USEC), that it is alive (WATCHDOG=1) and what it does (STATUS),
    before READY=1."""
    import socket  # noqa: PLC0415

    write(env.root / "a.jpg", picture(7585))
    first = env.start()
    env.wait_indexed(env.root / "a.jpg")
    first.kill()
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(env.tmpdir / "notify.sock")
    manager.bind(address)
    manager.settimeout(30)
    argv = [sys.executable, "-m", "dedupd", "run", "--config", str(env.config_path), "--db", str(env.db),
            "--log-format", "json"]  # fmt: skip
    slow = {**env.env, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000",
            "DEDUPD_FAULT": "store.check:sleep=12"}  # fmt: skip
    second = Daemon(argv, env.log_path, slow, env.base)
    env.daemons.append(second)
    try:
        heard: list[bytes] = []
        while not any(b"READY=1" in m for m in heard):
            heard.append(manager.recv(4096))
        before = b"\n".join(heard[:-1])
        assert before.count(b"EXTEND_TIMEOUT_USEC=") >= 2 and before.count(b"WATCHDOG=1") >= 2, heard
        assert b"STATUS=checking the store" in before, heard
        assert [e["event"] for e in second.read_log() if e["event"] in ("store_checked", "daemon_ready")] == [
            "store_checked", "daemon_ready"]  # fmt: skip
    finally:
        manager.close()
    assert second.stop() == 0


def test_a_store_damaged_after_a_clean_stop_still_stops_the_daemon_with_74(env: Env) -> None:
    """Damage found by the background check (or earlier, by any read) stops the daemon
    with 74, and the next start checks before anything else."""
    for i in range(40):
        write(env.root / f"f{i}.jpg", picture(7590 + i, size=(64, 48)))
    daemon = env.start()
    env.wait_indexed(*(env.root / f"f{i}.jpg" for i in range(40)))
    assert daemon.stop() == 0
    size = env.db.stat().st_size
    with open(env.db, "r+b") as f:  # keep the first half, scribble over the rest
        f.seek(size // 2 // 4096 * 4096)
        f.write(os.urandom(size - size // 2 // 4096 * 4096))
    again = env.start(ready=False)
    assert again.proc.wait(60) == EX_IOERR, again.tail()
    assert "damaged" in again.tail() or "malformed" in again.tail(), again.tail()


# --- 7. the JSONL mirror ------------------------------------------------------------


def test_an_unwritable_audit_jsonl_never_stops_the_daemon(env: Env) -> None:
    """audit_jsonl on a full device (/dev/full): every write fails with ENOSPC; the daemon
    logs it and goes on quarantining, and the store keeps every row."""
    data = picture(7600)
    original = write(env.root / "a.jpg", data)
    daemon = env.start(audit_jsonl="/dev/full")
    env.wait_indexed(original)
    dups = [write(env.root / f"dup{i}.jpg", data) for i in range(3)]
    wait_until(lambda: not any(p.exists() for p in dups), "three duplicates quarantined")
    assert daemon.alive()
    assert daemon.events("audit_jsonl_write_failed")
    assert daemon.stop() == 0
    assert len(env.moves()) == 3


def test_rows_written_while_settling_intents_reach_the_jsonl(env: Env) -> None:
    """A move killed after the file was taken (its copy placed) is completed on the next start, and that
    row reaches audit_jsonl like any other."""
    jsonl = env.base / "audit.jsonl"
    data = picture(7610)
    files = {write(env.root / "a.jpg", data): data, write(env.root / "b.jpg", data): data}
    env.write_config(actions={"exact": "quarantine"}, audit_jsonl=str(jsonl))
    assert scan(env, fault="quarantine.after_take:kill")[0] != 0
    assert scan(env)[0] == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert any("completed after an interruption" in str(r["detail"]) for r in rows), rows
    check_settled(env, files)


# --- 11. smaller ----------------------------------------------------------------------


def test_a_255_byte_name_is_symlinked_and_restored_without_strays(env: Env) -> None:
    """The longest name a filesystem allows, with the symlink action: its private names and
    its quarantine record fit within NAME_MAX, nothing stray is left, restore works."""
    data = picture(7620)
    original = write(env.root / "a.jpg", data)
    long_name = "x" * (255 - len(".jpg")) + ".jpg"
    dup = write(env.root / long_name, data)
    env.write_config(actions={"exact": "symlink"})
    assert scan(env)[0] == 0
    assert dup.is_symlink(), env.audit()
    assert stray_temps(env.root, env.quarantine) == []
    assert len(files_under(env.quarantine, records=True)) == 2  # the file and its record
    restore_everything(env, {original: data, dup: data})


def test_a_zero_by_zero_png_is_corrupt_and_status_reads_a_store_in_a_read_only_directory(env: Env) -> None:
    """A 0x0 PNG is recorded as corrupt (not 'unknown format'); `dedupd status` on a store
    whose directory is mounted read-only answers (exit 0) instead of a traceback."""
    header = struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)
    empty_png = write(env.root / "nothing.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b""))
    env.write_config()
    assert scan(env)[0] == 3
    rec = env.record(empty_png)
    assert rec is not None and rec["error"] == "corrupt", rec
    done = subprocess.run(["mount", "--bind", str(env.db.parent), str(env.db.parent)], check=False, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr!r}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(env.db.parent)], check=True)
        code, out, err = cli(env, "status")
        assert code == 0, out + err
        assert "1 errors" in out, out
    finally:
        subprocess.run(["umount", str(env.db.parent)], check=False)


def test_renumbering_keeps_records_whose_names_are_as_long_as_a_name_can_be(tmp_path: Path) -> None:
    """``dedupd migrate`` rewrites the record beside each quarantined file with its move's
    new ids (written under a private name, then renamed over the old): a quarantined
    name of 250 bytes, whose record name is at NAME_MAX already, is rewritten too, with
    the old record's mode, and nothing else is left in the directory."""
    from dedupd import sidecar  # noqa: PLC0415

    quarantine = tmp_path / "q"
    names = ["short.jpg", "x" * 246 + ".jpg"]
    for i, name in enumerate(names):
        moved = quarantine / name
        moved.parent.mkdir(exist_ok=True)
        moved.write_bytes(b"picture")
        sidecar.write(moved, sidecar.QuarantineRecord(
            file=name, path=f"/lib/{name}", root="/lib", action="quarantine", sha256="ab" * 32,
            original="/lib/o.jpg", original_sha256="cd" * 32, link_target=None, intent_id=i + 1,
            audit_id=None, at=0.0,
        ))  # fmt: skip
        os.chmod(sidecar.record_path(moved), 0o640)
    before = sorted(p.name for p in quarantine.iterdir())
    changed = sidecar.renumber(quarantine, lambda at, rec: (rec.intent_id + 100, None))
    assert changed == 2
    assert sorted(p.name for p in quarantine.iterdir()) == before
    for at, rec in sidecar.walk(quarantine):
        assert rec.intent_id in (101, 102) and rec.path == f"/lib/{at.name}"
        assert sidecar.record_path(at).stat().st_mode & 0o777 == 0o640
    assert sidecar.renumber(quarantine, lambda at, rec: (rec.intent_id, None)) == 0  # again: nothing to do


def test_migrate_from_a_store_that_is_not_there_creates_nothing(tmp_path: Path) -> None:
    """A mistyped --db is refused (66) before any store is opened, not created empty and copied."""
    missing = tmp_path / "no-such-dir" / "dedupd.db"
    result = subprocess.run(
        [sys.executable, "-m", "dedupd", "migrate", "--to", "postgresql://nobody@/nothing", "--db", str(missing)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 66, result.stdout + result.stderr
    assert not missing.parent.exists()


def test_a_reload_or_a_stop_during_the_check_before_the_start(env: Env) -> None:
    """The check before the start may take minutes: a SIGHUP then (dedupd reload) does
    not kill the daemon, which goes on to READY; a SIGTERM ends it with exit 0, before
    READY and with nothing touched."""
    import signal  # noqa: PLC0415

    write(env.root / "a.jpg", picture(7587))
    first = env.start()
    env.wait_indexed(env.root / "a.jpg")
    first.kill()
    argv = [sys.executable, "-m", "dedupd", "run", "--config", str(env.config_path), "--db", str(env.db),
            "--log-format", "json"]  # fmt: skip
    slow = {**env.env, "DEDUPD_FAULT": "store.check:sleep=4"}
    reloaded = Daemon(argv, env.log_path, slow, env.base)
    env.daemons.append(reloaded)
    reloaded.wait_event("store_check_started")
    reloaded.proc.send_signal(signal.SIGHUP)
    reloaded.wait_ready()
    assert reloaded.stop() == 0
    # the stop above was clean: killed again, so that the next start checks first
    again = env.start()
    again.kill()
    stopped = Daemon(argv, env.log_path, slow, env.base)
    env.daemons.append(stopped)
    stopped.wait_event("store_check_started")
    stopped.proc.send_signal(signal.SIGTERM)
    assert stopped.proc.wait(3) == 0, stopped.tail()
    assert stopped.events("daemon_ready") == []
