"""The fault-injection switch: off unless DEDUPD_FAULT names a step, and a glob limits it to files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from daemon_helpers import Env, cli, picture, restore_everything, scan, write

from dedupd import faults


def test_a_fault_fires_only_at_its_step_and_for_files_its_glob_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """`worker.fingerprint:error:poison*` raises for poison*.jpg at that step only; unset, nothing fires."""
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.point("worker.fingerprint", Path("/x/poison1.jpg"))  # unset: nothing
    monkeypatch.setenv(faults.ENV, "quarantine.after_copy:sleep=0, worker.fingerprint:error:poison*")
    faults.point("worker.fingerprint", Path("/x/good.jpg"))
    faults.point("quarantine.after_take", Path("/x/poison1.jpg"))
    with pytest.raises(OSError, match="injected fault at worker.fingerprint"):
        faults.point("worker.fingerprint", Path("/x/poison1.jpg"))
    faults.point("worker.fingerprint")  # a glob, and no file named: nothing
    monkeypatch.setenv(faults.ENV, "pipeline.ingest:bug:poison*")
    with pytest.raises(TypeError, match="injected bug at pipeline.ingest"):
        faults.point("pipeline.ingest", Path("/x/poison1.jpg"))
    monkeypatch.setenv(faults.ENV, "quarantine.after_copy:error")
    with pytest.raises(OSError):
        faults.point("quarantine.after_copy", Path("/x/any.jpg"))  # no glob: every file


def test_every_step_is_listed_once() -> None:
    """faults.STEPS names each step once, the worker's among them."""
    steps = [s for group in faults.STEPS.values() for s in group]
    assert len(steps) == len(set(steps))
    assert "worker.fingerprint" in steps


# --- the glob at the steps of a move and a restore, in a real `dedupd scan` and `dedupd restore` ---


def _name(step: str) -> str:
    """The file a test aims the fault at ``step`` on: ``after_copy.jpg`` for ``quarantine.after_copy``."""
    return step.split(".")[1] + ".jpg"


@pytest.mark.parametrize("action", ["quarantine", "symlink"])
def test_a_name_glob_fires_at_each_step_of_a_move_for_that_file_only(env: Env, action: str) -> None:
    """Each step of a move, given an I/O error for one file name, fails that file's move
    at that step only; the other files (one aimed at by another step, one by none) move."""
    steps = faults.STEPS[action]
    for i, step in enumerate(steps):
        data = picture(9400 + i)
        write(env.root / f"o{i}.jpg", data)
        write(env.root / "sub" / _name(step), data)
    write(env.root / "c.jpg", picture(9499))
    write(env.root / "sub" / "control.jpg", picture(9499))
    env.write_config(actions={"exact": action})
    code, _, err = scan(env, fault=",".join(f"{step}:error:{_name(step)}" for step in steps))
    assert code == 0, err
    moves = {Path(str(r["path"])).name: r for r in env.audit() if r["action"] == action}
    for step in steps:
        row = moves[_name(step)]
        assert (row["outcome"], row["detail"]) == ("failed", f"while moving: injected fault at {step}"), row
    assert moves["control.jpg"]["outcome"] == "done", moves["control.jpg"]


def test_a_name_glob_fires_at_each_step_of_a_restore_for_that_file_only(env: Env) -> None:
    """`dedupd restore A B` with a kill at a restore step for B's name dies there for B
    (its restore left pending), after A went through that same step; the next restore
    settles what the kill left, and `restore --all` finishes everything."""
    steps = faults.STEPS["restore"]
    files: dict[Path, bytes] = {}
    for i, step in enumerate(steps):
        for name, seed in ((f"control{i}.jpg", 9500 + i), (_name(step), 9600 + i)):
            data = picture(seed)
            files[write(env.root / f"o{name}", data)] = data
            files[write(env.root / "sub" / name, data)] = data
    env.write_config(actions={"exact": "quarantine"})
    assert scan(env)[0] == 0
    moved = {Path(str(r["path"])): r for r in env.moves()}
    assert len(moved) == 2 * len(steps), moved
    for i, step in enumerate(steps):
        control, target = env.root / "sub" / f"control{i}.jpg", env.root / "sub" / _name(step)
        fault = f"{step}:kill:{_name(step)}"
        code, _, err = cli(env, "restore", str(moved[control]["id"]), str(moved[target]["id"]), fault=fault)
        assert code == -signal.SIGKILL, f"the fault at {step} never fired for {target.name}: {code}\n{err}"
        pending = env.query("SELECT destination FROM intents WHERE state = 'pending' AND action = 'restore'")
        assert str(target) in [os.fsdecode(p) for (p,) in pending], pending
        # A went through the step B died at (the two are restored in one batch, step by step)
        assert control.is_file(), f"{control} not put back before the kill"
        if step == "restore.after_unlink":
            assert not Path(str(moved[control]["destination"])).exists(), "A's quarantined copy still there"
    restore_everything(env, files)
