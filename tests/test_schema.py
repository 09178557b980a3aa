"""The one description of the schema (dedupd/store/schema.py) against the migrations
written apart before it (tests/legacy_schema.py, word for word): a store built fresh
has the schema the old ones built, on each backend; a store the old ones built opens
with nothing run again and keeps working; one part-way through them is brought to
the fresh schema; and a column added by one step reaches both backends."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlite_utils

import legacy_schema
from dedupd.models import Distances, FileStat, Fingerprint, Hashes, Match, Orientation, PostgresUrl, Tier
from dedupd.store.postgres import PostgresStore
from dedupd.store.schema import INT, POSTGRES_RECORDED_AS, STEPS, AddColumn, Column, Index, step, steps_for
from dedupd.store.sqlite import Store, migrations_of


def _normal(sql: str | None) -> str | None:
    """SQL text without the differences that are not the schema's: quoting, spacing,
    and FLOAT for REAL (one type to SQLite; sqlite-utils writes REAL, the tables the
    old migrations wrote by hand said FLOAT)."""
    if sql is None:
        return None
    sql = re.sub(r'[\[\]"]', "", sql)
    sql = re.sub(r"\s+", " ", sql)
    sql = re.sub(r"\s*([(),])\s*", r"\1", sql)
    return re.sub(r"\bFLOAT\b", "REAL", sql).strip()


def sqlite_schema(path: Path) -> dict[str, Any]:
    """Every table, index and trigger of a SQLite store (sqlite_master), and each
    table's columns (type, NOT NULL, default, key) and foreign keys."""
    conn = sqlite3.connect(path)
    try:
        out: dict[str, Any] = {}
        for kind, name, table, sql in conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name != '_sqlite_migrations'"
        ):
            out[f"{kind}:{name}"] = (table, _normal(sql))
            if kind == "table":
                out[f"columns:{name}"] = [
                    (cid, col, _normal(type_), notnull, default, pk)
                    for cid, col, type_, notnull, default, pk, _ in conn.execute(f"PRAGMA table_xinfo([{name}])")
                ]
                out[f"foreign keys:{name}"] = conn.execute(f"PRAGMA foreign_key_list([{name}])").fetchall()
        return out
    finally:
        conn.close()


def postgres_schema(url: str) -> dict[str, Any]:
    """Every column (position, type, NULL, default, identity), constraint, index,
    trigger, function and sequence of a PostgreSQL store, ``dedupd_migrations`` aside."""
    queries = {
        "columns": "SELECT table_name, ordinal_position, column_name, data_type, is_nullable, column_default,"
        " is_identity, identity_generation FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name <> 'dedupd_migrations'",
        "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = current_schema()::regnamespace AND conrelid::regclass::text <> 'dedupd_migrations'",
        "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = current_schema() AND tablename <> 'dedupd_migrations'",
        "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
        "functions": "SELECT proname, prosrc FROM pg_proc WHERE pronamespace = current_schema()::regnamespace",
        "sequences": "SELECT sequencename, data_type, start_value, increment_by FROM pg_sequences"
        " WHERE schemaname = current_schema()",
    }
    with psycopg.connect(url) as conn:
        return {what: sorted(conn.execute(query).fetchall()) for what, query in queries.items()}  # type: ignore[arg-type]


