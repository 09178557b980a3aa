"""The PostgreSQL backend of the store: the only module that imports psycopg.

Selected by a ``postgresql://`` URL as ``db`` (config) or ``--db``; a path keeps
SQLite (:mod:`dedupd.store.sqlite`), the embedded default.  The tables, their
columns and the counters are those of the SQLite store (``tests/test_store.py``
compares the two schemas), so every method here answers as its SQLite twin.

Conventions kept from SQLite, and how:

- :meth:`PostgresStore.atomic` starts with a transaction-level advisory lock
  (``pg_advisory_xact_lock``): the equivalent of ``BEGIN IMMEDIATE``, so
  writers take turns for the whole transaction and a read-then-write never
  works on a stale read.  Nested calls are savepoints.
- :meth:`~PostgresStore.lock_writer` is a session-level advisory lock held by
  the store's connection (SQLite: ``flock`` on a file beside the store).
- Counters are kept by triggers (statement-level, over transition tables:
  PostgreSQL runs row triggers after the whole statement, which would count a
  group that loses several members in one ``DELETE`` more than once).
- Paths are ``BYTEA`` (``os.fsencode``), compared bytewise as SQLite compares
  blobs, so the path-range tricks (``'0'`` sorts right after ``'/'``) hold.

Connections come from one :class:`psycopg_pool.ConnectionPool` per URL and
process, opened with the first store and closed with the last.  Credentials
come from the URL or libpq's environment (``PGPASSFILE``, ``PGPASSWORD``),
never from the command line.

The schema is described here on its own (:data:`MIGRATIONS`); one description
for both backends is not done yet.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from dedupd.errors import StoreError, StoreLockedError, StoreUnavailable
from dedupd.models import Decision, DecisionKind, FileStat, Fingerprint, Match, PostgresUrl, Record, Tier
from dedupd.store.sqlite import (
    _PAIR_DECIDED,
    AUDIT_COLUMNS,
    INTENT_COLUMNS,
    Store,
    _file_row,
    _match_from_row,
    _member_filter,
    _path_key,
    _record_from_row,
    pack_keys,
    pack_variants,
    to_signed,
    to_unsigned,
    unpack_keys,
)

if TYPE_CHECKING:
    from dedupd.backend import StoreBackend

#: first key of every advisory lock dedupd takes (``b"ddpd"``), the second says which
LOCK_CLASS = 0x64647064
WRITE_LOCK, WRITER_LOCK, MIGRATE_LOCK = 1, 2, 3

_COUNTER_NAMES = ["files", "errors", "groups", "duplicates", *(f"duplicates_{t.value}" for t in Tier)]


def _counter_triggers() -> list[str]:
    """Statement-level triggers over transition tables that keep ``counters``."""
    out = []
    for table, delta in (
        (
            "files",
            # files / errors: +1 per new row, -1 per old row, by its error column
            "UPDATE counters c SET n = c.n + d.delta FROM ("
            " SELECT CASE WHEN error IS NULL THEN 'files' ELSE 'errors' END AS name, SUM(s) AS delta"
            " FROM ({changes}) ch GROUP BY 1) d WHERE c.name = d.name AND d.delta <> 0;",
        ),
        (
            "matches",
            # duplicates and duplicates_<tier> by row; groups by original: one that
            # has members now and had none before the statement (or the reverse)
            "UPDATE counters c SET n = c.n + d.delta FROM ("
            " SELECT 'duplicates_' || tier AS name, SUM(s) AS delta FROM ({changes}) ch GROUP BY 1"
            " UNION ALL SELECT 'duplicates', SUM(s) FROM ({changes}) ch) d"
            " WHERE c.name = d.name AND d.delta <> 0;"
            " UPDATE counters SET n = n + (SELECT COALESCE(SUM((now.cnt > 0)::int - ((now.cnt - now.net) > 0)::int), 0)"
            " FROM (SELECT ids.net, (SELECT COUNT(*) FROM matches m WHERE m.original_id = ids.original_id) AS cnt"
            " FROM (SELECT original_id, SUM(s) AS net FROM ({changes}) ch GROUP BY original_id) ids) now)"
            " WHERE name = 'groups';",
        ),
    ):
        for event, changes in (
            ("INSERT", "SELECT *, 1 AS s FROM new_rows"),
            ("DELETE", "SELECT *, -1 AS s FROM old_rows"),
            ("UPDATE", "SELECT *, 1 AS s FROM new_rows UNION ALL SELECT *, -1 AS s FROM old_rows"),
        ):
            name = f"counters_{table}_{event.lower()}"
            tables = {
                "INSERT": "NEW TABLE AS new_rows",
                "DELETE": "OLD TABLE AS old_rows",
                "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
            }[event]
            out.append(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                + delta.format(changes=changes)
                + " RETURN NULL; END $$"
            )
            out.append(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {tables}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
    return out


#: Is the action on the match of file {file} to original {original} owed, as far
#: as the audit says (SQLite's ``_OWED_BY_AUDIT``, with PostgreSQL's booleans)
_OWED_BY_AUDIT = (
    "COALESCE((SELECT (a.outcome = 'failed' OR (a.outcome = 'skipped' AND ("
    "    a.detail LIKE 'circuit breaker%' OR a.detail LIKE 'actions on this root are paused%')))::int"
    "  FROM files d JOIN files o ON o.id = {original}"
    "  JOIN audit a ON a.sha256 = d.sha256 AND a.original_sha256 = o.sha256 AND a.path = d.path"
    "  WHERE d.id = {file} ORDER BY a.id DESC LIMIT 1), 1)"
)

#: The schema, in order; each entry is applied once, in one transaction, and
#: recorded in ``dedupd_migrations``.  The first is the SQLite store's schema as
#: its migrations m001-m012 leave it; a change to one backend's schema is made
#: to the other's in the same commit (``test_both_backends_have_one_schema``).
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "p001_schema_of_sqlite_m012",
        [
            "CREATE TABLE files ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, path BYTEA NOT NULL,"
            " dev BIGINT NOT NULL, ino BIGINT NOT NULL, size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL,"
            " seq BIGINT NOT NULL, sha256 TEXT, pixel_digest TEXT, phash BIGINT, dhash BIGINT, colour BYTEA,"
            " width INTEGER, height INTEGER, format TEXT, detail DOUBLE PRECISION, error TEXT,"
            " error_detail TEXT, indexed_at DOUBLE PRECISION, variants BYTEA, crop_keys BYTEA, ctime_ns BIGINT)",
            "CREATE UNIQUE INDEX idx_files_path ON files (path)",
            "CREATE INDEX idx_files_dev_ino ON files (dev, ino)",
            "CREATE INDEX idx_files_sha256 ON files (sha256)",
            "CREATE INDEX idx_files_pixel_digest ON files (pixel_digest)",
            "CREATE INDEX idx_files_seq ON files (seq)",
            "CREATE TABLE matches ("
            " file_id BIGINT PRIMARY KEY REFERENCES files (id), original_id BIGINT REFERENCES files (id),"
            " tier TEXT, phash_distance INTEGER, dhash_distance INTEGER, colour_distance DOUBLE PRECISION,"
            " similarity DOUBLE PRECISION, orientation TEXT, reason TEXT, tie INTEGER, matched_at DOUBLE PRECISION)",
            "CREATE INDEX idx_matches_original_id ON matches (original_id)",
            "CREATE TABLE audit ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at DOUBLE PRECISION, action TEXT,"
            " outcome TEXT, path BYTEA, original BYTEA, tier TEXT, phash_distance INTEGER,"
            " dhash_distance INTEGER, colour_distance DOUBLE PRECISION, similarity DOUBLE PRECISION,"
            " size BIGINT, sha256 TEXT, original_sha256 TEXT, reason TEXT, detail TEXT, destination BYTEA,"
            " intent_id BIGINT, restores BIGINT, dedup_key TEXT, decided_by TEXT)",
            "CREATE UNIQUE INDEX idx_audit_dedup_key ON audit (dedup_key)",
            "CREATE INDEX idx_audit_at ON audit (at)",
            "CREATE INDEX idx_audit_sha256_original_sha256 ON audit (sha256, original_sha256)",
            "CREATE TABLE intents ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, created_at DOUBLE PRECISION,"
            " action TEXT, state TEXT, path BYTEA, destination BYTEA, temp BYTEA, link_target BYTEA,"
            " dev BIGINT, ino BIGINT, size BIGINT, mtime_ns BIGINT, sha256 TEXT, original BYTEA,"
            " original_sha256 TEXT, audit_id BIGINT, updated_at DOUBLE PRECISION, work BYTEA, root BYTEA,"
            " ctime_ns BIGINT)",
            "CREATE INDEX idx_intents_state ON intents (state)",
            "CREATE INDEX idx_intents_destination ON intents (destination)",
            "CREATE INDEX idx_intents_path ON intents (path)",
            "CREATE INDEX idx_intents_original ON intents (original)",
            "CREATE TABLE daemon (id INTEGER PRIMARY KEY, pid INTEGER, started_at DOUBLE PRECISION,"
            " heartbeat_at DOUBLE PRECISION, state TEXT, data TEXT)",
            "CREATE TABLE counters (name TEXT PRIMARY KEY, n BIGINT NOT NULL)",
            "CREATE TABLE crashes (path BYTEA PRIMARY KEY, size BIGINT, mtime_ns BIGINT, count INTEGER,"
            " at DOUBLE PRECISION)",
            "CREATE TABLE similar_pairs ("
            " file_id BIGINT NOT NULL REFERENCES files (id) ON DELETE CASCADE,"
            " other_id BIGINT NOT NULL REFERENCES files (id) ON DELETE CASCADE,"
            " tier TEXT NOT NULL, phash_distance INTEGER, dhash_distance INTEGER,"
            " colour_distance DOUBLE PRECISION, similarity DOUBLE PRECISION, orientation TEXT, reason TEXT,"
            " matched_at DOUBLE PRECISION, PRIMARY KEY (file_id, other_id))",
            "CREATE INDEX similar_pairs_other ON similar_pairs (other_id)",
            "CREATE TABLE chosen_originals (sha256 TEXT PRIMARY KEY, decided_at DOUBLE PRECISION, note TEXT)",
            "CREATE TABLE scanned_roots (path BYTEA PRIMARY KEY, scanned_at DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE decisions ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL,"
            " sha_a TEXT NOT NULL, path_a BYTEA, sha_b TEXT, path_b BYTEA,"
            " decided_at DOUBLE PRECISION NOT NULL, decided_by TEXT, note TEXT)",
            "CREATE INDEX decisions_a ON decisions (sha_a, sha_b)",
            "CREATE INDEX decisions_path_a ON decisions (path_a)",
            "CREATE INDEX decisions_path_b ON decisions (path_b)",
            "INSERT INTO counters (name, n) SELECT unnest(%(names)s::text[]), 0",
            *_counter_triggers(),
            # audit rows by action and outcome, for `dedupd status`
            "CREATE FUNCTION counters_audit_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO counters (name, n) VALUES ('audit:' || NEW.action || '_' || NEW.outcome, 1)"
            " ON CONFLICT (name) DO UPDATE SET n = counters.n + 1; RETURN NULL; END $$",
            "CREATE TRIGGER counters_audit_insert AFTER INSERT ON audit FOR EACH ROW"
            " EXECUTE FUNCTION counters_audit_insert()",
        ],
    ),
    # SQLite's m013: which exception a crash was (NULL: a worker's death)
    ("p002_crash_causes", ["ALTER TABLE crashes ADD COLUMN cause TEXT"]),
    # SQLite's m014: which matches still owe their action, kept as they change
    # (see there); here a BEFORE trigger sets a match's own flag as it is written
    (
        "p003_matches_owed",
        [
            "ALTER TABLE matches ADD COLUMN owed INTEGER NOT NULL DEFAULT 1",
            "UPDATE matches SET owed = " + _OWED_BY_AUDIT.format(file="matches.file_id", original="matches.original_id"),
            "CREATE INDEX matches_owed ON matches (file_id) WHERE owed = 1",
            "CREATE FUNCTION matches_owed_own() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " NEW.owed := " + _OWED_BY_AUDIT.format(file="NEW.file_id", original="NEW.original_id") + ";"
            " RETURN NEW; END $$",
            "CREATE TRIGGER matches_owed_own BEFORE INSERT OR UPDATE OF file_id, original_id ON matches"
            " FOR EACH ROW EXECUTE FUNCTION matches_owed_own()",
            # the newest audit row of a pair decides (a skipped row without a
            # detail: owed, as the pass over every match says; SQLite's trigger
            # would write NULL there and fail)
            "CREATE FUNCTION matches_owed_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " UPDATE matches SET owed = COALESCE((NEW.outcome = 'failed' OR (NEW.outcome = 'skipped' AND ("
            " NEW.detail LIKE 'circuit breaker%' OR NEW.detail LIKE 'actions on this root are paused%')))::int, 1)"
            " WHERE file_id IN (SELECT id FROM files WHERE path = NEW.path AND sha256 = NEW.sha256)"
            " AND original_id IN (SELECT id FROM files WHERE sha256 = NEW.original_sha256);"
            " RETURN NULL; END $$",
            "CREATE TRIGGER matches_owed_audit AFTER INSERT ON audit FOR EACH ROW"
            " WHEN (NEW.sha256 IS NOT NULL AND NEW.original_sha256 IS NOT NULL)"
            " EXECUTE FUNCTION matches_owed_audit()",
            "CREATE FUNCTION matches_owed_files() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " UPDATE matches SET owed = "
            + _OWED_BY_AUDIT.format(file="matches.file_id", original="matches.original_id")
            + " WHERE file_id = NEW.id OR original_id = NEW.id; RETURN NULL; END $$",
            "CREATE TRIGGER matches_owed_files AFTER UPDATE OF path, sha256 ON files FOR EACH ROW"
            " EXECUTE FUNCTION matches_owed_files()",
        ],
    ),
    # The audit counters once per statement, from its transition table, like
    # the other counters.  Once per row, every audit row of one transaction
    # updated the same counter row again, and each update walked the chain of
    # versions the transaction had left before it: quadratic, so that copying
    # 10,000 audit rows in one transaction (dedupd migrate) took minutes.
    (
        "p004_audit_counters_per_statement",
        [
            "DROP TRIGGER counters_audit_insert ON audit",
            "CREATE OR REPLACE FUNCTION counters_audit_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO counters (name, n) SELECT 'audit:' || action || '_' || outcome, COUNT(*) FROM new_rows"
            " GROUP BY 1 ON CONFLICT (name) DO UPDATE SET n = counters.n + excluded.n; RETURN NULL; END $$",
            "CREATE TRIGGER counters_audit_insert AFTER INSERT ON audit REFERENCING NEW TABLE AS new_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION counters_audit_insert()",
        ],
    ),
]


class _Pools:
    """One connection pool per URL in this process, opened by the first store
    and closed by the last (its worker threads end with it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[str, tuple[ConnectionPool, int]] = {}

    def acquire(self, url: PostgresUrl) -> ConnectionPool:
        with self._lock:
            found = self._pools.get(url.url)
            if found is None:
                # one direct connection first: libpq's own words when the server
                # cannot be reached or refuses us, not a pool timeout
                try:
                    psycopg.connect(url.url, connect_timeout=10).close()
                except psycopg.Error as exc:
                    raise _failure(url, exc, None) from exc
                pool = ConnectionPool(
                    url.url,
                    min_size=1,
                    max_size=8,
                    kwargs={"autocommit": True, "application_name": f"dedupd:{os.getpid()}"},
                    reset=_reset,
                    # a connection the server dropped (a restart) is not handed out again
                    check=ConnectionPool.check_connection,
                    name="dedupd",
                    open=True,
                )
                found = (pool, 0)
            self._pools[url.url] = (found[0], found[1] + 1)
            return found[0]

    def release(self, url: PostgresUrl) -> None:
        with self._lock:
            pool, users = self._pools[url.url]
            if users > 1:
                self._pools[url.url] = (pool, users - 1)
                return
            del self._pools[url.url]
        pool.close()


def _reset(conn: psycopg.Connection[Any]) -> None:
    """A connection back in the pool: no session lock, temporary table or setting left."""
    conn.execute("DISCARD ALL")


_pools = _Pools()

#: SQLSTATEs of a server that went away or is not taking connections: class 08
#: (connection exception) and 57P01-57P03 (shut down by an administrator, a
#: crash, or not yet accepting connections)
_GONE_STATES = ("57P01", "57P02", "57P03")


def _failure(url: PostgresUrl, exc: psycopg.Error, conn: psycopg.Connection[Any] | None) -> StoreError:
    """A psycopg error as dedupd's: :class:`StoreUnavailable` when the server
    cannot be reached or the connection was lost (a running daemon waits for
    it), :class:`StoreError` for anything else (a deadlock, a full disk, a
    constraint)."""
    state = exc.sqlstate or ""
    gone = (
        (conn is not None and (conn.closed or conn.broken))
        or state.startswith("08")
        or state in _GONE_STATES
        or (conn is None and isinstance(exc, psycopg.OperationalError))  # could not connect at all
    )
    return (StoreUnavailable if gone else StoreError)(f"{url}: {str(exc).strip()}")


class PostgresStore:
    """A connection to a PostgreSQL store; open with :meth:`open`."""

    def __init__(self, url: PostgresUrl, pool: ConnectionPool, conn: psycopg.Connection[Any]) -> None:
        self.url = url
        self.path = Path(str(url))  # for messages only: there is no file
        self._pool = pool
        self._conn = conn
        self._writer = False

    @classmethod
    def open(cls, url: PostgresUrl, *, readonly: bool = False) -> PostgresStore:
        """Connect to the store at ``url``, creating and migrating its tables unless ``readonly``."""
        pool = _pools.acquire(url)
        try:
            conn = pool.getconn(timeout=30)
        except Exception as exc:  # psycopg_pool.PoolTimeout, or a connection error inside it
            _pools.release(url)
            raise StoreUnavailable(f"{url}: {exc}") from exc
        store = cls(url, pool, conn)
        try:
            if readonly:
                conn.execute("SET default_transaction_read_only = on")
                if not store._migrated("files"):
                    raise StoreError(f"{url}: no store here yet (run 'dedupd scan' first)")
            else:
                store._migrate()
        except psycopg.Error as exc:
            store.close()
            raise _failure(url, exc, conn) from exc
        except StoreError:
            store.close()
            raise
        return store

    def _migrate(self) -> None:
        with self._conn.transaction():
            # two daemons starting at once: the second waits, then finds it done
            self._conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_CLASS, MIGRATE_LOCK])
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS dedupd_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)"
            )
            done = {r[0] for r in self._conn.execute("SELECT name FROM dedupd_migrations")}
            for name, statements in MIGRATIONS:
                if name in done:
                    continue
                for statement in statements:
                    if "%(names)s" in statement:
                        self._conn.execute(statement, {"names": _COUNTER_NAMES})
                    else:
                        self._conn.execute(statement.encode())  # no parameters: sent as it is
                self._conn.execute(
                    "INSERT INTO dedupd_migrations (name, applied_at) VALUES (%s, %s)", [name, time.time()]
                )

    def _x(self, query: str | sql.Composable, params: Any = None) -> psycopg.Cursor[Any]:
        """Run one statement on this store's connection.  A lost connection (the
        server restarted or went away) is a StoreError (exit 74), not a bug; a
        mistake in the SQL stays one."""
        try:
            return self._conn.execute(query, params)  # type: ignore[arg-type]  # built from constant parts
        except psycopg.OperationalError as exc:
            raise _failure(self.url, exc, self._conn) from exc

    def _one(self, query: str, params: Any = None) -> tuple[Any, ...]:
        """The one row a statement that always returns one returns."""
        row = self._x(query, params).fetchone()
        assert row is not None, query
        return tuple(row)

    def reader(self) -> PostgresStore:
        """Another, read-only connection to this store (for another thread)."""
        return PostgresStore.open(self.url, readonly=True)

    def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None  # type: ignore[assignment]
        if self._writer and not self._conn.closed:
            # now, not when the pool resets the connection (on a thread of its own)
            try:
                self._x("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, WRITER_LOCK])
            except psycopg.Error:
                pass  # a lost connection holds no lock; the pool throws it away
            self._writer = False
        pool.putconn(self._conn)  # reset (DISCARD ALL): temporary tables, settings, any other lock
        _pools.release(self.url)

    # --- locking -----------------------------------------------------------

    def lock_writer(self) -> None:
        """Become this store's only writer process, or raise StoreLockedError."""
        row = self._x("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, WRITER_LOCK]).fetchone()
        if not row or not row[0]:
            pid = self.writer_pid()
            raise StoreLockedError(f"{self.url} (another 'dedupd run' or 'dedupd scan' is its writer, pid {pid})")
        self._writer = True

    def lock_writer_or_share(self) -> bool:
        """See :meth:`dedupd.store.sqlite.Store.lock_writer_or_share`."""
        try:
            self.lock_writer()
        except StoreLockedError:
            import structlog  # noqa: PLC0415 - only this path logs

            structlog.get_logger().info("store_shared", writer_pid=self.writer_pid(), path=str(self.url))
            return False
        return True

    def writer_pid(self) -> int | None:
        """The pid of the dedupd process holding the writer lock (as it named its
        connection), -1 when it cannot be told, None when nobody holds it."""
        row = self._x(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
            " AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [LOCK_CLASS, WRITER_LOCK],
        ).fetchone()
        if row is None:
            return None
        name = str(row[0] or "")
        return int(name.split(":", 1)[1]) if name.startswith("dedupd:") and name[7:].isdigit() else -1

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction: everything inside is written, or nothing is.

        The outermost one takes the store's write lock first (a transaction-level
        advisory lock, released at COMMIT or ROLLBACK): writers take turns as
        with SQLite's ``BEGIN IMMEDIATE``.  Nested ones are savepoints."""
        conn = self._conn
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with conn.transaction():  # a savepoint
                    yield
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_CLASS, WRITE_LOCK])
                yield
        except psycopg.Error as exc:
            raise _failure(self.url, exc, conn) from exc

    def snapshot(self, dest: Path) -> Store:
        """A private copy of this store at ``dest``, a SQLite file (for dry runs),
        opened for writing: every row is read once, so it costs what a
        ``dedupd migrate`` costs (docs/benchmarks.md)."""
        from dedupd.store.transfer import copy_postgres_to_sqlite  # noqa: PLC0415 - transfer imports this module

        copy = Store.open(dest)
        try:
            copy_postgres_to_sqlite(self, copy)
        except psycopg.Error as exc:
            copy.close()
            raise _failure(self.url, exc, self._conn) from exc
        except BaseException:
            copy.close()
            raise
        return copy

    # --- files -------------------------------------------------------------

    def record_for_path(self, path: Path) -> Record | None:
        rows = self._records("f.path = %s", [_path_key(path)])
        return rows[0] if rows else None

    def record(self, file_id: int) -> Record | None:
        rows = self._records("f.id = %s", [file_id])
        return rows[0] if rows else None

    def records(self, ids: Iterable[int]) -> dict[int, Record]:
        return {r.id: r for r in self._records("f.id = ANY(%s)", [list(set(ids))])}

    def records_by_inode(self, st: FileStat) -> list[Record]:
        return self._records(
            "f.dev = %s AND f.ino = %s AND f.size = %s AND f.mtime_ns = %s", [st.dev, st.ino, st.size, st.mtime_ns]
        )

    def ids_with(self, column: str, value: str) -> list[int]:
        assert column in ("sha256", "pixel_digest")
        return [r[0] for r in self._x(f"SELECT id FROM files WHERE {column} = %s AND error IS NULL", [value])]

    def ids_under(self, root: Path) -> Iterator[tuple[int, Path]]:
        """Every record whose path is ``root`` or below it."""
        key = _path_key(root).rstrip(b"/")
        for file_id, path in self._x(
            "SELECT id, path FROM files WHERE path = %s OR (path >= %s AND path < %s)", [key, key + b"/", key + b"0"]
        ).fetchall():
            yield file_id, Path(os.fsdecode(path))

    def ids_under_after(self, root: Path, after: Path | None, limit: int) -> list[tuple[int, Path]]:
        """See :meth:`dedupd.store.sqlite.Store.ids_under_after`."""
        key = _path_key(root).rstrip(b"/")
        where, low = ("path >= %s", key + b"/") if after is None else ("path > %s", _path_key(after))
        rows = self._x(
            f"SELECT id, path FROM files WHERE {where} AND path < %s ORDER BY path LIMIT %s", [low, key + b"0", limit]
        ).fetchall()
        return [(file_id, Path(os.fsdecode(path))) for file_id, path in rows]

    def count_under(self, root: Path) -> int:
        key = _path_key(root).rstrip(b"/")
        row = self._one(
            "SELECT COUNT(*) FROM files WHERE path = %s OR (path >= %s AND path < %s)", [key, key + b"/", key + b"0"]
        )
        return int(row[0])

    def all_hashes(self) -> Iterator[tuple[int, int, tuple[int, ...]]]:
        """(id, unsigned pHash, crop keys) of every fingerprinted file, for the index."""
        for file_id, phash, crops in self._x(
            "SELECT id, phash, crop_keys FROM files WHERE error IS NULL AND phash IS NOT NULL"
        ).fetchall():
            yield file_id, to_unsigned(phash), unpack_keys(crops)

    def hash_batches(self, size: int = 65536) -> Iterator[tuple[list[int], list[int], list[bytes | None]]]:
        """See :meth:`dedupd.store.sqlite.Store.hash_batches`."""
        cursor = self._x("SELECT id, phash, crop_keys FROM files WHERE error IS NULL AND phash IS NOT NULL")
        while rows := cursor.fetchmany(size):
            yield [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    def next_seq(self) -> int:
        """The next seniority number (one descent of the index on ``seq``)."""
        return int(self._one("SELECT COALESCE(MAX(seq), 0) + 1 FROM files")[0])

    def upsert_file(self, path: Path, st: FileStat, fp: Fingerprint, *, seq: int | None = None) -> int:
        """Store a fingerprinted file; a path already stored keeps its id and seniority."""
        return self._upsert(
            _file_row(path, st, seq)
            | {
                "sha256": fp.sha256,
                "pixel_digest": fp.pixel_digest,
                "phash": to_signed(fp.hashes.phash),
                "dhash": to_signed(fp.hashes.dhash),
                "colour": fp.hashes.colour,
                "width": fp.width,
                "height": fp.height,
                "format": fp.format,
                "detail": fp.detail,
                "variants": pack_variants(fp.variants),
                "crop_keys": pack_keys(fp.crop_keys),
            }
        )

    def upsert_error(self, path: Path, st: FileStat, reason: str, detail: str, *, seq: int | None = None) -> int:
        return self._upsert(_file_row(path, st, seq) | {"error": reason, "error_detail": detail})

    def _upsert(self, values: dict[str, Any]) -> int:
        with self.atomic():
            existing = self._x("SELECT id FROM files WHERE path = %s", [values["path"]]).fetchone()
            if existing:
                if values["seq"] is None:
                    del values["seq"]  # seniority belongs to the path, not to the version
                self._update("files", "id", existing[0], values)
                return int(existing[0])
            if values["seq"] is None:
                values["seq"] = self.next_seq()
            return self._insert("files", values)

    def _insert(self, table: str, values: dict[str, Any]) -> int:
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, values)),
            sql.SQL(", ").join(sql.Placeholder() * len(values)),
        )
        return int(self._x(query, list(values.values())).fetchone()[0])  # type: ignore[index]

    def _update(self, table: str, key: str, key_value: Any, values: dict[str, Any]) -> None:
        query = sql.SQL("UPDATE {} SET {} WHERE {} = %s").format(
            sql.Identifier(table),
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values),
            sql.Identifier(key),
        )
        self._x(query, [*values.values(), key_value])

    def move_file(self, file_id: int, new_path: Path) -> None:
        """A rename; the decisions a person made about the file follow it."""
        old = self._x("SELECT path, sha256 FROM files WHERE id = %s", [file_id]).fetchone()
        self._x("DELETE FROM files WHERE path = %s AND id != %s", [_path_key(new_path), file_id])
        self._x("UPDATE files SET path = %s WHERE id = %s", [_path_key(new_path), file_id])
        if old is not None and old[1] is not None:
            for side in ("a", "b"):
                self._x(
                    f"UPDATE decisions SET path_{side} = %s WHERE path_{side} = %s AND sha_{side} = %s",
                    [_path_key(new_path), old[0], old[1]],
                )

    def delete_file(self, file_id: int) -> list[int]:
        """Forget a file; returns the ids of the duplicates it was the original of."""
        orphans = self.duplicates_of(file_id)
        self._x("DELETE FROM matches WHERE file_id = %s OR original_id = %s", [file_id, file_id])
        self._x("DELETE FROM files WHERE id = %s", [file_id])
        return orphans

    # --- matches -----------------------------------------------------------

    def set_match(self, file_id: int, original_id: int, match: Match, *, tie: bool) -> None:
        self._x(
            "INSERT INTO matches (file_id, original_id, tier, phash_distance, dhash_distance,"
            " colour_distance, similarity, orientation, reason, tie, matched_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (file_id) DO UPDATE SET original_id = excluded.original_id, tier = excluded.tier,"
            " phash_distance = excluded.phash_distance, dhash_distance = excluded.dhash_distance,"
            " colour_distance = excluded.colour_distance, similarity = excluded.similarity,"
            " orientation = excluded.orientation, reason = excluded.reason, tie = excluded.tie,"
            " matched_at = excluded.matched_at",
            [file_id, original_id, *_match_values(match), int(tie), time.time()],
        )

    def clear_match(self, file_id: int) -> None:
        self._x("DELETE FROM matches WHERE file_id = %s", [file_id])

    def set_similar(self, file_id: int, other_id: int, match: Match) -> None:
        """Record that ``file_id`` looks like ``other_id`` but may be another capture."""
        self._x(
            "INSERT INTO similar_pairs (file_id, other_id, tier, phash_distance, dhash_distance,"
            " colour_distance, similarity, orientation, reason, matched_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (file_id, other_id) DO UPDATE SET tier = excluded.tier,"
            " phash_distance = excluded.phash_distance, dhash_distance = excluded.dhash_distance,"
            " colour_distance = excluded.colour_distance, similarity = excluded.similarity,"
            " orientation = excluded.orientation, reason = excluded.reason,"
            " matched_at = excluded.matched_at",
            [file_id, other_id, *_match_values(match), time.time()],
        )

    def clear_similar(self, file_id: int) -> None:
        self._x("DELETE FROM similar_pairs WHERE file_id = %s OR other_id = %s", [file_id, file_id])

    def similar_of(self, file_id: int) -> list[tuple[int, Match]]:
        return [
            (row[0], _match_from_row(row[1:8]))
            for row in self._x(
                "SELECT other_id, tier, phash_distance, dhash_distance, colour_distance,"
                " similarity, orientation, reason FROM similar_pairs WHERE file_id = %s ORDER BY other_id",
                [file_id],
            )
        ]

    def match_of(self, file_id: int) -> tuple[int, Match, bool] | None:
        row = self._x(
            "SELECT original_id, tier, phash_distance, dhash_distance, colour_distance,"
            " similarity, orientation, reason, tie FROM matches WHERE file_id = %s",
            [file_id],
        ).fetchone()
        if row is None:
            return None
        return row[0], _match_from_row(row[1:8]), bool(row[8])

    def matched_between(self, sha_a: str, sha_b: str, *, path_a: Path, path_b: Path) -> list[int]:
        a, b = _path_key(path_a), _path_key(path_b)
        return [
            row[0]
            for row in self._x(
                "SELECT m.file_id FROM matches m JOIN files d ON d.id = m.file_id"
                " JOIN files o ON o.id = m.original_id"
                " WHERE (d.sha256 = %s AND d.path = %s AND o.sha256 = %s AND o.path = %s)"
                " OR (d.sha256 = %s AND d.path = %s AND o.sha256 = %s AND o.path = %s)"
                " ORDER BY m.file_id",
                [sha_a, a, sha_b, b, sha_b, b, sha_a, a],
            )
        ]

    def duplicates_of(self, original_id: int) -> list[int]:
        return [
            row[0]
            for row in self._x("SELECT file_id FROM matches WHERE original_id = %s ORDER BY file_id", [original_id])
        ]

    def groups(self) -> Iterator[tuple[Path, list[tuple[Path, Match, bool]]]]:
        """Every group, original first, by the original's path (similar pairs listed under theirs)."""
        rows = self._x(
            "SELECT o.path, d.path, m.tier, m.phash_distance, m.dhash_distance,"
            " m.colour_distance, m.similarity, m.orientation, m.reason, m.tie"
            " FROM matches m JOIN files o ON o.id = m.original_id"
            " JOIN files d ON d.id = m.file_id"
            " UNION ALL"
            " SELECT o.path, d.path, s.tier, s.phash_distance, s.dhash_distance,"
            " s.colour_distance, s.similarity, s.orientation, s.reason, 0"
            " FROM similar_pairs s JOIN files o ON o.id = s.other_id"
            " JOIN files d ON d.id = s.file_id"
            " ORDER BY 1, 2"
        ).fetchall()
        current: bytes | None = None
        members: list[tuple[Path, Match, bool]] = []
        for row in rows:
            if row[0] != current:
                if current is not None:
                    yield Path(os.fsdecode(current)), members
                current, members = row[0], []
            members.append((Path(os.fsdecode(row[1])), _match_from_row(row[2:9]), bool(row[9])))
        if current is not None:
            yield Path(os.fsdecode(current)), members

    def unacted_matches(
        self,
        *,
        logged: bool = False,
        original_ids: Iterable[int] | None = None,
        file_ids: Iterable[int] | None = None,
    ) -> list[int]:
        """See :meth:`dedupd.store.sqlite.Store.unacted_matches`."""
        only = ""
        params: list[Any] = []
        for column, wanted in (("m.original_id", original_ids), ("m.file_id", file_ids)):
            if wanted is not None:
                only += f" AND {column} = ANY(%s)"
                params.append(sorted(set(wanted)))
        owed = "TRUE" if logged else "m.owed = 1"  # kept by triggers (p003), read through its partial index
        return [
            row[0]
            for row in self._x(
                "SELECT m.file_id FROM matches m JOIN files d ON d.id = m.file_id"
                " JOIN files o ON o.id = m.original_id"
                f" WHERE NOT EXISTS ({_PAIR_DECIDED.format(a='d', b='o')})"
                " AND NOT EXISTS (SELECT 1 FROM decisions k WHERE k.kind = 'keep'"
                "  AND k.sha_a = d.sha256 AND k.path_a = d.path)"
                f" AND {owed}{only}"
                " ORDER BY m.file_id",
                params,
            )
        ]

    def matches_of(self, file_ids: Iterable[int]) -> dict[int, tuple[int, Match, bool]]:
        """:meth:`match_of` for many files at once."""
        return {
            row[0]: (row[1], _match_from_row(row[2:9]), bool(row[9]))
            for row in self._x(
                "SELECT file_id, original_id, tier, phash_distance, dhash_distance, colour_distance,"
                " similarity, orientation, reason, tie FROM matches WHERE file_id = ANY(%s)",
                [sorted(set(file_ids))],
            )
        }

    def errors(self) -> list[tuple[Path, str, str, float]]:
        """Every indexed file that was skipped: (path, reason, detail, when), in path order."""
        return [
            (Path(os.fsdecode(r[0])), r[1], r[2] or "", r[3] or 0.0)
            for r in self._x(
                "SELECT path, error, error_detail, indexed_at FROM files WHERE error IS NOT NULL ORDER BY path"
            )
        ]

    # --- roots a scan was given ------------------------------------------------

    def add_scanned_roots(self, roots: Iterable[Path]) -> None:
        with self.atomic():
            for root in roots:
                self._x(
                    "INSERT INTO scanned_roots (path, scanned_at) VALUES (%s, %s)"
                    " ON CONFLICT (path) DO UPDATE SET scanned_at = excluded.scanned_at",
                    [_path_key(root), time.time()],
                )

    def scanned_roots(self) -> list[Path]:
        return [Path(os.fsdecode(r[0])) for r in self._x("SELECT path FROM scanned_roots ORDER BY path")]

    # --- decisions ------------------------------------------------------------

    def is_ignored(self, sha_a: str, sha_b: str, *, path_a: Path, path_b: Path) -> bool:
        """See :meth:`dedupd.store.sqlite.Store.is_ignored`."""
        a, b = _path_key(path_a), _path_key(path_b)
        row = self._x(
            "SELECT 1 FROM decisions i WHERE i.kind = 'not_duplicates' AND ("
            "(i.sha_a = %s AND (i.path_a IS NULL OR i.path_a = %s) AND i.sha_b = %s AND (i.path_b IS NULL OR i.path_b = %s))"
            " OR (i.sha_a = %s AND (i.path_a IS NULL OR i.path_a = %s) AND i.sha_b = %s AND (i.path_b IS NULL OR i.path_b = %s)))"
            " LIMIT 1",
            [sha_a, a, sha_b, b, sha_b, b, sha_a, a],
        ).fetchone()
        return row is not None

    def is_kept(self, sha256: str, path: Path) -> bool:
        row = self._x(
            "SELECT 1 FROM decisions WHERE kind = 'keep' AND sha_a = %s AND path_a = %s LIMIT 1",
            [sha256, _path_key(path)],
        ).fetchone()
        return row is not None

    def add_decision(
        self,
        kind: DecisionKind,
        sha256: str,
        path: Path,
        other_sha256: str | None = None,
        other_path: Path | None = None,
        *,
        note: str,
        decided_by: str | None = None,
    ) -> int | None:
        """Record a decision; returns its id, or None when the same one is already recorded."""
        if kind is DecisionKind.NOT_DUPLICATES:
            assert other_sha256 is not None and other_path is not None
            if self.is_ignored(sha256, other_sha256, path_a=path, path_b=other_path):
                return None
            (sha256, path), (other_sha256, other_path) = sorted(
                [(sha256, path), (other_sha256, other_path)], key=lambda side: (side[0], _path_key(side[1]))
            )
        elif self.is_kept(sha256, path):
            return None
        return self._insert(
            "decisions",
            {
                "kind": kind.value,
                "sha_a": sha256,
                "path_a": _path_key(path),
                "sha_b": other_sha256,
                "path_b": None if other_path is None else _path_key(other_path),
                "decided_at": time.time(),
                "decided_by": decided_by,
                "note": note,
            },
        )

    def _migrated(self, table: str, column: str | None = None) -> bool:
        row = self._x(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s AND (%s::text IS NULL OR column_name = %s) LIMIT 1",
            [table, column, column],
        ).fetchone()
        return row is not None

    def decisions(self, decision_id: int | None = None) -> list[Decision]:
        """Every decision a person made (or the one with this id), oldest first."""
        where, params = ("WHERE id = %s", [decision_id]) if decision_id is not None else ("", [])
        return [
            Decision(
                id=r[0],
                kind=DecisionKind(r[1]),
                sha256=r[2],
                path=None if r[3] is None else Path(os.fsdecode(r[3])),
                other_sha256=r[4],
                other_path=None if r[5] is None else Path(os.fsdecode(r[5])),
                decided_at=r[6],
                decided_by=r[7],
                note=r[8] or "",
            )
            for r in self._x(
                "SELECT id, kind, sha_a, path_a, sha_b, path_b, decided_at, decided_by, note"
                f" FROM decisions {where} ORDER BY id",
                params,
            )
        ]

    def remove_decision(self, decision_id: int) -> None:
        self._x("DELETE FROM decisions WHERE id = %s", [decision_id])

    def ignores_after(self, mark: int) -> tuple[int, list[tuple[str, str]]]:
        """Pairs marked "not duplicates" after decision ``mark`` (0: all), and the mark to pass next time."""
        rows = self._x(
            "SELECT id, sha_a, sha_b FROM decisions WHERE id > %s AND kind = 'not_duplicates' ORDER BY id", [mark]
        ).fetchall()
        last = self._one("SELECT COALESCE(MAX(id), %s) FROM decisions", [mark])[0]
        return max(int(last), mark), [(r[1], r[2]) for r in rows if r[1] and r[2]]

    # --- crash counts --------------------------------------------------------

    def add_crash(self, path: Path, st: FileStat, cause: str | None = None) -> int:
        """One more crash on this version of ``path``; returns its count.  ``cause``:
        what went wrong this time (an exception's text), None for a worker's death."""
        key = _path_key(path)
        with self.atomic():
            row = self._x("SELECT size, mtime_ns, count FROM crashes WHERE path = %s", [key]).fetchone()
            count = row[2] + 1 if row is not None and (row[0], row[1]) == (st.size, st.mtime_ns) else 1
            self._x(
                "INSERT INTO crashes (path, size, mtime_ns, count, at, cause) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,"
                " count = excluded.count, at = excluded.at, cause = excluded.cause",
                [key, st.size, st.mtime_ns, count, time.time(), cause],
            )
        return int(count)

    def crash_count(self, path: Path, st: FileStat) -> int:
        return self.crash_of(path, st)[0]

    def crash_of(self, path: Path, st: FileStat) -> tuple[int, str | None]:
        """Crashes of this version of ``path`` so far, and the cause of the last (None: a worker's death)."""
        row = self._x(
            "SELECT count, cause FROM crashes WHERE path = %s AND size = %s AND mtime_ns = %s",
            [_path_key(path), st.size, st.mtime_ns],
        ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    # --- the scan's removal pass, status ------------------------------------------

    def start_seen(self) -> None:
        """Begin recording which files a scan saw (in a temporary table of this session)."""
        self._x("CREATE TEMP TABLE IF NOT EXISTS seen (id BIGINT PRIMARY KEY)")
        self._x("DELETE FROM pg_temp.seen")

    def mark_seen(self, file_id: int) -> None:
        self._x("INSERT INTO pg_temp.seen (id) VALUES (%s) ON CONFLICT DO NOTHING", [file_id])

    def unseen_under(self, root: Path, chunk: int = 1000) -> Iterator[tuple[int, Path]]:
        """Records under ``root`` the scan did not see, in path order and in chunks."""
        key = _path_key(root).rstrip(b"/")
        row = self._x(
            "SELECT id FROM files WHERE path = %s AND id NOT IN (SELECT id FROM pg_temp.seen)", [key]
        ).fetchone()
        if row is not None:  # the root itself, a file
            yield row[0], root
        where, low = "path >= %s", key + b"/"
        while True:
            rows = self._x(
                f"SELECT id, path FROM files WHERE {where} AND path < %s"
                " AND NOT EXISTS (SELECT 1 FROM pg_temp.seen s WHERE s.id = files.id) ORDER BY path LIMIT %s",
                [low, key + b"0", chunk],
            ).fetchall()
            if not rows:
                return
            for file_id, path in rows:
                yield file_id, Path(os.fsdecode(path))
            where, low = "path > %s", rows[-1][1]

    def recount(self) -> None:
        """Set every counter from the rows (after a bulk copy; the triggers keep them after that)."""
        with self.atomic():
            self._x("UPDATE counters SET n = 0")
            self._x("UPDATE counters SET n = (SELECT COUNT(*) FROM files WHERE error IS NULL) WHERE name = 'files'")
            self._x("UPDATE counters SET n = (SELECT COUNT(*) FROM files WHERE error IS NOT NULL) WHERE name = 'errors'")
            self._x("UPDATE counters SET n = (SELECT COUNT(DISTINCT original_id) FROM matches) WHERE name = 'groups'")
            self._x("UPDATE counters SET n = (SELECT COUNT(*) FROM matches) WHERE name = 'duplicates'")
            self._x(
                "UPDATE counters SET n = (SELECT COUNT(*) FROM matches WHERE 'duplicates_' || tier = counters.name)"
                " WHERE name LIKE 'duplicates\\_%'"
            )
            self._x(
                "INSERT INTO counters (name, n) SELECT 'audit:' || action || '_' || outcome, COUNT(*) FROM audit"
                " GROUP BY 1 ON CONFLICT (name) DO UPDATE SET n = excluded.n"
            )

    def counts(self) -> dict[str, int]:
        """Files, errors, groups and duplicates (by tier): kept by triggers, read in O(1)."""
        return {name: int(n) for name, n in self._x("SELECT name, n FROM counters WHERE name NOT LIKE 'audit:%'")}

    def action_counts(self) -> dict[str, int]:
        """Audit rows by ``action_outcome``: kept by a trigger, read in O(1)."""
        return {
            name.removeprefix("audit:"): int(n)
            for name, n in self._x("SELECT name, n FROM counters WHERE name LIKE 'audit:%' AND n > 0 ORDER BY name")
        }

    def data_version(self) -> int:
        """A number that changes whenever a transaction that wrote has ended (the
        snapshot's ``xmax``): a cheap "has anyone written?".  Unlike SQLite's
        ``data_version`` it moves on this connection's own writes too, which
        costs the caller one needless look, never a missed change."""
        return int(self._one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")[0])

    def require_sound(self) -> None:
        """PostgreSQL checks its own pages as it reads them; nothing to do at start."""

    def quick_check(self) -> str | None:
        """None: the server answers (page damage is reported by the server as it reads)."""
        self._x("SELECT 1")
        return None

    # --- daemon status -----------------------------------------------------------

    def write_daemon_status(self, *, pid: int, started_at: float, state: str, data: dict[str, Any]) -> None:
        with self.atomic():
            self._x(
                "INSERT INTO daemon (id, pid, started_at, heartbeat_at, state, data) VALUES (1, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,"
                " heartbeat_at = excluded.heartbeat_at, state = excluded.state, data = excluded.data",
                [pid, started_at, time.time(), state, json.dumps(data, default=str)],
            )

    def read_daemon_status(self) -> dict[str, Any] | None:
        row = self._x("SELECT pid, started_at, heartbeat_at, state, data FROM daemon WHERE id = 1").fetchone()
        if row is None:
            return None
        return {"pid": row[0], "started_at": row[1], "heartbeat_at": row[2], "state": row[3], **json.loads(row[4])}

    # --- audit and intents ------------------------------------------------------

    def audit_insert(self, row: dict[str, Any]) -> int | None:
        """Append an audit row; None when its ``dedup_key`` is already recorded."""
        key = row.get("dedup_key")
        if key is not None and self._x("SELECT 1 FROM audit WHERE dedup_key = %s", [key]).fetchone():
            return None
        return self._insert("audit", row)

    def audit_rows(
        self,
        *,
        audit_id: int | None = None,
        since: float | None = None,
        moves: bool = False,
        not_log: bool = False,
        newest: int | None = None,
        sha256: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Audit rows in order (``newest=N``: the last N, newest first), filtered as asked."""
        where: list[str] = ["TRUE"]
        params: list[Any] = []
        if sha256 is not None:  # indexed
            where.append("sha256 = %s")
            params.append(sha256)
        if audit_id is not None:
            where.append("id = %s")
            params.append(audit_id)
        if since is not None:
            where.append("at >= %s")
            params.append(since)
        if moves:
            where.append("action IN ('quarantine', 'symlink') AND outcome = 'done'")
        if not_log:
            where.append("action != 'log'")
        query = f"SELECT {AUDIT_COLUMNS} FROM audit WHERE {' AND '.join(where)} ORDER BY id"
        if newest is not None:
            query += f" DESC LIMIT {int(newest)}"
        return [tuple(r) for r in self._x(query, params).fetchall()]

    def audit_link_intent(self, audit_id: int, intent_id: int) -> None:
        """Repair only: point an audit row at the intent re-created for its move."""
        self._x("UPDATE audit SET intent_id = %s WHERE id = %s", [intent_id, audit_id])

    def intent_insert(self, values: dict[str, Any]) -> int:
        return self._insert("intents", values)

    def intent_update(self, intent_id: int, values: dict[str, Any]) -> None:
        """Set some columns of an intent (``audit_id`` is only ever set, never cleared)."""
        if values.get("audit_id", 0) is None:
            values = {k: v for k, v in values.items() if k != "audit_id"}
        self._update("intents", "id", intent_id, values)

    def intent_rows(
        self,
        *,
        state: str | None = None,
        intent_id: int | None = None,
        destination: Path | None = None,
        path: Path | None = None,
        original: Path | None = None,
    ) -> list[tuple[Any, ...]]:
        where: list[str] = ["TRUE"]
        params: list[Any] = []
        for column, value in (
            ("original", None if original is None else _path_key(original)),
            ("path", None if path is None else _path_key(path)),
            ("destination", None if destination is None else _path_key(destination)),
            ("state", state),
            ("id", intent_id),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        query = f"SELECT {INTENT_COLUMNS} FROM intents WHERE {' AND '.join(where)} ORDER BY id"
        return [tuple(r) for r in self._x(query, params).fetchall()]

    def intent_of_audit(self, audit_id: int) -> int | None:
        row = self._x("SELECT intent_id FROM audit WHERE id = %s", [audit_id]).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # --- review pages --------------------------------------------------------------

    def review_group_page(
        self,
        *,
        after: bytes | None = None,
        before: bytes | None = None,
        limit: int = 50,
        tiers: tuple[str, ...] = (),
        folder: Path | None = None,
        min_similarity: float | None = None,
        max_similarity: float | None = None,
    ) -> list[tuple[int, bytes]]:
        """See :meth:`dedupd.store.sqlite.Store.review_group_page`."""
        members, params = _pg_member_filter(tiers, folder, min_similarity, max_similarity)
        where, order = "TRUE", "ASC"
        if before is not None:
            where, order = "o.path < %s", "DESC"
            params = [before, *params]
        elif after is not None:
            where = "o.path > %s"
            params = [after, *params]
        rows = self._x(
            f"SELECT o.id, o.path FROM files o WHERE {where} AND EXISTS (SELECT 1 FROM matches m"
            f" JOIN files d ON d.id = m.file_id WHERE m.original_id = o.id{members})"
            f" ORDER BY o.path {order} LIMIT %s",
            [*params, limit],
        ).fetchall()
        out = [(int(r[0]), bytes(r[1])) for r in rows]
        return out[::-1] if before is not None else out

    def review_members(self, original_ids: list[int]) -> dict[int, list[tuple[int, Match, bool]]]:
        """The duplicates of each original: (file id, match, tie), most similar first."""
        out: dict[int, list[tuple[int, Match, bool]]] = {i: [] for i in original_ids}
        if not original_ids:
            return out
        for row in self._x(
            "SELECT original_id, file_id, tier, phash_distance, dhash_distance, colour_distance,"
            " similarity, orientation, reason, tie FROM matches WHERE original_id = ANY(%s)"
            " ORDER BY original_id, similarity DESC NULLS LAST, file_id",
            [list(original_ids)],
        ):
            out[row[0]].append((int(row[1]), _match_from_row(row[2:9]), bool(row[9])))
        return out

    def review_duplicates(
        self,
        *,
        tiers: tuple[str, ...] = (),
        folder: Path | None = None,
        min_similarity: float | None = None,
        max_similarity: float | None = None,
    ) -> list[tuple[int, int]]:
        """Every (duplicate id, original id) that passes the filter."""
        members, params = _pg_member_filter(tiers, folder, min_similarity, max_similarity)
        return [
            (int(r[0]), int(r[1]))
            for r in self._x(
                "SELECT m.file_id, m.original_id FROM matches m JOIN files d ON d.id = m.file_id"
                f" WHERE TRUE{members} ORDER BY m.original_id, m.file_id",
                params,
            )
        ]

    def review_count(
        self,
        *,
        tiers: tuple[str, ...] = (),
        folder: Path | None = None,
        min_similarity: float | None = None,
        max_similarity: float | None = None,
    ) -> int:
        """How many duplicates pass the filter."""
        members, params = _pg_member_filter(tiers, folder, min_similarity, max_similarity)
        row = self._one(f"SELECT COUNT(*) FROM matches m JOIN files d ON d.id = m.file_id WHERE TRUE{members}", params)
        return int(row[0])

    def indexed_at(self, ids: Iterable[int]) -> dict[int, float]:
        """When each file was (last) fingerprinted."""
        return {
            int(i): float(at or 0.0)
            for i, at in self._x("SELECT id, indexed_at FROM files WHERE id = ANY(%s)", [list(set(ids))])
        }

    def review_similar_page(self, *, after: tuple[int, int] | None = None, limit: int = 50) -> list[tuple[int, int, Match]]:
        """Similar pairs (file id, the file it looks like, verdict), in key order after ``after``."""
        where, params = ("(file_id, other_id) > (%s, %s)", list(after)) if after is not None else ("TRUE", [])
        return [
            (int(r[0]), int(r[1]), _match_from_row(r[2:9]))
            for r in self._x(
                "SELECT file_id, other_id, tier, phash_distance, dhash_distance, colour_distance,"
                f" similarity, orientation, reason FROM similar_pairs WHERE {where}"
                " ORDER BY file_id, other_id LIMIT %s",
                [*params, limit],
            )
        ]

    def review_moves_page(self, *, before: int | None = None, limit: int = 50) -> list[int]:
        """Audit ids of moves that are done and not restored, newest first, below ``before``."""
        return [
            int(r[0])
            for r in self._x(
                "SELECT a.id FROM audit a JOIN intents i ON i.id = a.intent_id"
                " WHERE a.action IN ('quarantine', 'symlink') AND a.outcome = 'done' AND i.state = 'done'"
                " AND a.id < %s ORDER BY a.id DESC LIMIT %s",
                [before if before is not None else 1 << 62, limit],
            )
        ]

    # --- originals a person chose -------------------------------------------

    def add_chosen(self, sha256: str, note: str) -> bool:
        """Remember that a person chose this content as its group's original; False if it already was."""
        if self.is_chosen(sha256):
            return False
        self._x(
            "INSERT INTO chosen_originals (sha256, decided_at, note) VALUES (%s, %s, %s)", [sha256, time.time(), note]
        )
        return True

    def remove_chosen(self, sha256: str) -> None:
        self._x("DELETE FROM chosen_originals WHERE sha256 = %s", [sha256])

    def is_chosen(self, sha256: str) -> bool:
        return self._x("SELECT 1 FROM chosen_originals WHERE sha256 = %s", [sha256]).fetchone() is not None

    # --- helpers -----------------------------------------------------------

    def _records(self, where: str, params: list[Any]) -> list[Record]:
        query = (
            "SELECT f.id, f.path, f.dev, f.ino, f.size, f.mtime_ns, f.seq, f.sha256,"
            " f.pixel_digest, f.phash, f.dhash, f.colour, f.width, f.height, f.format,"
            " f.detail, f.error, m.original_id, f.variants, f.crop_keys, f.ctime_ns"
            f" FROM files f LEFT JOIN matches m ON m.file_id = f.id WHERE {where}"
        )
        return [_record_from_row(row) for row in self._x(query, params).fetchall()]


def _match_values(match: Match) -> list[Any]:
    return [
        match.tier.value,
        match.distances.phash,
        match.distances.dhash,
        round(match.distances.colour, 2),
        match.similarity,
        match.orientation.value,
        match.reason,
    ]


def _pg_member_filter(
    tiers: tuple[str, ...], folder: Path | None, min_similarity: float | None, max_similarity: float | None
) -> tuple[str, list[Any]]:
    """The SQLite backend's review filter, with PostgreSQL's placeholders."""
    where, params = _member_filter(tiers, folder, min_similarity, max_similarity)
    return where.replace("?", "%s"), params


if TYPE_CHECKING:  # mypy checks here that PostgresStore is a complete backend

    def _is_a_backend(store: PostgresStore) -> StoreBackend:
        return store
