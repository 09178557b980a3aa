"""The store: transactions that wait for each other, costs that do not grow with size.

Every test here runs against both backends (the ``open_store`` fixture)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dedupd.models import FileStat, Fingerprint, Hashes


def _plan(store: Any, query: str) -> str:
    """The query plan, lower case: the index it uses is named in it ("idx_files_seq")."""
    if hasattr(store, "db"):  # SQLite
        rows = store.db.execute(f"EXPLAIN QUERY PLAN {query}").fetchall()
    else:
        store._x("SET enable_seqscan = off")  # a tiny table: ask whether the index can serve it
        rows = store._x(f"EXPLAIN {query}").fetchall()
    return " ".join(str(r[-1]) for r in rows).lower()


def _fp(n: int) -> Fingerprint:
    return Fingerprint(f"{n:064x}", f"px{n}", Hashes(n, n, bytes(48)), 10, 10, "PNG", 30.0)


def test_a_second_writer_waits_instead_of_failing(tmp_path: Path, open_store: Callable[..., Any]) -> None:
    """A read-then-write transaction started while another connection writes waits for
    it (BEGIN IMMEDIATE and the busy timeout) instead of failing with 'database is locked'."""
    a, b = open_store(), open_store()
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


def test_seniority_is_kept_for_a_path_and_next_seq_uses_an_index(tmp_path: Path, open_store: Callable[..., Any]) -> None:
    """A new version of a stored path keeps its seq; MAX(seq) is an index lookup, not a scan."""
    store = open_store()
    first = store.upsert_file(tmp_path / "a.jpg", FileStat(1, 1, 1, 1), _fp(1))
    store.upsert_file(tmp_path / "b.jpg", FileStat(1, 2, 1, 1), _fp(2))
    seq = store.record(first).seq  # type: ignore[union-attr]
    store.upsert_file(tmp_path / "a.jpg", FileStat(9, 1, 5, 7), _fp(3))  # touched, remounted, rewritten
    assert store.record(first).seq == seq  # type: ignore[union-attr]
    assert "idx_files_seq" in _plan(store, "SELECT COALESCE(MAX(seq), 0) + 1 FROM files")
    store.close()


def test_unseen_under_lists_what_a_scan_did_not_see(tmp_path: Path, open_store: Callable[..., Any]) -> None:
    """The removal pass comes from the store, in chunks, and survives deletion while iterating."""
    store = open_store()
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


#: what unacted_matches() computed with a pass over every match before m014: the reference
_OWED_BY_A_PASS = (
    "SELECT m.file_id FROM matches m JOIN files d ON d.id = m.file_id JOIN files o ON o.id = m.original_id"
    " WHERE COALESCE((SELECT a.outcome = 'failed' OR (a.outcome = 'skipped' AND ("
    "    a.detail LIKE 'circuit breaker%' OR a.detail LIKE 'actions on this root are paused%'))"
    "  FROM audit a WHERE a.sha256 = d.sha256 AND a.original_sha256 = o.sha256 AND a.path = d.path"
    "  ORDER BY a.id DESC LIMIT 1), 1)"
    " AND NOT EXISTS (SELECT 1 FROM decisions k WHERE k.kind = 'keep' AND k.sha_a = d.sha256 AND k.path_a = d.path)"
    " ORDER BY m.file_id"
)


def _rows(store: Any, query: str) -> list[tuple[Any, ...]]:
    """A query of the test's own on either backend (PostgreSQL's booleans are no integers)."""
    if hasattr(store, "db"):  # SQLite
        return [tuple(r) for r in store.db.execute(query)]
    query = query.replace("COALESCE((SELECT a.outcome = 'failed' OR", "COALESCE((SELECT (a.outcome = 'failed' OR")
    query = query.replace("paused%'))  FROM", "paused%')))::int  FROM").replace("LIMIT 1), 1) AND", "LIMIT 1), 1) = 1 AND")
    return [tuple(r) for r in store._x(query)]


def test_owed_actions_are_found_through_an_index_and_equal_a_pass_over_every_match(
    tmp_path: Path, open_store: Callable[..., Any]
) -> None:
    """unacted_matches() reads the owed matches through the partial index m014 keeps, and after
    every step of a random history (matches made and re-pointed, audit rows of each outcome,
    renames, rewrites, deletions) it returns exactly what a pass over every match returns."""
    import random

    from dedupd.audit import Audit
    from dedupd.models import Distances, Match, Orientation, Tier

    store = open_store()
    audit = Audit(store)
    rng = random.Random(9)
    match = Match(Tier.EXACT, Distances(0, 0, 0.0), 100.0, Orientation.IDENTITY, "same bytes")
    ids: dict[int, Path] = {}
    outcomes = [("done", "moved"), ("failed", "EIO"), ("skipped", "circuit breaker open: too many actions"),
                ("skipped", "actions on this root are paused"), ("skipped", "not the checked file"), ("done", "logged")]
    for n in range(20):
        path = tmp_path / f"f{n}.jpg"
        ids[store.upsert_file(path, FileStat(1, n + 1, 10, 1), _fp(n % 7))] = path
    for step in range(400):
        with store.atomic():
            file_id, other = rng.sample(sorted(ids), 2)
            fp = store.record(file_id).fingerprint  # type: ignore[union-attr]
            original = store.record(other)
            kind = rng.randrange(6)
            if kind <= 1:
                store.set_match(file_id, other, match, tie=False)
            elif kind == 2 and (found := store.match_of(file_id)) is not None:
                orig = store.record(found[0])
                what, detail = rng.choice(outcomes)
                audit.append(action=rng.choice(["quarantine", "log"]), outcome=what, path=ids[file_id], detail=detail,
                             sha256=fp.sha256 if fp else None,  # type: ignore[union-attr]
                             original_sha256=orig.fingerprint.sha256 if orig and orig.fingerprint else None)
            elif kind == 3:
                new = tmp_path / f"moved{step}.jpg"
                store.move_file(file_id, new)
                ids[file_id] = new
            elif kind == 4:
                store.upsert_file(ids[file_id], FileStat(1, file_id, 10 + step, 1), _fp(rng.randrange(7)))
            elif original is not None and len(ids) > 6:
                store.delete_file(other)
                del ids[other]
                new_path = tmp_path / f"new{step}.jpg"
                ids[store.upsert_file(new_path, FileStat(1, 1000 + step, 10, 1), _fp(rng.randrange(7)))] = new_path
        owed = store.unacted_matches()
        assert owed == [r[0] for r in _rows(store, _OWED_BY_A_PASS)], f"step {step}"
    assert store.unacted_matches(), "the history left some action owed"
    if not hasattr(store, "db"):  # PostgreSQL: the partial index can serve the owed matches
        assert "matches_owed" in _plan(store, "SELECT m.file_id FROM matches m WHERE m.owed = 1 ORDER BY m.file_id")
        store.close()
        return
    run: list[str] = []
    store.db.conn.set_trace_callback(run.append)
    store.unacted_matches()
    store.db.conn.set_trace_callback(None)
    query = next(sql for sql in run if "FROM matches" in sql)
    plan = " ".join(str(r[-1]) for r in store.db.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "USING INDEX matches_owed" in plan and "SCAN m" not in plan.replace("SCAN m USING", ""), plan
    store.close()


def test_a_skipped_audit_row_without_a_detail_is_recorded_and_leaves_the_action_owed(
    tmp_path: Path, open_store: Callable[..., Any]
) -> None:
    """A skipped audit row with no detail inserts (the trigger's flag is never NULL) and the
    owed flag it leaves equals a pass over every match, after a done row and again after one."""
    import os

    from dedupd.models import Distances, Match, Orientation, Tier

    store = open_store()
    match = Match(Tier.EXACT, Distances(0, 0, 0.0), 100.0, Orientation.IDENTITY, "same bytes")
    original = store.upsert_file(tmp_path / "o.jpg", FileStat(1, 1, 10, 1), _fp(1))
    dup = store.upsert_file(tmp_path / "d.jpg", FileStat(1, 2, 10, 1), _fp(1))
    store.set_match(dup, original, match, tie=False)
    sha = _fp(1).sha256
    for n, (outcome, owed) in enumerate([("done", []), ("skipped", [dup]), ("done", []), ("skipped", [dup])]):
        with store.atomic():
            store.audit_insert({"at": float(n), "action": "quarantine", "outcome": outcome,
                                "path": os.fsencode(tmp_path / "d.jpg"), "sha256": sha, "original_sha256": sha,
                                "detail": "moved" if outcome == "done" else None, "dedup_key": f"k{n}"})  # fmt: skip
        assert store.unacted_matches() == owed == [r[0] for r in _rows(store, _OWED_BY_A_PASS)], (n, outcome)
    store.close()


def test_the_review_pages_walk_the_path_index(open_store: Callable[..., Any]) -> None:
    """A page of groups after a given original reads the path index from that point
    (path, then id: hosts sharing a store may hold the same path), with no sort of
    every file: a page costs the same at any depth and any size."""
    store = open_store()
    for i in range(3):
        store.upsert_file(Path(f"/p/{i}.jpg"), FileStat(1, i, 1, 1), _fp(i))
    query = (
        "SELECT o.id, o.path FROM files o WHERE (o.path, o.id) > (x'2f702f302e6a7067', 1) AND EXISTS"
        " (SELECT 1 FROM matches m JOIN files d ON d.id = m.file_id WHERE m.original_id = o.id)"
        " ORDER BY o.path ASC, o.id ASC LIMIT 51"
    )
    if not hasattr(store, "db"):
        query = query.replace("x'2f702f302e6a7067'", "'\\x2f702f302e6a7067'::bytea")
        # a tiny table: ask whether the index can serve the order, not what is cheapest at 3 rows
        store._x("SET enable_bitmapscan = off")
        store._x("SET enable_sort = off")
    plan = _plan(store, query)
    assert "idx_files_path" in plan and "temp b-tree" not in plan and " sort " not in f" {plan} ", plan
