"""A file judged unreadable, or skipped for crashing, by one build of dedupd is read
once more by another (an upgrade of dedupd or of a decoder), with its crash count
starting again; under the same build it is not read again while it is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import tqdm

import helpers as H
from dedupd import config as config_module
from dedupd.build import build_id
from dedupd.crashes import CRASH_LIMIT
from dedupd.models import FileStat
from dedupd.scan import scan
from dedupd.store.sqlite import Store


tqdm.tqdm.monitor_interval = 0  # no monitor thread left behind by the in-process scans


def _another_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """As after an upgrade: every place that asks which build this is gets another answer."""
    monkeypatch.setattr("dedupd.build.build_id", lambda: "another-build")


def test_the_build_is_a_digest_of_the_sources_and_the_decoders() -> None:
    """Sixteen hex digits, the same on every call of a process."""
    assert len(build_id()) == 16 and int(build_id(), 16) >= 0 and build_id() == build_id()


def test_a_file_skipped_for_a_bug_is_read_again_by_another_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that made dedupd's code raise CRASH_LIMIT times is recorded as internal_error
    and not read again by the same build, even with the bug gone; another build reads it
    and indexes it."""
    root = tmp_path / "photos"
    poison = H.save(H.photo(1), root / "poison.jpg")
    H.save(H.photo(2), root / "good.jpg")
    store = Store.open(tmp_path / "s.db")
    config = config_module.from_mapping({})
    try:
        monkeypatch.setenv("DEDUPD_FAULT", "worker.fingerprint:bug:poison*")
        for _ in range(CRASH_LIMIT):
            scan([root], store, config, workers=1, progress=False)
        assert store.record_for_path(poison).error == "internal_error"  # type: ignore[union-attr]
        monkeypatch.delenv("DEDUPD_FAULT")  # the bug fixed, but this build judged the file
        assert scan([root], store, config, workers=1, progress=False).unchanged == 2
        assert store.record_for_path(poison).error == "internal_error"  # type: ignore[union-attr]
        _another_build(monkeypatch)
        summary = scan([root], store, config, workers=1, progress=False)
        assert (summary.fingerprinted, summary.unchanged) == (1, 1)
        record = store.record_for_path(poison)
        assert record is not None and record.error is None and record.fingerprint is not None
    finally:
        store.close()


def test_crash_counts_start_again_under_another_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two crashes of one file version count 2; under another build, 0, and the next is 1."""
    store = Store.open(tmp_path / "s.db")
    try:
        path, st = Path("/photos/a.jpg"), FileStat(dev=1, ino=2, size=3, mtime_ns=4, ctime_ns=4)
        for n in (1, 2):
            assert store.add_crash(path, st) == n
        assert store.crash_count(path, st) == 2
        _another_build(monkeypatch)
        assert store.crash_count(path, st) == 0
        assert store.add_crash(path, st) == 1
    finally:
        store.close()
