"""End to end: a real ``dedupd run`` process, files delivered the ways real clients deliver them.

Each test starts the daemon as a subprocess on a root under ``tmp_path``,
delivers files (copy, rename, temporary name, slow writer, burst, archive,
new directory, downtime), waits for the outcome with a deadline, and checks
the files themselves, the audit trail (``dedupd audit --format json``) and
that ``dedupd restore --all`` gives every byte back.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import (
    Daemon,
    Env,
    bind_mount,
    count_files,
    files_under,
    picture,
    sha256,
    snapshot,
    stray_temps,
    wait_until,
    write,
)


@pytest.fixture
def other_filesystem() -> Iterator[Path]:
    """A directory on a filesystem other than tmp_path's (a tmpfs), or skip."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        pytest.skip("no second filesystem (/dev/shm) to move files across")
    path = Path(tempfile.mkdtemp(prefix="dedupd-test-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def in_quarantine(env: Env, path: Path) -> Path:
    """Where the daemon puts ``path`` (its path relative to the root, under quarantine_dir)."""
    return env.quarantine / path.relative_to(env.root)


def wait_quarantined(env: Env, *paths: Path, timeout: float = 30.0) -> None:
    """Wait until each file has left the root and sits in quarantine."""
    wait_until(
        lambda: all(not os.path.lexists(p) and in_quarantine(env, p).exists() for p in paths),
        f"{len(paths)} files in quarantine",
        timeout,
    )


def assert_restore_gives_everything_back(env: Env, expected: dict[Path, str]) -> None:
    """``dedupd restore --all`` puts every quarantined file back, byte for byte, and empties
    the quarantine."""
    env.restore_all()
    for path, digest in expected.items():
        assert path.is_file() and not path.is_symlink(), f"{path} not restored"
        assert sha256(path) == digest, f"{path} restored with different bytes"
    assert files_under(env.quarantine) == {}, "quarantine not emptied by restore"
    assert stray_temps(env.root, env.quarantine) == []


# --- how files arrive ----------------------------------------------------------


def test_copied_duplicate_is_quarantined_and_restore_while_running_sticks(env: Env) -> None:
    """A shutil.copy of an indexed picture goes to quarantine with one done audit row;
    restored while the daemon runs, it comes back byte-identical and is not taken again."""
    original = write(env.root / "album" / "a.jpg", picture(1))
    untouched = snapshot(original)
    daemon = env.start()
    env.wait_indexed(original)  # found by the start-up catch-up

    copy = env.root / "album" / "copy of a.jpg"
    shutil.copy(original, copy)
    wait_quarantined(env, copy)

    [row] = env.moves()
    assert (row["action"], row["outcome"], row["tier"]) == ("quarantine", "done", "exact")
    assert (row["path"], row["original"]) == (str(copy), str(original))
    assert row["destination"] == str(in_quarantine(env, copy))
    assert row["sha256"] == sha256(picture(1)) == sha256(in_quarantine(env, copy))
    assert snapshot(original) == untouched

    assert_restore_gives_everything_back(env, {copy: sha256(picture(1))})
    daemon.wait_event("pair_ignored", path=copy)  # the daemon saw it come back, and let it be
    assert copy.is_file() and len(env.moves()) == 1
    assert snapshot(original) == untouched
    assert daemon.stop() == 0


def test_files_moved_in_from_outside_the_root(env: Env, other_filesystem: Path) -> None:
    """A rename from a directory beside the root (mv on one filesystem) and a move from
    another filesystem (mv copies, then unlinks) both deliver duplicates that are quarantined."""
    original = write(env.root / "b.jpg", picture(2))
    daemon = env.start()
    env.wait_indexed(original)

    renamed = env.root / "renamed-in.jpg"
    os.rename(write(env.outside / "staged.jpg", picture(2)), renamed)
    across = env.root / "moved-across.jpg"
    shutil.move(write(other_filesystem / "staged.jpg", picture(2)), across)

    wait_quarantined(env, renamed, across)
    assert {r["path"] for r in env.moves()} == {str(renamed), str(across)}
    assert original.exists() and not (env.outside / "staged.jpg").exists()
    assert daemon.stop() == 0
    assert_restore_gives_everything_back(
        env, {renamed: sha256(picture(2)), across: sha256(picture(2))}
    )


@pytest.mark.parametrize(
    "temp_name", [".photo.jpg.Xa9b3Q", "photo.jpg.part"], ids=["rsync", "part"]
)
def test_temporary_name_is_never_acted_on(env: Env, temp_name: str) -> None:
    """A duplicate written under a temporary name (rsync's .NAME.XXXXXX, a browser's
    NAME.part) is left alone however long it sits there; renamed into place, it is quarantined."""
    original = write(env.root / "original.jpg", picture(3))
    daemon = env.start()
    env.wait_indexed(original)

    data = picture(3)
    temp = env.root / temp_name
    with temp.open("wb") as f:  # written in two parts, as a client does
        f.write(data[: len(data) // 2])
        f.flush()
        f.write(data[len(data) // 2 :])
    an_hour_ago = time.time() - 3600
    os.utime(temp, (an_hour_ago, an_hour_ago))  # rsync -t sets the mtime before the rename

    # A marker duplicate delivered after the temp is complete: once the daemon has
    # handled it, it has had every chance to (wrongly) handle the temp too.
    marker = write(env.root / "marker.jpg", picture(3))
    wait_quarantined(env, marker)
    assert temp.exists() and env.record(temp) is None and daemon.mentions(temp) == []

    final = env.root / "photo.jpg"
    os.rename(temp, final)
    wait_quarantined(env, final)

    assert daemon.mentions(temp) == [], "the temporary name appeared in the log"
    assert env.record(temp) is None
    assert str(temp) not in {r["path"] for r in env.audit()}
    assert files_under(env.quarantine).keys() == {
        in_quarantine(env, marker),
        in_quarantine(env, final),
    }
    assert daemon.stop() == 0


def test_slow_writer_is_left_alone_until_the_file_is_complete(env: Env) -> None:
    """A duplicate written in 16 chunks over ~3 s (pauses shorter than settle_seconds) is
    neither read, recorded nor moved before it is closed; then it is quarantined whole."""
    data = picture(4, "JPEG", (512, 384))
    original = write(env.root / "original.jpg", data)
    daemon = env.start(settle_seconds=1.0)
    env.wait_indexed(original)

    path = env.root / "upload.jpg"
    chunks = [data[i : i + len(data) // 16 + 1] for i in range(0, len(data), len(data) // 16 + 1)]
    with path.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
            f.flush()
            time.sleep(0.2)  # the client's pace, not a wait for the daemon
            assert path.exists(), "moved while still being written"
            assert env.record(path) is None and daemon.mentions(path) == [], (
                "read while still being written"
            )
    wait_quarantined(env, path)

    [row] = env.moves()
    assert row["path"] == str(path) and row["sha256"] == sha256(data) == sha256(
        in_quarantine(env, path)
    )
    assert daemon.events("file_skipped", path=path) == []
    assert daemon.stop() == 0
    assert_restore_gives_everything_back(env, {path: sha256(data)})


def motion_photo(seed: int) -> bytes:
    """A "motion photo" (Samsung, Google): a whole JPEG, then a video after its end marker."""
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 600
    return picture(seed, "JPEG", (384, 288)) + video


@pytest.mark.parametrize(
    "across", [False, True], ids=["same-filesystem", "quarantine-on-other-filesystem"]
)
def test_writer_pausing_mid_file_does_not_get_a_partial_file_quarantined(
    env: Env, tmp_path: Path, across: bool
) -> None:
    """A client that pauses longer than settle_seconds in the middle of a motion photo
    (JPEG complete, video still arriving) must not have the half-written file moved: the
    copy that ends in quarantine must be the whole file, and restore must give it back."""
    if across:
        shm = Path("/dev/shm")
        if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("no second filesystem for the quarantine")
        env.quarantine = Path(tempfile.mkdtemp(prefix="dedupd-test-q-", dir=shm))
    try:
        data = motion_photo(5)
        original = write(env.root / "original.jpg", data)
        daemon = env.start(actions={"exact": "quarantine", "pixel": "quarantine", "near": "log"})
        env.wait_indexed(original)

        path = env.root / "upload.jpg"
        half = len(data) - 60_000  # the picture and part of the video
        with path.open("wb") as f:
            f.write(data[:half])
            f.flush()
            time.sleep(2.0)  # the network stalls for four times settle_seconds
            f.write(data[half:])

        # the whole upload must exist, at its path or where its audit row says it went
        wait_until(lambda: not path.exists() or env.record(path) is not None, "the upload handled")
        rows = [r for r in env.moves() if r["path"] == str(path)]
        places = [path, *(Path(r["destination"]) for r in rows)]
        assert [p for p in places if p.is_file() and sha256(p) == sha256(data)], (
            "the complete upload exists nowhere"
        )
        for row in rows:
            assert row["sha256"] == sha256(Path(row["destination"])), (
                "quarantined bytes differ from the audit row"
            )
        assert daemon.stop() == 0
        env.restore_all()
        assert path.is_file() and sha256(path) == sha256(data)
    finally:
        if across:
            shutil.rmtree(env.quarantine, ignore_errors=True)


def test_burst_of_a_thousand_files(env: Env) -> None:
    """500 distinct pictures and 500 exact copies written at once: every copy ends in
    quarantine, every original stays, and restore --all brings all 500 back."""
    daemon = env.start(workers=2, ready=False)  # it starts while the pictures are drawn
    originals = {
        env.root / "originals" / f"o{i:03}.png": picture(1000 + i, "PNG", (128, 96))
        for i in range(500)
    }
    copies = {
        env.root / "copies" / f"c{i:03}.png": data for i, data in enumerate(originals.values())
    }
    daemon.wait_ready()
    for path, data in [*originals.items(), *copies.items()]:
        write(path, data)

    wait_until(
        lambda: count_files(env.quarantine) >= 500,
        "500 copies in quarantine",
        timeout=90,
        interval=0.1,
    )
    wait_until(lambda: not any(p.exists() for p in copies), "every copy gone from the root")
    assert {p for p in files_under(env.root)} == set(originals)
    assert files_under(env.quarantine) == {
        in_quarantine(env, p): sha256(d) for p, d in copies.items()
    }
    moves = env.moves()
    assert len(moves) == 500 and {r["path"] for r in moves} == {str(p) for p in copies}
    assert daemon.stop() == 0
    assert_restore_gives_everything_back(env, {p: sha256(d) for p, d in copies.items()})
    assert {p: sha256(p) for p in originals} == {p: sha256(d) for p, d in originals.items()}


def test_tree_extracted_at_once(env: Env) -> None:
    """A tar archive extracted into the root (directories and files created faster than
    watches can be added) is walked: every copy inside is quarantined under its relative path."""
    originals = [write(env.root / f"keep{i}.jpg", picture(20 + i)) for i in range(3)]
    daemon = env.start()
    env.wait_indexed(*originals)

    buf = io.BytesIO()
    members = {
        "trip/day1/IMG_0001.jpg": picture(20),
        "trip/day1/deep/er/IMG_0002.jpg": picture(21),
        "trip/day2/IMG_0003.jpg": picture(22),
        "trip/day2/new.jpg": picture(30),  # a picture of its own
    }
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), int(time.time()) - 86400
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        tar.extractall(env.root, filter="data")

    copies = [env.root / n for n in members if not n.endswith("new.jpg")]
    wait_quarantined(env, *copies)
    env.wait_indexed(env.root / "trip/day2/new.jpg")
    assert {r["path"] for r in env.moves()} == {str(p) for p in copies}
    assert daemon.stop() == 0
    assert_restore_gives_everything_back(
        env, {p: sha256(members[str(p.relative_to(env.root))]) for p in copies}
    )


def test_new_subdirectories_with_files(env: Env) -> None:
    """Files written into a directory created a moment before (before its watch exists),
    and a whole directory tree renamed in from outside, are both found and handled."""
    original = write(env.root / "o.jpg", picture(40))
    daemon = env.start()
    env.wait_indexed(original)

    made = env.root / "new" / "deeper"
    made.mkdir(parents=True)
    written = [write(made / "copy1.jpg", picture(40)), write(made / "other.jpg", picture(41))]
    staged = env.outside / "tree"
    write(staged / "a" / "copy2.jpg", picture(40))
    write(staged / "a" / "b" / "copy3.jpg", picture(41))
    os.rename(staged, env.root / "tree")

    copies = [made / "copy1.jpg", env.root / "tree/a/copy2.jpg", env.root / "tree/a/b/copy3.jpg"]
    wait_quarantined(env, *copies)
    assert written[1].exists()
    assert {r["path"] for r in env.moves()} == {str(p) for p in copies}
    assert daemon.stop() == 0
    assert_restore_gives_everything_back(
        env,
        {
            copies[0]: sha256(picture(40)),
            copies[1]: sha256(picture(40)),
            copies[2]: sha256(picture(41)),
        },
    )


def test_symlink_action(env: Env) -> None:
    """With action symlink the duplicate becomes a symlink to its original (which is not
    touched), a copy waits in quarantine, and restore puts the real file back."""
    original = write(env.root / "orig.jpg", picture(50))
    untouched = snapshot(original)
    daemon = env.start(actions={"exact": "symlink", "pixel": "log", "near": "log"})
    env.wait_indexed(original)

    dup = env.root / "sub" / "dup.jpg"
    write(dup, picture(50))
    wait_until(lambda: dup.is_symlink(), "the duplicate replaced by a symlink")
    # the symlink is swapped in first; the copy and the audit row follow
    wait_until(lambda: env.moves(), "the move recorded", interval=0.1)
    assert Path(os.readlink(dup)) == Path(os.path.relpath(original, dup.parent))  # relative, to the original
    assert dup.read_bytes() == picture(50)
    assert sha256(in_quarantine(env, dup)) == sha256(picture(50))
    [row] = env.moves()
    assert (row["action"], row["path"], row["destination"]) == (
        "symlink",
        str(dup),
        str(in_quarantine(env, dup)),
    )
    assert snapshot(original) == untouched
    assert daemon.stop() == 0

    assert_restore_gives_everything_back(env, {dup: sha256(picture(50))})
    assert snapshot(original) == untouched


# --- restarts, observers, reloads, breakers ------------------------------------


def test_catch_up_after_downtime(env: Env) -> None:
    """Changes made while the daemon was stopped are caught up on start: a new duplicate
    is quarantined, a modified file is read again, an unchanged one is not, and a deleted
    file is forgotten."""
    a = write(env.root / "a.jpg", picture(60))
    b = write(env.root / "b.png", picture(61, "PNG"))
    c = write(env.root / "c.jpg", picture(62))
    d = write(env.root / "d.jpg", picture(63))
    first = env.start()
    env.wait_indexed(a, b, c, d)
    assert first.stop() == 0
    c_before = env.record(c)

    # downtime
    new_dup = write(env.root / "later" / "a again.jpg", picture(60))
    write(b, picture(64, "PNG"))  # rewritten in place with another picture
    d.unlink()

    second = env.start()
    finished = second.wait_event("catch_up_finished", root=env.root)
    assert finished["forgotten"] == 1
    second.wait_event("file_forgotten", path=d)
    wait_quarantined(env, new_dup)
    status = env.wait_idle(second, after=time.time())

    assert status["fingerprinted"] == 2, "only the new and the modified file should be read"
    assert env.record(c) == c_before, "an unchanged file was read again"
    assert env.record(d) is None
    b_now = env.record(b)
    assert b_now is not None and b_now["sha256"] == sha256(picture(64, "PNG"))
    assert [r["path"] for r in env.moves()] == [str(new_dup)]
    assert second.stop() == 0
    assert_restore_gives_everything_back(env, {new_dup: sha256(picture(60))})


def test_rename_during_downtime_is_followed_without_reading(env: Env) -> None:
    """A file renamed (into a new directory) while the daemon was stopped is followed from
    its store record on start (file_renamed, same record), not read again and not forgotten."""
    c = write(env.root / "c.jpg", picture(65))
    later = write(env.root / "later.jpg", picture(67))  # so that a re-inserted row gets a new id
    first = env.start()
    env.wait_indexed(c, later)
    assert first.stop() == 0
    before = env.record(c)
    assert before is not None

    renamed = env.root / "renamed" / "c moved.jpg"
    renamed.parent.mkdir()
    os.rename(c, renamed)

    second = env.start()
    second.wait_event("catch_up_finished", root=env.root)
    env.wait_indexed(renamed)
    status = env.wait_idle(second, after=time.time())
    try:
        assert second.events("file_forgotten") == []
        assert [e["event"] for e in second.mentions(renamed)] == ["file_renamed"]
        assert status["fingerprinted"] == 0
        moved = env.record(renamed)
        assert moved is not None
        assert (moved["id"], moved["seq"], moved["indexed_at"]) == (
            before["id"],
            before["seq"],
            before["indexed_at"],
        )
    finally:
        assert second.stop() == 0


def test_rename_while_running_is_followed_without_reading(env: Env) -> None:
    """A file renamed inside the root while the daemon runs keeps its store record
    (file_renamed, same id and seq) and is not read again."""
    c = write(env.root / "c.jpg", picture(66))
    later = write(env.root / "later.jpg", picture(67))  # so that a re-inserted row gets a new id
    daemon = env.start()
    env.wait_indexed(c)
    env.wait_indexed(later)
    before = env.record(c)
    assert before is not None
    renamed = env.root / "sub" / "c renamed.jpg"
    renamed.parent.mkdir()
    os.rename(c, renamed)
    env.wait_indexed(renamed)
    status = env.wait_idle(daemon, after=time.time())
    try:
        assert status["fingerprinted"] == 2  # c and later when they arrived, nothing since
        moved = env.record(renamed)
        assert moved is not None
        assert (moved["id"], moved["seq"], moved["indexed_at"]) == (
            before["id"],
            before["seq"],
            before["indexed_at"],
        )
        assert [e["event"] for e in daemon.mentions(renamed)] == ["file_renamed"]
    finally:
        assert daemon.stop() == 0


def test_polling_observer(env: Env) -> None:
    """With polling: true the root is watched by the polling observer, and a duplicate is
    still handled."""
    original = write(env.root / "p.jpg", picture(70))
    daemon = env.start(polling=True, poll_interval=0.2)
    watching = daemon.wait_event("watching", root=env.root)
    assert watching["observer"] == "polling"
    env.wait_indexed(original)
    dup = write(env.root / "p copy.jpg", picture(70))
    wait_quarantined(env, dup)
    [root_status] = env.wait_idle(daemon, after=time.time() - 60)["roots"]
    assert root_status["observer"] == "polling"
    assert daemon.stop() == 0


def test_sighup_applies_a_new_action(env: Env) -> None:
    """SIGHUP reloads the config: a duplicate found before the reload is only logged, one
    found after it gets the new action (quarantine)."""
    original = write(env.root / "h.jpg", picture(80))
    daemon = env.start(actions={"exact": "log", "pixel": "log", "near": "log"})
    env.wait_indexed(original)
    logged = write(env.root / "before reload.jpg", picture(80))
    wait_until(
        lambda: [r for r in env.audit() if r["path"] == str(logged)],
        "the log-only audit row",
        interval=0.25,
    )
    assert [(r["action"], r["outcome"]) for r in env.audit()] == [("log", "done")]

    env.write_config(actions={"exact": "quarantine", "pixel": "log", "near": "log"})
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    moved = write(env.root / "after reload.jpg", picture(80))
    wait_quarantined(env, moved)
    assert logged.exists()
    assert [r["path"] for r in env.moves()] == [str(moved)]
    assert daemon.stop() == 0


def test_a_pairing_made_by_ignore_is_acted_on_without_a_reload(env: Env) -> None:
    """B and its exact copy C are pixel duplicates of A (logged only). `dedupd ignore A B`
    then `dedupd ignore A C` while the daemon runs: C leaves A's group and becomes B's exact
    duplicate, and the daemon quarantines it at once, with no restart and no SIGHUP."""
    from helpers import jpeg_with_comment

    data = picture(8100)
    edited = jpeg_with_comment(data, b"edited")  # the same picture, other bytes: a pixel duplicate
    a = write(env.root / "a.jpg", data)
    daemon = env.start(actions={"exact": "quarantine", "pixel": "log", "near": "log"})
    env.wait_indexed(a)
    b = write(env.root / "b.jpg", edited)
    env.wait_indexed(b)
    c = write(env.root / "c.jpg", edited)
    env.wait_indexed(c)
    env.wait_idle(daemon, after=time.time())
    assert a.exists() and b.exists() and c.exists()
    assert not [r for r in env.audit() if r["action"] == "quarantine"], env.audit()

    env.cli("ignore", str(a), str(b))  # B leaves A's group, alone: nothing is owed
    env.cli("ignore", str(a), str(c))  # C leaves it too, and joins its exact copy B
    wait_until(lambda: not c.exists(), "c.jpg quarantined after the ignore", timeout=15)
    assert daemon.events("regrouped_pairs_queued")
    assert [(r["path"], r["original"]) for r in env.moves()] == [(str(c), str(b))]
    assert sha256(env.quarantine / "c.jpg") == sha256(edited)
    assert sha256(a) == sha256(data) and sha256(b) == sha256(edited)
    assert not daemon.events("config_reloading")
    assert daemon.stop() == 0


def test_sighup_with_an_invalid_config_keeps_the_running_one(env: Env) -> None:
    """An invalid config on SIGHUP is refused (config_reload_failed): the daemon keeps
    running with the old actions, and a later duplicate is still quarantined."""
    original = write(env.root / "i.jpg", picture(90))
    daemon = env.start()
    env.wait_indexed(original)

    # would switch to log-only if any of it were applied; the unknown key makes it invalid
    env.config_path.write_text(
        f"roots: [{env.root}]\nquarantine_dir: {env.quarantine}\n"
        "actions: {exact: log}\nno_such_key: 1\n"
    )
    daemon.signal(signal.SIGHUP)
    failed = daemon.wait_event("config_reload_failed")
    assert "no_such_key" in failed["error"]
    assert daemon.alive() and daemon.events("config_reloaded") == []
    dup = write(env.root / "i again.jpg", picture(90))
    wait_quarantined(env, dup)
    assert daemon.alive()
    assert daemon.stop() == 0


def breaker_cause(env: Env) -> str | None:
    """The circuit breaker the running daemon reports on the root in ``dedupd status``."""
    roots = env.status()["daemon"].get("roots", [])
    causes = [r["circuit_breaker"] for r in roots if r["path"] == str(env.root)]
    return causes[0] if causes else None


def test_root_removed_and_recreated_trips_the_breaker(env: Env) -> None:
    """The root vanishes with its files and comes back holding copies of them (and of one
    twice): the circuit breaker trips and shows in status, and no file is moved."""
    pictures = {f"r{i}.jpg": picture(100 + i) for i in range(4)}
    for name, data in pictures.items():
        write(env.root / name, data)
    daemon = env.start()
    env.wait_indexed(*(env.root / n for n in pictures))

    shutil.rmtree(env.root)
    cause = wait_until(lambda: breaker_cause(env), "the circuit breaker in status", interval=0.25)
    assert cause is not None and "not accessible" in cause
    daemon.wait_event("circuit_breaker_tripped", root=env.root)

    for name, data in pictures.items():
        write(env.root / name, data)
    write(env.root / "r0 again.jpg", pictures["r0.jpg"])
    env.wait_idle(daemon, after=time.time())
    assert breaker_cause(env) == cause
    assert files_under(env.quarantine) == {}
    assert env.moves() == []
    assert {p.name: d for p, d in files_under(env.root).items()} == {
        **{n: sha256(d) for n, d in pictures.items()},
        "r0 again.jpg": sha256(pictures["r0.jpg"]),
    }
    assert daemon.alive()
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    "warm_store",
    [
        True,
        False,
    ],
    ids=["second-run", "first-run"],
)
def test_root_emptied_by_a_mount_trips_the_breaker(env: Env, warm_store: bool) -> None:
    """A root that suddenly looks empty (a share unmounted; here an empty directory
    bind-mounted over it) trips the breaker in status, and no record is forgotten."""
    names = [write(env.root / f"m{i}.jpg", picture(110 + i)) for i in range(3)]
    if warm_store:
        first = env.start()
        env.wait_indexed(*names)
        assert first.stop() == 0
    daemon = env.start()
    env.wait_indexed(*names)
    ids = {p: (env.record(p) or {}).get("id") for p in names}
    assert None not in ids.values()
    empty = env.outside / "empty"
    empty.mkdir()
    with bind_mount(empty, env.root):
        cause = daemon.wait_event("circuit_breaker_tripped", root=env.root, timeout=3)["cause"]
        assert "empty" in cause
        assert (
            wait_until(lambda: breaker_cause(env), "the breaker in status", interval=0.25) == cause
        )
    env.wait_idle(daemon, after=time.time())
    assert {p: (env.record(p) or {}).get("id") for p in names} == ids, "records forgotten"
    assert breaker_cause(env) == cause
    assert daemon.stop() == 0


def test_a_root_unmounted_between_the_sweeps_check_and_its_look_forgets_nothing(env: Env) -> None:
    """The sweep after the catch-up walk checks the root, then looks for each indexed file; an
    empty directory mounted over the root in between (the look held 4 s by DEDUPD_FAULT) made
    every file look deleted. The root is looked at again after the look: the breaker trips
    and no record is forgotten."""
    names = [write(env.root / f"w{i}.jpg", picture(120 + i)) for i in range(3)]
    first = env.start()
    env.wait_indexed(*names)
    assert first.stop() == 0
    ids = {p: (env.record(p) or {}).get("id") for p in names}
    assert None not in ids.values()
    argv = [
        sys.executable, "-m", "dedupd", "run",
        "--config", str(env.config_path), "--db", str(env.db), "--log-format", "json",
    ]  # fmt: skip
    daemon = Daemon(argv, env.log_path, {**env.env, "DEDUPD_FAULT": "sweep.before_look:sleep=4"}, env.base)
    env.daemons.append(daemon)
    daemon.wait_ready()  # the first pass walks the root, checks it and pauses before the look
    empty = env.outside / "empty"
    empty.mkdir()
    with bind_mount(empty, env.root):
        cause = daemon.wait_event("circuit_breaker_tripped", root=env.root, timeout=15)["cause"]
        assert "empty" in cause
        assert not daemon.events("catch_up_finished"), "the sweep went on over an emptied root"
    env.wait_idle(daemon, after=time.time())
    assert {p: (env.record(p) or {}).get("id") for p in names} == ids, "records forgotten"
    assert daemon.stop() == 0


def test_root_replaced_by_a_new_directory_is_noticed(env: Env) -> None:
    """The root is removed and at once re-created (by rename) with copies of its files:
    the daemon must notice that it no longer watches what is at that path (breaker)."""
    pictures = {f"q{i}.jpg": picture(120 + i) for i in range(3)}
    for name, data in pictures.items():
        write(env.root / name, data)
    daemon = env.start()
    env.wait_indexed(*(env.root / n for n in pictures))
    staging = env.outside / "new root"
    for name, data in pictures.items():
        write(staging / name, data)
    write(staging / "q0 again.jpg", pictures["q0.jpg"])

    shutil.rmtree(env.root)
    os.rename(staging, env.root)
    try:
        daemon.wait_event("circuit_breaker_tripped", root=env.root, timeout=3)
    finally:
        assert files_under(env.quarantine) == {}
        assert daemon.stop() == 0


def test_reload_after_the_root_came_back_watches_it_again(env: Env) -> None:
    """After the root vanished (breaker tripped) and was re-created, SIGHUP (the person
    saying 'go on') resumes work on it: a duplicate delivered afterwards is quarantined."""
    original = write(env.root / "w.jpg", picture(130))
    daemon = env.start()
    env.wait_indexed(original)
    shutil.rmtree(env.root)
    daemon.wait_event("circuit_breaker_tripped", root=env.root)
    env.root.mkdir()
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")

    original = write(env.root / "w.jpg", picture(130))
    dup = write(env.root / "w again.jpg", picture(130))
    try:
        wait_quarantined(env, dup, timeout=4)
    finally:
        assert daemon.stop() == 0
