"""Every step of a quarantine, a symlink and a restore, killed, failed or raced.

The fault-injection switch (``DEDUPD_FAULT``, see dedupd/faults.py) makes a
real ``dedupd scan``, ``dedupd run`` or ``dedupd restore`` subprocess kill
itself, fail or pause at a named step.  After each crash the next start
settles what was left, and then every file is either where it was or in
quarantine with its done audit row and its record, no private or temporary
name is left anywhere, no intent is pending, and ``restore --all`` brings
every byte back.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_helpers import (
    Env,
    check_settled,
    cli,
    files_under,
    pending_intents,
    picture,
    restore_everything,
    scan,
    sha256,
    stray_temps,
    wait_until,
    write,
)

from dedupd.faults import STEPS


def pair(env: Env, seed: int) -> dict[Path, bytes]:
    data = picture(seed)
    return {write(env.root / "a.jpg", data): data, write(env.root / "sub" / "b.jpg", data): data}


MOVE_STEPS = [*STEPS["quarantine"], *STEPS["symlink"]]


@pytest.mark.parametrize("step", MOVE_STEPS)
def test_a_kill_at_every_step_of_a_move_is_settled_by_the_next_start(env: Env, step: str) -> None:
    """`dedupd scan` SIGKILLs itself at this step of a quarantine or symlink; the next scan
    settles it: each file in place or in quarantine with its row and record, no private
    name (not even the symlink's temporary), nothing pending; restore brings it all back."""
    action = step.split(".")[0]
    files = pair(env, 7000 + MOVE_STEPS.index(step))
    env.write_config(actions={"exact": action})
    code, _, err = scan(env, fault=f"{step}:kill")
    assert code == -signal.SIGKILL, f"the fault at {step} never fired: {code}\n{err}"
    assert pending_intents(env), "the kill came before the intent was committed"
    code, _, err = scan(env)
    assert code == 0, err
    check_settled(env, files, symlinks=action == "symlink")
    restore_everything(env, files)


@pytest.mark.parametrize("step", STEPS["restore"])
def test_a_kill_at_every_step_of_a_restore_is_finished_by_restoring_again(env: Env, step: str) -> None:
    """`dedupd restore` SIGKILLs itself at this step; no stray copy or hard link is left once
    `restore --all` runs again, which finishes the job; killed once the file was home, the
    pair stays 'not duplicates', so a later scan does not quarantine it again."""
    files = pair(env, 7100 + STEPS["restore"].index(step))
    env.write_config(actions={"exact": "quarantine"})
    assert scan(env)[0] == 0
    assert len(env.moves()) == 1
    code, _, err = cli(env, "restore", "--all", fault=f"{step}:kill")
    assert code == -signal.SIGKILL, f"the fault at {step} never fired: {code}\n{err}"
    restore_everything(env, files)
    assert pending_intents(env) == []
    if step == "restore.after_rename":  # the file was home when the kill came
        assert scan(env)[0] == 0
        for path, data in files.items():
            assert path.is_file() and sha256(path) == sha256(data), f"{path} was acted on again"


@pytest.mark.parametrize("step", ["quarantine.after_copy", "symlink.after_copy", "quarantine.after_take"])
def test_an_error_at_a_step_puts_everything_back(env: Env, step: str) -> None:
    """An I/O error at a step of a move (a copy already placed, or the file already taken)
    is undone at once: the copy is removed, the file is back at its path, the audit says
    failed, and nothing is pending or stray."""
    action = step.split(".")[0]
    files = pair(env, 7200 + len(step))
    env.write_config(actions={"exact": action})
    code, _, err = scan(env, fault=f"{step}:error")
    assert code == 0, err
    failed = [r for r in env.audit() if r["outcome"] == "failed"]
    assert len(failed) == 1 and "injected fault" in str(failed[0]["detail"]), env.audit()
    check_settled(env, files)
    assert env.moves() == []


def test_a_kill_inside_the_daemon_is_settled_on_restart_and_the_duplicate_still_moved(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dedupd run` SIGKILLed between the symlink's creation and its swap (the reproduction
    that left .B.jpg.dedupd-XXXX.tmp in the root for good): the restarted daemon removes
    the temporary link, then symlinks the duplicate properly, and does not report its own
    symlink as a file it could not read."""
    data = picture(7300)
    original = write(env.root / "A.jpg", data)
    monkeypatch.setenv("DEDUPD_FAULT", "symlink.after_temp_link:kill")
    daemon = env.start(actions={"exact": "symlink"})
    monkeypatch.delenv("DEDUPD_FAULT")
    env.wait_indexed(original)
    dup = write(env.root / "B.jpg", data)
    wait_until(lambda: not daemon.alive(), "the daemon to kill itself at the step")
    daemon.cleanup()
    assert stray_temps(env.root), "the temporary symlink should be there right after the kill"
    second = env.start()
    wait_until(lambda: dup.is_symlink(), "the duplicate symlinked after the restart")
    env.wait_idle(second, after=time.time() + 1.0)
    assert second.events("file_skipped", path=dup) == [], "its own symlink logged as not an image"
    assert second.stop() == 0
    check_settled(env, {original: data, dup: data}, symlinks=True)
    restore_everything(env, {original: data, dup: data})


def test_a_source_directory_that_refuses_the_move_leaves_no_copy_behind(env: Env) -> None:
    """Reproduction 10 (an unwritable source directory): the directory is made immutable,
    so the copy can be placed but the file cannot leave; the copy and its record are
    removed, the audit says failed with the reason, nothing is pending or stray."""
    files = pair(env, 7250)
    sub = env.root / "sub"
    if subprocess.run(["chattr", "+i", str(sub)], capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        env.write_config(actions={"exact": "quarantine"})
        code, _, err = scan(env)
        assert code == 0, err
    finally:
        subprocess.run(["chattr", "-i", str(sub)], check=False)
    [failed] = [r for r in env.audit() if r["outcome"] == "failed"]
    assert "not permitted" in str(failed["detail"]), failed
    assert files_under(env.quarantine, records=True) == {}
    check_settled(env, files)


def test_a_kill_in_the_middle_of_a_batch_of_restores_is_finished_by_restoring_again(env: Env) -> None:
    """`restore --all` puts files back in batches (one intent transaction, one sync per
    directory, one audit transaction); killed after the third file's copy was removed,
    with one file refused in the same batch (a new file at its path), the next
    `restore --all` finishes the others once each and still refuses that one."""
    files: dict[Path, bytes] = {}
    for i in range(5):
        data = picture(7400 + i)
        files[write(env.root / f"o{i}.jpg", data)] = data
        files[write(env.root / "sub" / f"c{i}.jpg", data)] = data
    env.write_config(actions={"exact": "quarantine"})
    assert scan(env)[0] == 0
    assert len(env.moves()) == 5
    blocker = write(env.root / "sub" / "c1.jpg", b"a new file saved at the path meanwhile")
    code, _, err = cli(env, "restore", "--all", fault="restore.after_unlink:kill:c3.jpg")
    assert code == -signal.SIGKILL, err
    # the batch's intents were committed together: every restore of it is pending, not only c3's
    pending = [Path(os.fsdecode(p)).name for _, action, p in pending_intents(env) if action == "restore"]
    assert sorted(pending) == ["c0.jpg", "c2.jpg", "c3.jpg", "c4.jpg"], pending
    code, out, err = cli(env, "restore", "--all")
    assert code == 3, out + err  # the one refused
    assert "1 refused" in out and "c1.jpg" in [line for line in out.splitlines() if "FAIL" in line][0]
    assert blocker.read_bytes() == b"a new file saved at the path meanwhile"
    restored = [r for r in env.audit() if r["action"] == "restore" and r["outcome"] == "done"]
    assert sorted(Path(str(r["path"])).name for r in restored) == ["c0.jpg", "c2.jpg", "c3.jpg", "c4.jpg"]
    assert pending_intents(env) == [] and stray_temps(env.root, env.quarantine) == []
    for path, data in files.items():
        if path != blocker:
            assert path.is_file() and sha256(path) == sha256(data), f"{path} not restored"
    assert [p.name for p in files_under(env.quarantine)] == ["c1.jpg"]


def test_restoring_many_files_syncs_each_directory_once_not_once_per_file(env: Env) -> None:
    """`restore --all` of 12 files from one quarantine directory into one directory calls
    fsync a few times in all (each directory once per batch, and the store's own), not
    four times per file as when each file was synced on its own (bench/restore_all.py)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    for i in range(12):
        data = picture(7500 + i)
        write(env.root / f"o{i}.jpg", data)
        write(env.root / "sub" / f"c{i}.jpg", data)
    env.write_config(actions={"exact": "quarantine"})
    assert scan(env)[0] == 0
    trace = env.base / "fsync.trace"
    argv = [sys.executable, "-m", "dedupd", "restore", "--all", "--db", str(env.db)]
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace), *argv],
                          capture_output=True, text=True, env=env.env, cwd=env.base, timeout=120, check=False)
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "12 restored, 0 refused" in done.stdout
    syncs = [line for line in trace.read_text().splitlines() if "sync(" in line]
    assert len(syncs) < 12, syncs
