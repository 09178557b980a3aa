"""Faults against a real ``dedupd run``: SIGKILL in the middle of quarantining, and bad inputs.

The crash test kills the daemon (and its workers) at a random moment, seeded
per iteration, while a burst of duplicates is being quarantined; restarts it;
and checks that every file is accounted for: at its path, or in quarantine
with a ``done`` audit row that says so, never both, never neither, with no
temporary file left behind and nothing pending.  The bad-input test feeds a
running daemon everything a careless client can drop into a folder.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import tempfile
import time
from pathlib import Path

import pytest
from daemon_helpers import (
    Daemon,
    Env,
    daemon_env,
    files_under,
    picture,
    sha256,
    snapshot,
    stray_temps,
    wait_until,
    write,
)
from helpers import png_bomb, png_chunk

ALL_QUARANTINE = {"exact": "quarantine", "pixel": "quarantine", "near": "quarantine"}


# --- kill -9 -------------------------------------------------------------------------

PAIRS = 30
CRASH_ITERATIONS = 10
SEED = 20261122


def shm_dir() -> Path | None:
    """A fresh directory on a filesystem other than /tmp's, if there is one."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        return None
    return Path(tempfile.mkdtemp(prefix="dedupd-test-q-", dir=shm))


def kill_during_quarantines(daemon: Daemon, rng: random.Random) -> None:
    """SIGKILL the daemon at a random moment of the ~0.3 s after it found its first
    duplicate: the quarantine phase of a burst of this size on a warm daemon."""
    wait_until(lambda: daemon.events("duplicate_found"), "the first duplicate")
    time.sleep(rng.uniform(0.0, 0.3))  # the moment of the crash, not a wait for an outcome
    daemon.kill()


def account_for_everything(env: Env, expected: dict[Path, bytes]) -> None:
    """Each file is exactly once either at its path or in quarantine under a done audit
    row naming it; quarantine holds nothing else; no temp file, no pending intent."""
    moves = env.moves()
    by_path: dict[str, list[dict[str, object]]] = {}
    for row in moves:
        by_path.setdefault(str(row["path"]), []).append(row)
    quarantined = files_under(env.quarantine)
    for path, data in expected.items():
        digest = sha256(data)
        rows = by_path.get(str(path), [])
        at_path = os.path.lexists(path)
        if at_path:
            assert path.is_file() and not path.is_symlink() and sha256(path) == digest, (
                f"{path} changed"
            )
            assert rows == [], f"{path} is in place but has a done move: {rows}"
        else:
            assert len(rows) == 1, f"{path} is gone, with {len(rows)} done moves: lost"
            dest = Path(str(rows[0]["destination"]))
            assert quarantined.get(dest) == digest, (
                f"{path}: its quarantine copy {dest} is missing or differs"
            )
            assert rows[0]["sha256"] == digest
    destinations = {Path(str(r["destination"])) for r in moves}
    assert set(quarantined) == destinations, "quarantine holds files no done move accounts for"
    assert stray_temps(env.root, env.quarantine) == [], "temporary files left behind"
    states = dict(env.query("SELECT state, COUNT(*) FROM intents GROUP BY state"))
    assert states.get("pending", 0) == 0, f"intents left pending: {states}"