def _recorded(url: str) -> list[tuple[str, float]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT name, applied_at FROM dedupd_migrations ORDER BY name").fetchall()


def _sqlite_recorded(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT name, applied_at FROM _sqlite_migrations ORDER BY id").fetchall()
    finally:
        conn.close()


def _legacy_sqlite(path: Path, stop_before: str | None = None) -> None:
    db = sqlite_utils.Database(path)
    db.execute("PRAGMA foreign_keys=ON")  # as Store.open migrates
    legacy_schema.migrations.apply(db, stop_before=stop_before)
    db.close()


#: the steps the description added after the old migrations (m017 on): a store the
#: old ones built gets these, and only these, at its next writer's open
NEWER = [s.name for s in STEPS[[s.name for s in STEPS].index("m016_hosts") + 1 :]]


def _fp(n: int) -> Fingerprint:
    return Fingerprint(f"{n:064x}", f"px{n}", Hashes(n, n + 1, bytes(48)), 640, 480, "JPEG", 31.5)


def _works(store: Any) -> None:
    """Files, a match, an audit row and the counters the triggers keep, through the store."""
    with store.atomic():
        a = store.upsert_file(Path("/w/a.jpg"), FileStat(1, 1, 1, 1), _fp(1))
        b = store.upsert_file(Path("/w/b.jpg"), FileStat(1, 2, 1, 1), _fp(2))
        store.set_match(b, a, Match(Tier.EXACT, Distances(0, 0, 0.0), 100.0, Orientation.IDENTITY, "r"), tie=False)
    assert store.unacted_matches() == [b]
    counts = store.counts()
    assert (counts["files"], counts["groups"], counts["duplicates"]) == (2, 1, 1)


def test_a_fresh_sqlite_store_has_the_schema_the_old_migrations_built(tmp_path: Path) -> None:
    """A SQLite store built from the one description has the tables, columns and types,
    foreign keys, indexes and triggers that migrations m001-m016 built, with the
    steps added after them."""
    _legacy_sqlite(tmp_path / "old.db")
    Store.open(tmp_path / "old.db").close()  # the steps after m016
    Store.open(tmp_path / "new.db").close()
    old, new = sqlite_schema(tmp_path / "old.db"), sqlite_schema(tmp_path / "new.db")
    assert "trigger:matches_owed_audit" in new and "columns:similar_pairs" in new
    assert new == old
    assert [n for n, _ in _sqlite_recorded(tmp_path / "new.db")] == [n for n, _ in _sqlite_recorded(tmp_path / "old.db")]


def test_a_fresh_postgresql_store_has_the_schema_the_old_migrations_built(pg_cluster: Any) -> None:
    """A PostgreSQL store built from the one description has the columns (types,
    positions, identities), constraints, indexes, triggers, trigger functions and
    sequences that p001-p005 built, and records the old names too (a dedupd from
    before, sharing it, finds nothing to do)."""
    old_url, new_url = pg_cluster.new_database(), pg_cluster.new_database()
    legacy_schema.apply_postgres(old_url, host="nas")
    PostgresStore.open(PostgresUrl(old_url), host="nas").close()  # the steps after p005
    PostgresStore.open(PostgresUrl(new_url), host="nas").close()
    old, new = postgres_schema(old_url), postgres_schema(new_url)
    assert any(f[0] == "file_changes_files_insert" for f in new["functions"])
    assert new == old
    names = {n for n, _ in _recorded(new_url)}
    assert names == {s.name for s in steps_for("postgres")} | set(POSTGRES_RECORDED_AS)


def test_a_sqlite_store_of_the_old_migrations_opens_unchanged(tmp_path: Path) -> None:
    """A SQLite store at m016 built by the old migrations opens with nothing applied
    or recorded again but the steps added since, its schema then a fresh store's, and
    works (files, matches, counters)."""
    path = tmp_path / "old.db"
    _legacy_sqlite(path)
    recorded = _sqlite_recorded(path)
    store = Store.open(path)
    try:
        _works(store)
    finally:
        store.close()
    Store.open(tmp_path / "new.db").close()
    after = _sqlite_recorded(path)
    assert after[: len(recorded)] == recorded and [n for n, _ in after[len(recorded) :]] == NEWER
    assert sqlite_schema(path) == sqlite_schema(tmp_path / "new.db")


def test_a_postgresql_store_of_the_old_migrations_opens_unchanged(pg_cluster: Any) -> None:
    """A PostgreSQL store at p005 built by the old migrations opens (as a writer) with
    nothing applied or recorded again but the steps added since, its schema then a
    fresh store's, and works."""
    url, fresh = pg_cluster.new_database(), pg_cluster.new_database()
    legacy_schema.apply_postgres(url, host="nas")
    recorded = _recorded(url)
    store = PostgresStore.open(PostgresUrl(url), host="nas")
    try:
        _works(store)
    finally:
        store.close()
    after = _recorded(url)
    assert set(recorded) <= set(after) and sorted(n for n, _ in set(after) - set(recorded)) == sorted(NEWER)
    PostgresStore.open(PostgresUrl(fresh), host="nas").close()
    assert postgres_schema(url) == postgres_schema(fresh)


def test_audit_keys_from_before_hosts_get_their_hosts_name(pg_url: str) -> None:
    """A PostgreSQL store from before hosts holds dedup keys without a host's name, which
    its host writes in front of every key since: at the next open they get it, so the same
    finding met again is still recorded once; a key recorded again already is left as is
    (no second row with the same key), as is one that has the name already."""
    legacy_schema.apply_postgres(pg_url, host="nas")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for key in ("log:done:a", "log:done:b", "nas:log:done:b", "nas:log:done:c"):
            conn.execute("INSERT INTO audit (at, action, outcome, path, dedup_key, host) VALUES (1, 'log', 'done', %s, %s, 'nas')",
                         [b"/p", key])  # fmt: skip
    PostgresStore.open(PostgresUrl(pg_url), host="nas").close()
    with psycopg.connect(pg_url) as conn:
        keys = sorted(r[0] for r in conn.execute("SELECT dedup_key FROM audit"))
    assert keys == ["log:done:b", "nas:log:done:a", "nas:log:done:b", "nas:log:done:c"]


def test_a_sqlite_store_part_way_through_the_old_migrations_is_brought_to_the_fresh_schema(tmp_path: Path) -> None:
    """A SQLite store the old migrations left at m012 gets m013-m016 from the description:
    the fresh store's schema, every step recorded once, its file kept."""
    path = tmp_path / "old.db"
    _legacy_sqlite(path, stop_before="m013_crash_causes")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO files (path, dev, ino, size, mtime_ns, seq) VALUES (?, 1, 1, 1, 1, 1)", [b"/o/a.jpg"])
    conn.commit()
    conn.close()
    Store.open(path).close()
    Store.open(tmp_path / "new.db").close()
    assert sqlite_schema(path) == sqlite_schema(tmp_path / "new.db")
    assert [n for n, _ in _sqlite_recorded(path)] == [s.name for s in steps_for("sqlite")]
    store = Store.open(path)
    try:
        assert store.record_for_path(Path("/o/a.jpg")) is not None and store.counts()["errors"] == 0
    finally:
        store.close()


def test_a_postgresql_store_part_way_through_the_old_migrations_is_brought_to_the_fresh_schema(
    pg_cluster: Any,
) -> None:
    """A PostgreSQL store the old migrations left at p003 (before p004 and hosts) gets the
    rest from the description: the fresh store's schema, its file now the opener's,
    and the old names p004 and p005 recorded as well as the new one."""
    url, fresh = pg_cluster.new_database(), pg_cluster.new_database()
    legacy_schema.apply_postgres(url, upto=3)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO files (path, dev, ino, size, mtime_ns, seq) VALUES (%s, 1, 1, 1, 1, 1)", [b"/o/a.jpg"])
    store = PostgresStore.open(PostgresUrl(url), host="nas")
    try:
        assert store.record_for_path(Path("/o/a.jpg")) is not None
        assert store.counts()["files"] == 1
    finally:
        store.close()
    PostgresStore.open(PostgresUrl(fresh), host="nas").close()
    assert postgres_schema(url) == postgres_schema(fresh)
    names = [n for n, _ in _recorded(url)]
    assert sorted(names) == sorted(
        ["p001_schema_of_sqlite_m012", "p002_crash_causes", "p003_matches_owed",
         "p004_audit_counters_per_statement", "m016_hosts", "p005_hosts", *NEWER]
    )  # fmt: skip


def test_a_column_added_by_one_step_reaches_both_backends(tmp_path: Path, pg_url: str) -> None:
    """One step appended to the description (a column and a partial index on it) is
    applied to an existing store of either backend at its next migration, in each
    dialect's words, and recorded there by its name."""
    steps = [
        *STEPS,
        step(
            "m999_files_rating",
            AddColumn("files", Column("rating", INT)),
            Index("files", ("rating",), where="rating IS NOT NULL"),
        ),
    ]
    Store.open(tmp_path / "s.db").close()
    db = sqlite_utils.Database(tmp_path / "s.db")
    migrations_of(steps).apply(db)
    assert db.table("files").columns_dict["rating"] is int
    assert "WHERE rating IS NOT NULL" in db.execute("SELECT sql FROM sqlite_master WHERE name = 'idx_files_rating'").fetchone()[0]
    db.close()
    assert _sqlite_recorded(tmp_path / "s.db")[-1][0] == "m999_files_rating"
    store = PostgresStore.open(PostgresUrl(pg_url), host="nas")
    try:
        store._migrate(steps)
        assert store._one(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'files' AND column_name = 'rating'"
        ) == ("integer",)
        assert "WHERE (rating IS NOT NULL)" in store._one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_files_rating'"
        )[0]
    finally:
        store.close()
    assert "m999_files_rating" in {n for n, _ in _recorded(pg_url)}


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_every_old_name_stands_for_steps_of_the_description(dialect: str) -> None:
    """Step names are unique; the names PostgreSQL recorded before stand for steps that
    exist and PostgreSQL runs, in the description's order; the SQLite steps keep
    SQLite's recorded names, in its order."""
    assert len({s.name for s in STEPS}) == len(STEPS)  # a name is recorded once: no two steps share one
    names = [s.name for s in steps_for(dialect)]  # type: ignore[arg-type]
    if dialect == "postgres":
        covered = [n for covers in POSTGRES_RECORDED_AS.values() for n in covers]
        assert covered + NEWER == names  # p001-p005 stood for all before m017, in order, each once
    else:
        assert names == [m.name for m in legacy_schema.migrations._migrations] + NEWER


def test_two_hosts_opening_a_new_postgresql_store_at_once_build_it_once(pg_cluster: Any) -> None:
    """Two hosts' daemons started together on an empty database both open it: one
    migrates under the migration lock, the other finds the steps recorded, and the
    schema is the one a store opened alone has, each step recorded once."""
    import threading  # noqa: PLC0415

    alone = pg_cluster.new_database()
    PostgresStore.open(PostgresUrl(alone), host="alpha").close()
    for _ in range(3):
        url = pg_cluster.new_database()
        barrier = threading.Barrier(2)
        failures: list[BaseException] = []

        def open_as(host: str, url: str = url, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                PostgresStore.open(PostgresUrl(url), host=host).close()
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                failures.append(exc)

        threads = [threading.Thread(target=open_as, args=(h,)) for h in ("alpha", "beta")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not failures, failures
        names = [n for n, _ in _recorded(url)]
        assert len(names) == len(set(names))
        assert postgres_schema(url) == postgres_schema(alone)
