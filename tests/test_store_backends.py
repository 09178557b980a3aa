"""Both store backends answer alike: records, groups, counters, decisions, audit,
intents, review pages and locks, run once against SQLite and once against a real
PostgreSQL server (the ``open_store`` fixture), plus the one schema they share."""

from __future__ import annotations

import collections

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dedupd.errors import StoreLockedError
from dedupd.models import (
    DecisionKind,
    Distances,
    FileStat,
    Fingerprint,
    Hashes,
    Match,
    Orientation,
    PostgresUrl,
    Tier,
)

Opener = Callable[..., Any]


def _fp(n: int, *, sha: str | None = None) -> Fingerprint:
    turned = tuple(
        (o, Hashes((n * 7 + i) % (1 << 64), (n * 11 + i) % (1 << 64), bytes([i]) * 48))
        for i, o in enumerate(o for o in Orientation if o is not Orientation.IDENTITY)
    )
    return Fingerprint(
        sha or f"{n:064x}",
        f"px{n}",
        Hashes((1 << 64) - 1 - n, (1 << 63) + n, bytes(range(48))),  # above 2**63: stored signed
        640,
        480,
        "JPEG",
        31.5,
        variants=turned,
        crop_keys=((1 << 64) - 2, 5),
    )


def _match(tier: Tier = Tier.EXACT, similarity: float = 1.0) -> Match:
    return Match(tier, Distances(1, 2, 3.25), similarity, Orientation.ROT90, f"{tier} reason")


def _recount(store: Any) -> dict[str, int]:
    """The counters as full COUNTs would give them, through the store's own reads."""
    records = store.records(i for i, _ in store.ids_under(Path("/")))
    matched = {fid: store.match_of(fid) for fid in records}
    out = {
        "files": sum(1 for r in records.values() if r.error is None),
        "errors": sum(1 for r in records.values() if r.error is not None),
        "groups": len({m[0] for m in matched.values() if m is not None}),
        "duplicates": sum(1 for m in matched.values() if m is not None),
    }
    for tier in Tier:
        out[f"duplicates_{tier.value}"] = sum(1 for m in matched.values() if m is not None and m[1].tier is tier)
    return out


def test_a_record_round_trips(open_store: Opener) -> None:
    """Every field of a record comes back as stored: a path that is not UTF-8, hashes above
    2**63, the seven turned variants, crop keys, ctime; an error record has no fingerprint."""
    store = open_store()
    path = Path(os.fsdecode(b"/photos/caf\xe9 \xff.jpg"))
    fp = _fp(3)
    file_id = store.upsert_file(path, FileStat(dev=2**40, ino=77, size=1234, mtime_ns=10**18, ctime_ns=10**18 + 5), fp)
    rec = store.record_for_path(path)
    assert rec is not None and rec.id == file_id and rec.path == path
    assert rec.fingerprint == fp
    assert rec.stat == FileStat(dev=2**40, ino=77, size=1234, mtime_ns=10**18, ctime_ns=10**18 + 5)
    assert store.records_by_inode(rec.stat) == [rec]
    assert store.records([file_id, file_id]) == {file_id: rec}
    assert store.ids_with("sha256", fp.sha256) == [file_id] == store.ids_with("pixel_digest", fp.pixel_digest)
    assert list(store.all_hashes()) == [(file_id, fp.hashes.phash, fp.crop_keys)]
    err = store.upsert_error(Path("/photos/bad.jpg"), FileStat(1, 2, 3, 4), "corrupt", "truncated")
    bad = store.record(err)
    assert bad is not None and bad.fingerprint is None and bad.error == "corrupt"
    assert [(p.name, r, d) for p, r, d, _ in store.errors()] == [("bad.jpg", "corrupt", "truncated")]
    assert store.count_under(Path("/photos")) == 2 and store.count_under(Path("/photo")) == 0