@pytest.mark.parametrize("iteration", range(CRASH_ITERATIONS))
def test_sigkill_during_quarantines_loses_nothing(tmp_path: Path, iteration: int) -> None:
    """Killed with SIGKILL at a random moment while quarantining a burst of 30 pairs
    (odd iterations: quarantine on another filesystem, so moves are copy + verify +
    unlink), then restarted: every file is accounted for exactly once, and restore
    brings every byte back."""
    rng = random.Random(SEED + iteration)
    other = shm_dir() if iteration % 2 else None
    try:
        with daemon_env(tmp_path) as env:
            if other is not None:
                env.quarantine = other
            expected = {}
            for i in range(PAIRS):
                data = picture(500 + i)
                expected[env.root / f"o{i:02}.jpg"] = data
                expected[env.root / "copies" / f"c{i:02}.jpg"] = data
            first = env.start(workers=2, actions=ALL_QUARANTINE)
            for path, data in expected.items():
                write(path, data)
            kill_during_quarantines(first, rng)

            second = env.start()
            second.wait_event("catch_up_finished", root=env.root)
            env.wait_idle(second, after=time.time())
            assert second.events("intent_unresolved") == []
            assert second.stop() == 0
            assert second.junk == [], "the daemon wrote something that is not a JSON log line"

            account_for_everything(env, expected)
            env.restore_all()
            for path, data in expected.items():
                assert path.is_file() and sha256(path) == sha256(data), f"{path} not restored"
            assert files_under(env.quarantine) == {}
    finally:
        if other is not None:
            shutil.rmtree(other, ignore_errors=True)


# --- bad inputs ----------------------------------------------------------------------


def broken_huffman_table(jpeg: bytes) -> bytes:
    """The JPEG with the code counts of its first Huffman table overwritten: undecodable.

    (A PNG with damaged IDAT bytes would be the classic case, but it is fingerprinted
    from garbage pixels: a known hashing bug, see test_hashing.py.)
    """
    at = jpeg.index(b"\xff\xc4") + 5
    return jpeg[:at] + b"\xff" * 16 + jpeg[at + 16 :]


