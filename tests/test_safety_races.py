"""Races between a check and a move, widened with the fault switch's pause.

A real ``dedupd scan`` pauses (``DEDUPD_FAULT=STEP:sleep=N``) before it
copies the duplicate, before it takes it from its path, or just after; meanwhile the test saves a new file at
the duplicate's path, or rewrites the duplicate or its original in place
with the size and mtime put back.  The newer file always survives, and
nothing is moved or linked that is not the picture that was checked.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from daemon_helpers import (
    Env,
    files_under,
    finish,
    pending_intents,
    picture,
    sha256,
    start_cli,
    stray_temps,
    wait_until,
    write,
)

PAUSE = "sleep=3"


def scan_paused_at(env: Env, step: str) -> object:
    proc = start_cli(env, "scan", str(env.root), "--config", str(env.config_path), "--no-progress",
                     fault=f"{step}:{PAUSE}")
    def begun() -> bool:
        try:
            return bool(pending_intents(env)) or proc.poll() is not None
        except sqlite3.OperationalError:  # the store is not created yet
            return False

    wait_until(begun, "the move to begin", interval=0.01)
    assert proc.poll() is None, "the scan ended before the move began"
    return proc


def replace_atomically(path: Path, data: bytes) -> None:
    """Save ``data`` at ``path`` as an editor does: a new file renamed over the old."""
    tmp = path.with_name("new-version.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite ``path``'s bytes (same length) and put its mtime back: only ctime tells."""
    st = os.stat(path)
    assert len(data) >= st.st_size
    with open(path, "r+b") as f:
        f.write(data[: st.st_size])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("action", ["quarantine", "symlink"])
def test_a_file_saved_at_the_path_before_the_copy_survives_and_nothing_moves(env: Env, action: str) -> None:
    """A new file saved at the duplicate's path after the last check, before the move
    (the reproduction that destroyed it): it stays at its path, untouched; nothing moves."""
    data = picture(7400)
    write(env.root / "a.jpg", data)
    dup = write(env.root / "b.jpg", data)
    env.write_config(actions={"exact": action})
    proc = scan_paused_at(env, f"{action}.after_record")
    newer = picture(7401)
    replace_atomically(dup, newer)
    code, _, err = finish(proc)  # type: ignore[arg-type]
    assert code == 0, err
    assert dup.is_file() and not dup.is_symlink() and sha256(dup) == sha256(newer), "the newer file was lost"
    assert files_under(env.quarantine, records=True) == {}
    assert env.moves() == []
    assert stray_temps(env.root, env.quarantine) == [] and pending_intents(env) == []


def test_a_file_saved_at_the_path_after_the_copy_survives_and_the_checked_version_is_kept(env: Env) -> None:
    """A new file saved at the path after the duplicate was copied to quarantine and before
    it was taken from its path: the newer file is left at its path, untouched, and the
    checked version it replaced stays in quarantine, recorded."""
    data = picture(7405)
    write(env.root / "a.jpg", data)
    dup = write(env.root / "b.jpg", data)
    env.write_config(actions={"exact": "quarantine"})
    proc = scan_paused_at(env, "quarantine.after_copy")
    wait_until(lambda: (env.quarantine / "b.jpg").exists(), "the copy placed", interval=0.01)
    newer = picture(7406)
    replace_atomically(dup, newer)
    code, _, err = finish(proc)  # type: ignore[arg-type]
    assert code == 0, err
    assert dup.is_file() and sha256(dup) == sha256(newer), "the newer file was lost"
    [move] = env.moves()
    assert "newer file" in str(move["detail"])
    assert sha256(Path(str(move["destination"]))) == sha256(data)
    assert stray_temps(env.root, env.quarantine) == [] and pending_intents(env) == []


def test_a_file_saved_at_the_path_after_the_take_survives_and_the_duplicate_moves(env: Env) -> None:
    """A new file saved over the symlink just swapped in (the path is never empty) stays;
    the duplicate that was checked goes to quarantine as planned."""
    data = picture(7410)
    write(env.root / "a.jpg", data)
    dup = write(env.root / "b.jpg", data)
    env.write_config(actions={"exact": "symlink"})
    proc = scan_paused_at(env, "symlink.after_take")
    wait_until(lambda: dup.is_symlink(), "the symlink swapped in", interval=0.01)
    newer = picture(7411)
    replace_atomically(dup, newer)
    code, _, err = finish(proc)  # type: ignore[arg-type]
    assert code == 0, err
    assert dup.is_file() and not dup.is_symlink() and sha256(dup) == sha256(newer)
    [move] = env.moves()
    assert sha256(Path(str(move["destination"]))) == sha256(data)
    assert stray_temps(env.root, env.quarantine) == [] and pending_intents(env) == []


@pytest.mark.parametrize("which", ["duplicate", "original"])
def test_a_file_rewritten_in_place_with_size_and_mtime_put_back_is_not_acted_on(env: Env, which: str) -> None:
    """The duplicate (or its original) rewritten in place with another picture of the same
    length, its mtime put back, between the check and the move: the content re-check
    catches it, the file is put back, nothing is linked to a different picture."""
    data = picture(7420)
    original = write(env.root / "a.jpg", data)
    dup = write(env.root / "b.jpg", data)
    env.write_config(actions={"exact": "symlink"})
    proc = scan_paused_at(env, "symlink.after_record")
    other = picture(7421) + b"\0" * len(data)
    target = dup if which == "duplicate" else original
    rewrite_in_place(target, other)
    code, _, err = finish(proc)  # type: ignore[arg-type]
    assert code == 0, err
    assert not dup.is_symlink() and dup.is_file(), "linked although the content had changed"
    assert sha256(target) == sha256(other[: len(data)])
    assert env.moves() == []
    skipped = [r for r in env.audit() if r["outcome"] == "skipped"]
    assert skipped and "not moved" in str(skipped[-1]["detail"]), env.audit()
    assert files_under(env.quarantine, records=True) == {}
    assert stray_temps(env.root, env.quarantine) == [] and pending_intents(env) == []