def test_paths_under_a_root_and_the_removal_pass(open_store: Opener) -> None:
    """ids_under, ids_under_after and unseen_under take a root's subtree only, in path
    order ('/r2' and '/r.jpg' are not under '/r')."""
    store = open_store()
    names = ["/r/a.jpg", "/r/b/c.jpg", "/r/z.jpg", "/r2/x.jpg", "/r.jpg", "/q/y.jpg"]
    ids = {n: store.upsert_file(Path(n), FileStat(1, i, 1, 1), _fp(i)) for i, n in enumerate(names)}
    assert [str(p) for _, p in store.ids_under(Path("/r"))] == ["/r/a.jpg", "/r/b/c.jpg", "/r/z.jpg"]
    first = store.ids_under_after(Path("/r"), None, 2)
    assert [str(p) for _, p in first] == ["/r/a.jpg", "/r/b/c.jpg"]
    assert [str(p) for _, p in store.ids_under_after(Path("/r"), first[-1][1], 2)] == ["/r/z.jpg"]
    store.start_seen()
    store.mark_seen(ids["/r/b/c.jpg"])
    store.mark_seen(ids["/r/b/c.jpg"])  # twice: no error
    assert [str(p) for _, p in store.unseen_under(Path("/r"), chunk=1)] == ["/r/a.jpg", "/r/z.jpg"]


def test_counters_match_a_recount_after_many_row_changes(open_store: Opener) -> None:
    """files/errors/groups/duplicates stay equal to a recount through statements that
    change several matches at once (an original with three duplicates deleted), tier
    and original changes, and a file going from error to fingerprinted and back."""
    store = open_store()
    ids = [store.upsert_file(Path(f"/p/{i}.jpg"), FileStat(1, i, 1, 1), _fp(i)) for i in range(8)]
    with store.atomic():
        for dup in ids[1:4]:
            store.set_match(dup, ids[0], _match(), tie=False)
        store.set_match(ids[5], ids[4], _match(Tier.NEAR, 0.9), tie=True)
    assert store.counts() == _recount(store)
    assert store.counts()["groups"] == 2 and store.counts()["duplicates_exact"] == 3
    store.set_match(ids[5], ids[0], _match(Tier.PIXEL), tie=False)  # moves to the other group, new tier
    assert store.counts() == _recount(store) and store.counts()["groups"] == 1
    with store.atomic():
        orphans = store.delete_file(ids[0])  # one DELETE takes all four matches
    assert orphans == sorted([*ids[1:4], ids[5]])
    assert store.counts() == _recount(store) and store.counts()["groups"] == 0
    store.upsert_error(Path("/p/6.jpg"), FileStat(1, 6, 1, 1), "corrupt", "x")
    assert store.counts() == _recount(store) and store.counts()["errors"] == 1
    store.upsert_file(Path("/p/6.jpg"), FileStat(1, 6, 1, 1), _fp(6))
    assert store.counts() == _recount(store) and store.counts()["errors"] == 0


def test_groups_matches_and_similar_pairs(open_store: Opener) -> None:
    """groups() lists each original with its duplicates and similar pairs; a similar pair
    is never a member; match_of / matches_of / matched_between / clear_* agree."""
    store = open_store()
    a, b, c, d = (store.upsert_file(Path(f"/g/{n}.jpg"), FileStat(1, i, 1, 1), _fp(i)) for i, n in enumerate("abcd"))
    store.set_match(b, a, _match(), tie=True)
    store.set_similar(d, a, _match(Tier.SIMILAR, 0.7))
    store.set_similar(d, a, _match(Tier.SIMILAR, 0.75))  # again: updated, not doubled
    groups = list(store.groups())
    assert [(str(o), [(str(p), m.tier, tie) for p, m, tie in ms]) for o, ms in groups] == [
        ("/g/a.jpg", [("/g/b.jpg", Tier.EXACT, True), ("/g/d.jpg", Tier.SIMILAR, False)])
    ]
    assert store.match_of(b) == (a, _match(), True)
    assert store.matches_of([b, c]) == {b: (a, _match(), True)}
    assert store.duplicates_of(a) == [b]
    assert store.similar_of(d) == [(a, _match(Tier.SIMILAR, 0.75))]
    sha = {i: store.record(i).fingerprint.sha256 for i in (a, b)}
    assert store.matched_between(sha[a], sha[b], path_a=Path("/g/a.jpg"), path_b=Path("/g/b.jpg")) == [b]
    assert store.counts()["duplicates_similar"] == 0
    store.clear_similar(a)
    store.clear_match(b)
    assert list(store.groups()) == [] and store.match_of(b) is None
    store.move_file(c, Path("/g/c2.jpg"))
    assert store.record(c).path == Path("/g/c2.jpg")


