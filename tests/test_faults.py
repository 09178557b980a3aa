"""The fault-injection switch: off unless DEDUPD_FAULT names a step, and a glob limits it to files."""

from __future__ import annotations

from pathlib import Path

import pytest

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
