"""The daemon's parts alone: settling, the root breakers, reconciliation (real files, a real store)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dedupd.daemon import breakers
from dedupd.daemon.breakers import RootState
from dedupd.daemon.reconcile import Reconciliation
from dedupd.daemon.settling import OPEN_WRITE_TIMEOUT, Pending
from dedupd.models import FileStat
from dedupd.store import Store
from dedupd.config import Config
from dedupd.walking import Filter

SETTLE = 2.0


def stat(size: int, mtime_s: float = 1000.0) -> FileStat:
    return FileStat(dev=1, ino=2, size=size, mtime_ns=int(mtime_s * 1e9))


# --- settling ---------------------------------------------------------------------


def test_a_file_is_complete_only_after_holding_still_for_the_settle_time() -> None:
    """The first look starts the clock; a change of size or of ctime restarts it; the
    same look SETTLE later says complete."""
    p = Pending(Path("/r"))
    wall = 5000.0
    assert not p.complete(stat(10), 1, now=0.0, wall_now=wall, settle=SETTLE)
    assert not p.complete(stat(10), 1, now=1.9, wall_now=wall, settle=SETTLE)
    assert not p.complete(stat(20), 1, now=2.5, wall_now=wall, settle=SETTLE)  # grew: again
    assert not p.complete(stat(20), 1, now=4.0, wall_now=wall, settle=SETTLE)
    assert not p.complete(stat(20), 7, now=4.4, wall_now=wall, settle=SETTLE)  # ctime moved: again
    assert not p.complete(stat(20), 7, now=6.3, wall_now=wall, settle=SETTLE)
    assert p.complete(stat(20), 7, now=6.4, wall_now=wall, settle=SETTLE)


def test_a_file_written_and_not_closed_waits_for_its_close_then_the_settle_time() -> None:
    """inotify saw a write and no close: the file waits (up to OPEN_WRITE_TIMEOUT); after
    the close it is complete SETTLE later; a walked file untouched for long is complete at once."""
    p = Pending(Path("/r"))
    p.on_event(closed=False, written=True, inotify=True, now=0.0)
    assert not p.complete(stat(10), 1, now=0.0, wall_now=5000.0, settle=SETTLE)
    assert not p.complete(stat(10), 1, now=100.0, wall_now=5100.0, settle=SETTLE)
    p.on_event(closed=True, written=False, inotify=True, now=100.0)
    assert not p.complete(stat(10), 1, now=101.0, wall_now=5101.0, settle=SETTLE)
    assert p.complete(stat(10), 1, now=102.0, wall_now=5102.0, settle=SETTLE)

    never_closed = Pending(Path("/r"))
    never_closed.on_event(closed=False, written=True, inotify=True, now=0.0)
    never_closed.complete(stat(10), 1, now=0.0, wall_now=5000.0, settle=SETTLE)
    assert never_closed.complete(stat(10), 1, now=OPEN_WRITE_TIMEOUT, wall_now=5300.0, settle=SETTLE)

    walked = Pending(Path("/r"), from_walk=True)
    assert walked.complete(stat(10, mtime_s=1000.0), 1, now=700.0, wall_now=5000.0, settle=SETTLE)
    fresh = Pending(Path("/r"), from_walk=True)
    assert not fresh.complete(stat(10, mtime_s=4999.5), 1, now=700.0, wall_now=5000.0, settle=SETTLE)


# --- breakers ---------------------------------------------------------------------


def watched(root: Path) -> RootState:
    st = os.stat(root)
    return RootState(root, st.st_dev, st.st_ino)


def test_a_root_breaker_trips_on_an_emptied_removed_or_replaced_root_and_only_once(tmp_path: Path) -> None:
    """Healthy: no problem. Emptied while files are indexed: 'empty' (not when vouched for).
    Replaced by another directory: 'replaced'. Removed: 'not accessible'. check() trips once."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"x")
    state = watched(root)
    indexed = {root: 3}
    assert breakers.problem(state, lambda r: indexed.get(r, 0)) is None
    (root / "a.jpg").unlink()
    assert "empty" in (breakers.problem(state, lambda r: indexed.get(r, 0)) or "")
    state.vouched = True
    assert breakers.problem(state, lambda r: indexed.get(r, 0)) is None
    other = tmp_path / "other"  # made while the root exists: another inode
    other.mkdir()
    (other / "b.jpg").write_bytes(b"y")
    root.rmdir()
    assert "not accessible" in (breakers.problem(state, lambda r: 0) or "")
    other.rename(root)
    assert "replaced" in (breakers.problem(state, lambda r: 0) or "")
    paused: dict[Path, str] = {}
    breakers.check([state], lambda r: 0, paused)
    first = state.tripped
    assert first is not None and paused == {root: first}
    root.joinpath("b.jpg").unlink()
    root.rmdir()
    breakers.check([state], lambda r: 0, paused)
    assert state.tripped == first, "a tripped breaker keeps its first cause"


# --- reconciliation -------------------------------------------------------------------