def test_decisions_chosen_originals_and_unacted_matches(open_store: Opener) -> None:
    """A not-duplicates decision hides its pair from unacted_matches and follows a rename;
    a keep decision hides the kept file; a failed action is owed again, a done one is not."""
    store = open_store()
    o, d1, d2, d3 = (store.upsert_file(Path(f"/u/{n}.jpg"), FileStat(1, i, 1, 1), _fp(i)) for i, n in enumerate("oabc"))
    for dup in (d1, d2, d3):
        store.set_match(dup, o, _match(), tie=False)
    rec = {i: store.record(i) for i in (o, d1, d2, d3)}
    sha = {i: r.fingerprint.sha256 for i, r in rec.items()}
    assert store.unacted_matches() == [d1, d2, d3]
    first = store.add_decision(DecisionKind.NOT_DUPLICATES, sha[d1], rec[d1].path, sha[o], rec[o].path, note="n")
    assert first is not None
    assert store.add_decision(DecisionKind.NOT_DUPLICATES, sha[o], rec[o].path, sha[d1], rec[d1].path, note="n") is None
    assert store.is_ignored(sha[o], sha[d1], path_a=rec[o].path, path_b=rec[d1].path)
    assert store.add_decision(DecisionKind.KEEP, sha[d2], rec[d2].path, note="k") is not None
    assert store.is_kept(sha[d2], rec[d2].path)
    store.audit_insert({"at": 1.0, "action": "quarantine", "outcome": "failed", "path": os.fsencode(rec[d3].path),
                        "sha256": sha[d3], "original_sha256": sha[o], "dedup_key": "k1"})  # fmt: skip
    assert store.unacted_matches() == [d3]
    store.audit_insert({"at": 2.0, "action": "quarantine", "outcome": "skipped", "path": os.fsencode(rec[d3].path),
                        "sha256": sha[d3], "original_sha256": sha[o], "detail": "circuit breaker open", "dedup_key": "k2"})  # fmt: skip
    assert store.unacted_matches(original_ids=[o]) == [d3] and store.unacted_matches(file_ids=[d1]) == []
    store.audit_insert({"at": 3.0, "action": "log", "outcome": "done", "path": os.fsencode(rec[d3].path),
                        "sha256": sha[d3], "original_sha256": sha[o], "dedup_key": "k3"})  # fmt: skip
    assert store.unacted_matches() == [] and store.unacted_matches(logged=True) == [d3]
    store.move_file(o, Path("/u/renamed.jpg"))
    assert store.is_ignored(sha[o], sha[d1], path_a=Path("/u/renamed.jpg"), path_b=rec[d1].path)
    mark, pairs = store.ignores_after(0)
    assert pairs == [tuple(sorted([sha[o], sha[d1]]))] and store.ignores_after(mark) == (mark, [])
    assert [(x.kind, x.note) for x in store.decisions()] == [(DecisionKind.NOT_DUPLICATES, "n"), (DecisionKind.KEEP, "k")]
    store.remove_decision(first)
    assert [x.kind for x in store.decisions()] == [DecisionKind.KEEP]
    assert store.add_chosen(sha[o], "best") and not store.add_chosen(sha[o], "again") and store.is_chosen(sha[o])
    store.remove_chosen(sha[o])
    assert not store.is_chosen(sha[o])


def test_audit_counts_over_many_rows_in_one_transaction(open_store: Opener) -> None:
    """Thousands of audit rows written in one transaction (as dedupd migrate and restore
    --all write them), then more in another, are counted by action and outcome exactly
    as counting the rows does (PostgreSQL counts them per statement since p004)."""
    store = open_store()
    expected: collections.Counter[str] = collections.Counter()
    for batch in (range(3000), range(3000, 3100)):
        with store.atomic():
            for i in batch:
                action, outcome = ("quarantine", "symlink", "restore")[i % 3], ("done", "failed")[i % 2]
                assert store.audit_insert({"at": float(i), "action": action, "outcome": outcome, "dedup_key": f"k{i}"})
                expected[f"{action}_{outcome}"] += 1
            assert store.audit_insert({"at": 0.0, "action": "quarantine", "outcome": "done", "dedup_key": "k0"}) is None
    assert store.action_counts() == dict(expected)