def header_only_bomb(width: int, height: int) -> bytes:
    """A PNG that is only a header claiming ``width`` x ``height`` pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")


def test_bad_inputs_are_skipped_with_a_reason_and_the_daemon_carries_on(env: Env) -> None:
    """Corrupt, truncated, empty, non-image and oversized files are each logged as
    file_skipped with their reason; a FIFO, a file that vanished, and symlinks to an image
    and a directory outside the root are left alone (never moved, never followed); names
    that are not UTF-8 or hold a newline are handled like any other; afterwards the daemon
    still runs and still quarantines a plain duplicate."""
    good = picture(200)
    original = write(env.root / "original.jpg", good)
    daemon = env.start(max_pixels=10_000_000)
    env.wait_indexed(original)

    png = picture(201, "PNG")
    jpeg = picture(202)
    skipped = {
        write(env.root / "corrupt.jpg", broken_huffman_table(jpeg)): "corrupt",
        write(env.root / "truncated.jpg", jpeg[: len(jpeg) // 2]): "corrupt",
        write(env.root / "truncated.png", png[: len(png) * 3 // 5]): "corrupt",
        write(env.root / "empty.jpg", b""): "empty",
        write(env.root / "notes.jpg", b"shopping list: milk, eggs\n" * 20): "not_an_image",
        write(env.root / "bomb.png", png_bomb(4000, 4000)): "too_many_pixels",
        write(env.root / "header-bomb.png", header_only_bomb(100_000, 100_000)): "too_many_pixels",
    }
    contents = {p: sha256(p) for p in skipped}

    fifo = env.root / "pipe.jpg"
    os.mkfifo(fifo)
    vanished = write(env.root / "vanished.jpg", good)
    vanished.unlink()
    outside_image = write(env.outside / "elsewhere.jpg", good)
    outside_dir_copy = write(env.outside / "album" / "inside.jpg", good)
    outside_before = {p: snapshot(p) for p in (outside_image, outside_dir_copy)}
    link = env.root / "link.jpg"
    link.symlink_to(outside_image)
    dir_link = env.root / "album-link"
    dir_link.symlink_to(outside_dir_copy.parent, target_is_directory=True)
    raw_name = os.path.join(os.fsencode(env.root), b"bad\xff.jpg")
    fd = os.open(raw_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, good)
    finally:
        os.close(fd)
    bad_name = Path(os.fsdecode(raw_name))
    newline_name = write(env.root / "two\nlines.jpg", good)

    for path, reason in skipped.items():
        event = daemon.wait_event("file_skipped", path=path)
        assert event["reason"] == reason, f"{path.name}: {event}"
    last = write(env.root / "after the bad ones.jpg", good)
    dups = [bad_name, newline_name, last]
    wait_until(
        lambda: all(not os.path.lexists(p) for p in dups), "the three duplicates quarantined"
    )

    assert daemon.alive()
    # what was skipped is in place, unchanged, and recorded with its reason
    assert {p: sha256(p) for p in skipped} == contents
    for path, reason in skipped.items():
        record = env.record(path)
        assert record is not None and record["error"] == reason
    # what is not a regular file was left as it was, and nothing outside was touched
    assert fifo.exists() and not fifo.is_file()
    assert link.is_symlink() and os.readlink(link) == str(outside_image)
    assert dir_link.is_symlink()
    assert {p: snapshot(p) for p in outside_before} == outside_before
    assert env.record(vanished) is None and env.record(link) is None
    assert env.record(env.root / "album-link" / "inside.jpg") is None
    assert [
        e
        for e in daemon.events("file_skipped")
        if e["path"] == str(vanished) and e["reason"] != "vanished"
    ] == []
    # exactly the three duplicates moved, each under its own (odd) name
    assert files_under(env.quarantine) == {env.quarantine / p.name: sha256(good) for p in dups}
    assert {r["path"] for r in env.moves()} == {str(p) for p in dups}
    assert snapshot(original)[0] == sha256(good)

    assert daemon.stop() == 0
    assert daemon.junk == [], "a log line was split or is not JSON (a newline in a name?)"
    env.restore_all()
    for p in dups:
        assert p.is_file() and sha256(p) == sha256(good)
    assert os.path.exists(raw_name)


def test_fifo_and_symlink_are_logged_with_a_reason(env: Env) -> None:
    """A FIFO named x.jpg and a symlink named y.jpg delivered to the root are each
    reported (file_skipped with a reason), not dropped without a word."""
    original = write(env.root / "original.jpg", picture(210))
    daemon = env.start()
    env.wait_indexed(original)
    fifo = env.root / "x.jpg"
    os.mkfifo(fifo)
    link = env.root / "y.jpg"
    link.symlink_to(original)
    marker = write(env.root / "marker.jpg", picture(210))  # handled after the two
    wait_until(lambda: not marker.exists(), "the marker duplicate quarantined")
    try:
        reasons = {e["path"]: e["reason"] for e in daemon.events("file_skipped")}
        assert reasons.get(str(fifo)) and reasons.get(str(link)), reasons
    finally:
        assert daemon.stop() == 0


def matched(env: Env, path: Path) -> bool:
    """Has the daemon committed ``path`` as a duplicate (its match row), i.e. is about to act?"""
    return bool(
        env.query(
            "SELECT 1 FROM matches m JOIN files f ON f.id = m.file_id WHERE f.path = ?",
            (os.fsencode(path),),
        )
    )


def test_duplicate_whose_action_a_crash_interrupted_is_acted_on_after_restart(env: Env) -> None:
    """Killed after a duplicate was matched but before it was moved (the daemon is hashing
    two 64 MB files to verify them), the restarted daemon still quarantines it."""
    data = picture(300) + random.Random(300).randbytes(64 << 20)  # a picture with a big trailer
    original = write(env.root / "big.jpg", data)
    daemon = env.start()
    env.wait_indexed(original)
    copy = write(env.root / "big copy.jpg", data)
    wait_until(lambda: matched(env, copy), "the copy matched", interval=0.001)
    daemon.kill()
    if not copy.exists() or env.audit():
        pytest.skip("the crash came after the move had completed")

    second = env.start()
    second.wait_event("catch_up_finished", root=env.root)
    env.wait_idle(second, after=time.time())
    try:
        assert not copy.exists() and (env.quarantine / copy.name).is_file(), (
            "the duplicate was never acted on"
        )
        assert [r["path"] for r in env.moves()] == [str(copy)]
    finally:
        assert second.stop() == 0