def test_a_sweep_forgets_files_deleted_while_away_and_nothing_on_an_emptied_root(tmp_path: Path) -> None:
    """After a whole-root walk is planned, the sweep forgets the indexed files that are gone;
    when the root is empty (unmounted) its breaker trips and nothing is forgotten."""
    root = tmp_path / "root"
    root.mkdir()
    store = Store.open(tmp_path / "db")
    paths = [root / f"{i}.jpg" for i in range(4)]
    with store.atomic():
        for p in paths:
            p.write_bytes(b"x" * 10)
            store.upsert_error(p, FileStat.from_path(p), "corrupt", "test")
    paths[1].unlink()
    roots = {root: watched(root)}
    paused: dict[Path, str] = {}
    forgotten: list[Path] = []
    config = Config(roots=(root,))
    rec = Reconciliation(store, lambda: Filter(config))

    def sweep() -> None:
        rec.walk_root(root)
        pending: dict[Path, Pending] = {}
        while rec.walks:
            rec.advance_walks(pending)
        assert set(pending) == {paths[0], paths[2], paths[3]}
        rec.finish_walks({}, [])  # every walked file handled
        clock = 0.0
        while rec.sweeps:
            rec.advance_sweeps(roots, lambda: breakers.check(roots.values(), store.count_under, paused),
                               frozenset(), forgotten.append, clock, 1.0)
            clock += 0.5

    sweep()
    assert forgotten == [paths[1]]
    assert not rec.busy and rec.in_progress() == 0
    for p in (paths[0], paths[2], paths[3]):
        p.unlink()
    sweep_root_emptied = rec
    sweep_root_emptied.walk_root(root)
    while sweep_root_emptied.walks:
        sweep_root_emptied.advance_walks({})
    sweep_root_emptied.finish_walks({}, [])
    while sweep_root_emptied.sweeps:
        sweep_root_emptied.advance_sweeps(
            roots, lambda: breakers.check(roots.values(), store.count_under, paused), frozenset(), forgotten.append, 0.0, 1.0
        )
    assert forgotten == [paths[1]], "files forgotten on an emptied root"
    assert "empty" in (roots[root].tripped or "") and root in paused
    store.close()


def _indexed(store: Store, *paths: Path) -> None:
    """Small files, recorded in the store (as unreadable: no fingerprint needed)."""
    with store.atomic():
        for p in paths:
            p.write_bytes(b"x" * 10)
            store.upsert_error(p, FileStat.from_path(p), "corrupt", "test")


def _sweeping(store: Store, root: Path) -> Reconciliation:
    """A reconciliation whose whole-root walk of ``root`` is planned: its sweep starts."""
    rec = Reconciliation(store, lambda: Filter(Config(roots=(root,))))
    rec.walk_root(root)
    while rec.walks:
        rec.advance_walks({})
    rec.finish_walks({}, [])
    return rec


def test_a_file_renamed_while_the_sweep_runs_keeps_its_record(tmp_path: Path) -> None:
    """A file the sweep finds missing is forgotten only after the rename delay: renamed
    while the sweep runs, its new name is followed first (its record moves) and the
    sweep forgets nothing; one still missing after the delay is forgotten."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    store = Store.open(tmp_path / "db")
    renamed, deleted = root / "renamed.jpg", root / "deleted.jpg"
    _indexed(store, renamed, deleted)
    roots = {root: watched(root)}
    paused: dict[Path, str] = {}
    forgotten: list[Path] = []
    rec = _sweeping(store, root)
    new_name = root / "sub" / "renamed.jpg"
    os.rename(renamed, new_name)  # while the daemon runs: the sweep looks after it
    deleted.unlink()

    def advance(now: float) -> None:
        rec.advance_sweeps(roots, lambda: breakers.check(roots.values(), store.count_under, paused),
                           frozenset(), forgotten.append, now, 1.5)

    advance(0.0)
    assert forgotten == [] and rec.sweeps, "forgotten before a rename could be followed"
    assert not rec.busy, "a sweep only waiting keeps the loop busy"
    advance(1.0)
    assert forgotten == []
    record = store.record_for_path(renamed)
    assert record is not None
    store.move_file(record.id, new_name)  # the loop followed the rename
    advance(1.6)
    assert forgotten == [deleted]
    assert not rec.sweeps
    store.close()


def test_a_slow_look_does_not_use_up_the_rename_delay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The delay a missing file waits counts from after the sweep's look, not from
    before it: a look that took longer than the delay (2,000 lstats on a slow share)
    still leaves the rename its chance in the passes after it."""
    root = tmp_path / "root"
    root.mkdir()
    store = Store.open(tmp_path / "db")
    gone = root / "gone.jpg"
    _indexed(store, gone)
    gone.unlink()
    roots = {root: watched(root)}
    forgotten: list[Path] = []
    rec = _sweeping(store, root)

    def advance(now: float) -> None:
        rec.advance_sweeps(roots, lambda: None, frozenset(), forgotten.append, now, 0.2)

    monkeypatch.setenv("DEDUPD_FAULT", "sweep.before_look:sleep=0.4")
    advance(0.0)  # the look takes 0.4 s: the file is found missing at 0.4
    monkeypatch.delenv("DEDUPD_FAULT")
    advance(0.45)
    assert forgotten == [], "forgotten in the pass right after a look longer than the delay"
    advance(0.7)
    assert forgotten == [gone]
    store.close()