def test_audit_intents_crashes_roots_and_status(open_store: Opener) -> None:
    """Audit rows are appended once per dedup key and counted by action and outcome;
    intents are inserted, updated and found by each key; crash counts, scanned roots
    and the daemon's status row round-trip."""
    store = open_store()
    with store.atomic():
        intent = store.intent_insert({"created_at": 1.0, "action": "quarantine", "state": "pending",
                                      "path": b"/a/x.jpg", "destination": b"/q/x.jpg", "original": b"/a/o.jpg"})  # fmt: skip
        audit_id = store.audit_insert({"at": 5.0, "action": "quarantine", "outcome": "done", "path": b"/a/x.jpg",
                                       "intent_id": intent, "dedup_key": "once", "decided_by": "cli"})  # fmt: skip
        assert store.audit_insert({"at": 6.0, "action": "quarantine", "outcome": "done", "dedup_key": "once"}) is None
        store.intent_update(intent, {"state": "done", "audit_id": audit_id, "updated_at": 2.0})
        store.intent_update(intent, {"audit_id": None, "updated_at": 3.0})  # audit_id is never cleared
    assert store.action_counts() == {"quarantine_done": 1}
    rows = store.audit_rows(moves=True)
    assert len(rows) == 1 and rows[0][0] == audit_id and rows[0][2:4] == ("quarantine", "done") and rows[0][19] == "cli"
    assert store.audit_rows(since=5.5) == [] and store.audit_rows(newest=1) == rows
    assert store.audit_rows(sha256="nothing") == []
    assert store.intent_of_audit(audit_id) == intent
    for key in ({"state": "done"}, {"intent_id": intent}, {"destination": Path("/q/x.jpg")},
                {"path": Path("/a/x.jpg")}, {"original": Path("/a/o.jpg")}):  # fmt: skip
        found = store.intent_rows(**key)
        assert [(r[0], r[2], r[14]) for r in found] == [(intent, "done", audit_id)], key
    assert store.intent_rows(state="pending") == []
    assert store.review_moves_page() == [audit_id]
    st = FileStat(1, 2, 300, 400)
    assert [store.add_crash(Path("/a/poison.jpg"), st) for _ in range(2)] == [1, 2]
    assert store.add_crash(Path("/a/poison.jpg"), FileStat(1, 2, 301, 400)) == 1  # another version
    assert store.crash_count(Path("/a/poison.jpg"), FileStat(1, 2, 301, 400)) == 1
    assert store.add_crash(Path("/a/poison.jpg"), FileStat(1, 2, 301, 400), "ValueError: boom") == 2
    assert store.crash_of(Path("/a/poison.jpg"), FileStat(1, 2, 301, 400)) == (2, "ValueError: boom")
    store.add_scanned_roots([Path("/b"), Path("/a")])
    store.add_scanned_roots([Path("/a")])
    assert store.scanned_roots() == [Path("/a"), Path("/b")]
    assert store.read_daemon_status() is None
    store.write_daemon_status(pid=42, started_at=1.5, state="running", data={"queue": 3})
    status = store.read_daemon_status()
    assert status is not None and (status["pid"], status["state"], status["queue"]) == (42, "running", 3)


