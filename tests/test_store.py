"""The store: transactions that wait for each other, costs that do not grow with size."""

from __future__ import annotations

import threading
from pathlib import Path

from dedupd.models import FileStat, Fingerprint, Hashes
from dedupd.store import Store


def _fp(n: int) -> Fingerprint:
    return Fingerprint(f"{n:064x}", f"px{n}", Hashes(n, n, bytes(48)), 10, 10, "PNG", 30.0)


def test_a_second_writer_waits_instead_of_failing(tmp_path: Path) -> None:
    """A read-then-write transaction started while another connection writes waits for
    it (BEGIN IMMEDIATE and the busy timeout) instead of failing with 'database is locked'."""
    a, b = Store.open(tmp_path / "s.db"), Store.open(tmp_path / "s.db")
    a.upsert_file(tmp_path / "x.jpg", FileStat(1, 1, 1, 1), _fp(1))
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def other_writer() -> None:
        try:
            with b.atomic():
                b.upsert_file(tmp_path / "y.jpg", FileStat(1, 2, 1, 1), _fp(2))
                holding.set()
                release.wait(10)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    t = threading.Thread(target=other_writer)
    t.start()
    assert holding.wait(10)
    timer = threading.Timer(0.3, release.set)
    timer.start()
    with a.atomic():  # a read, then a write: the pattern that failed at once before
        a.record_for_path(tmp_path / "x.jpg")
        a.upsert_file(tmp_path / "z.jpg", FileStat(1, 3, 1, 1), _fp(3))
    t.join(10)
    timer.join()
    assert errors == []
    assert a.counts()["files"] == 3
    a.close()
    b.close()


def test_seniority_is_kept_for_a_path_and_next_seq_uses_an_index(tmp_path: Path) -> None:
    """A new version of a stored path keeps its seq; MAX(seq) is an index lookup, not a scan."""
    store = Store.open(tmp_path / "s.db")
    first = store.upsert_file(tmp_path / "a.jpg", FileStat(1, 1, 1, 1), _fp(1))
    store.upsert_file(tmp_path / "b.jpg", FileStat(1, 2, 1, 1), _fp(2))
    seq = store.record(first).seq  # type: ignore[union-attr]
    store.upsert_file(tmp_path / "a.jpg", FileStat(9, 1, 5, 7), _fp(3))  # touched, remounted, rewritten
    assert store.record(first).seq == seq  # type: ignore[union-attr]
    plan = " ".join(str(r[-1]) for r in store.db.execute("EXPLAIN QUERY PLAN SELECT COALESCE(MAX(seq), 0) + 1 FROM files"))
    assert "SCAN files" not in plan or "INDEX" in plan, plan
    store.close()


def test_unseen_under_lists_what_a_scan_did_not_see(tmp_path: Path) -> None:
    """The removal pass comes from the store, in chunks, and survives deletion while iterating."""
    store = Store.open(tmp_path / "s.db")
    ids = [store.upsert_file(tmp_path / "r" / f"{i}.jpg", FileStat(1, i, 1, 1), _fp(i)) for i in range(10)]
    store.upsert_file(tmp_path / "other" / "x.jpg", FileStat(1, 99, 1, 1), _fp(99))
    store.start_seen()
    for i in ids[::2]:
        store.mark_seen(i)
    unseen = []
    for file_id, path in store.unseen_under(tmp_path / "r", chunk=2):
        unseen.append(path.name)
        store.delete_file(file_id)
    assert sorted(unseen) == sorted(f"{i}.jpg" for i in range(1, 10, 2))
    assert store.counts()["files"] == 6
    store.close()