def test_review_pages(open_store: Opener) -> None:
    """Group pages go forward and back by the original's path and filter by tier, folder
    and similarity; members come most similar first; similar pairs page by key."""
    store = open_store()
    originals = [store.upsert_file(Path(f"/v/{n}/o.jpg"), FileStat(1, i, 1, 1), _fp(i)) for i, n in enumerate("abcd")]
    dups = []
    for i, orig in enumerate(originals):
        for j, sim in enumerate((0.8, 0.95)):
            dup = store.upsert_file(Path(f"/v/{'abcd'[i]}/d{j}.jpg"), FileStat(2, i * 10 + j, 1, 1), _fp(100 + i * 10 + j))
            store.set_match(dup, orig, _match(Tier.NEAR if i % 2 else Tier.EXACT, sim), tie=False)
            dups.append(dup)
    page = store.review_group_page(limit=2)
    assert [i for i, _ in page] == originals[:2]
    assert [i for i, _ in store.review_group_page(after=(page[-1][1], page[-1][0]), limit=2)] == originals[2:]
    assert [i for i, _ in store.review_group_page(before=(os.fsencode("/v/c/o.jpg"), 0), limit=2)] == originals[:2]
    assert [i for i, _ in store.review_group_page(tiers=("near",))] == [originals[1], originals[3]]
    assert [i for i, _ in store.review_group_page(folder=Path("/v/b"))] == [originals[1]]
    assert store.review_count(min_similarity=0.9) == 4 and store.review_count(max_similarity=0.9, tiers=("exact",)) == 2
    assert store.review_duplicates(folder=Path("/v/a")) == [(dups[0], originals[0]), (dups[1], originals[0])]
    members = store.review_members([originals[0]])
    assert [(i, m.similarity) for i, m, _ in members[originals[0]]] == [(dups[1], 0.95), (dups[0], 0.8)]
    assert set(store.indexed_at(dups[:2])) == set(dups[:2])
    store.set_similar(dups[0], dups[2], _match(Tier.SIMILAR, 0.6))
    store.set_similar(dups[1], dups[2], _match(Tier.SIMILAR, 0.6))
    assert [(a, b) for a, b, _ in store.review_similar_page(limit=1)] == [(dups[0], dups[2])]
    assert [(a, b) for a, b, _ in store.review_similar_page(after=(dups[0], dups[2]))] == [(dups[1], dups[2])]


def test_one_writer_process_and_a_reader(open_store: Opener) -> None:
    """lock_writer admits one writer (the second is refused, naming the holder's pid) and
    lets the next one in once the first closes; a reader sees committed writes and cannot write."""
    first, second = open_store(), open_store()
    first.lock_writer()
    with pytest.raises(StoreLockedError):
        second.lock_writer()
    assert second.writer_pid() == os.getpid()
    assert not second.lock_writer_or_share()
    first.upsert_file(Path("/w/a.jpg"), FileStat(1, 1, 1, 1), _fp(1))
    reader = first.reader()
    assert reader.counts()["files"] == 1
    with pytest.raises(Exception):  # noqa: B017, PT011 - each backend's own read-only error
        reader.upsert_file(Path("/w/b.jpg"), FileStat(1, 2, 1, 1), _fp(2))
    reader.close()
    first.close()
    assert second.writer_pid() is None
    second.lock_writer()


def test_data_version_moves_when_another_connection_commits(open_store: Opener) -> None:
    """data_version changes after another connection's commit (the daemon's cheap
    "has anyone else written?")."""
    a, b = open_store(), open_store()
    before = a.data_version()
    b.add_decision(DecisionKind.KEEP, "0" * 64, Path("/x.jpg"), note="")
    assert a.data_version() != before


def test_a_failed_transaction_leaves_nothing_and_writers_take_turns(open_store: Opener) -> None:
    """An exception inside atomic() rolls everything back (a nested one only its savepoint);
    read-then-write transactions on two connections never interleave."""
    store = open_store()
    with pytest.raises(ValueError), store.atomic():
        store.upsert_file(Path("/t/a.jpg"), FileStat(1, 1, 1, 1), _fp(1))
        raise ValueError
    assert store.counts()["files"] == 0
    with store.atomic():
        store.upsert_file(Path("/t/b.jpg"), FileStat(1, 2, 1, 1), _fp(2))
        with pytest.raises(ValueError), store.atomic():
            store.upsert_file(Path("/t/c.jpg"), FileStat(1, 3, 1, 1), _fp(3))
            raise ValueError
    assert [str(p) for _, p in store.ids_under(Path("/t"))] == ["/t/b.jpg"]
    stores = [open_store(), open_store()]
    errors: list[BaseException] = []

    def add(s: Any, base: int) -> None:
        try:
            for i in range(15):  # each takes the next seq after reading MAX(seq): never twice the same
                s.upsert_file(Path(f"/t/{base + i}.jpg"), FileStat(1, base + i, 1, 1), _fp(base + i))
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(s, 100 * (k + 1))) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    seqs = [store.record(i).seq for i, _ in store.ids_under(Path("/t"))]
    assert len(seqs) == 31 and len(set(seqs)) == 31


def test_a_statement_the_database_refuses_undoes_its_transaction(open_store: Opener) -> None:
    """A write the database refuses inside atomic() (a match for files that do not
    exist) is a StoreError and undoes the whole transaction, whether the error comes
    back at once (SQLite), at the next read or at the block's end (PostgreSQL's
    pipeline); the connection works after it."""
    from dedupd.errors import StoreError

    store = open_store()
    for read_after in (False, True):
        with pytest.raises(StoreError), store.atomic():
            kept = store.upsert_file(Path("/r/a.jpg"), FileStat(1, 1, 1, 1), _fp(1))
            with store.atomic():
                store.set_match(kept + 100, kept + 101, _match(), tie=False)
            if read_after:
                store.record(kept)
        assert store.counts()["files"] == 0 and store.record_for_path(Path("/r/a.jpg")) is None
    with store.atomic():
        kept = store.upsert_file(Path("/r/b.jpg"), FileStat(1, 2, 1, 1), _fp(2))
    assert store.record(kept) is not None and store.counts()["files"] == 1
    store.close()


def test_both_backends_have_one_schema(tmp_path: Path, pg_url: str) -> None:
    """The PostgreSQL schema has the same tables and columns as the SQLite store's
    migrations leave: a change to one that is not made to the other fails here."""
    from dedupd.store import open_store

    lite = open_store(tmp_path / "s.db")
    pg = open_store(PostgresUrl(pg_url))
    try:
        sqlite_schema = {
            t: set(lite.db.table(t).columns_dict)
            for t in lite.db.table_names()
            if not t.startswith(("sqlite_", "_dedupd_migrations", "_sqlite_migrations"))
        }
        pg_schema: dict[str, set[str]] = {}
        for table, column in pg._x(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        ):
            # the feed of other hosts' writes: only a store several hosts share has one
            if table not in ("dedupd_migrations", "file_changes", "file_changes_pruned"):
                pg_schema.setdefault(table, set()).add(column)
        assert pg_schema == sqlite_schema
    finally:
        lite.close()
        pg.close()


def test_a_lost_postgresql_connection_is_a_store_error(pg_url: str) -> None:
    """A connection the server ends (as a restart does) makes the next statement, inside a
    transaction or not, a StoreError (exit 74) naming the store, not a bug (70)."""
    from dedupd.errors import StoreError
    from dedupd.store import open_store

    store, other = open_store(PostgresUrl(pg_url)), open_store(PostgresUrl(pg_url))
    try:
        for step in ("read", "transaction"):
            pid = store._one("SELECT pg_backend_pid()")[0]
            other._x("SELECT pg_terminate_backend(%s)", [pid])
            with pytest.raises(StoreError, match=r"postgresql://"):
                if step == "read":
                    store.counts()
                else:
                    with store.atomic():
                        store.upsert_file(Path("/l/a.jpg"), FileStat(1, 1, 1, 1), _fp(1))
            store.close()
            store = open_store(PostgresUrl(pg_url))  # a new connection from the pool works
            assert store.counts()["files"] == 0
    finally:
        store.close()
        other.close()


def test_a_pooled_connection_serves_many_stores_in_turn(open_store: Opener) -> None:
    """Stores opened and closed one after another in one process (the review page opens
    one per request) reuse the pool's connections, reset between them, and every one
    still reads: nothing a previous one left (a prepared statement the reset dropped
    on the server) is used again."""
    keep = open_store()
    keep.upsert_file(Path("/k/a.jpg"), FileStat(1, 1, 1, 1), _fp(1))
    for _ in range(12):
        store = open_store(readonly=True)
        assert store.counts()["files"] == 1 and store.record_for_path(Path("/k/a.jpg")) is not None
        store.close()
