"""The PostgreSQL backend of the store: the only module that imports psycopg.

Selected by a ``postgresql://`` URL as ``db`` (config) or ``--db``; a path keeps
SQLite (:mod:`dedupd.store.sqlite`), the embedded default.  The tables, their
columns and the counters are those of the SQLite store: both are built from one
description (:mod:`dedupd.store.schema`).  The queries both backends word alike are written once,
with ``?`` placeholders, in :class:`~dedupd.store.base.SqlStore` (:func:`_pg` gives
them psycopg's ``%s``); here are the connection pool, locks, transactions, the
schema and PostgreSQL's own words (``= ANY(array)``, advisory locks, ``pg_temp``).

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

The schema is :mod:`dedupd.store.schema`'s, the one description both backends
apply (:meth:`PostgresStore._migrate`), in PostgreSQL's words.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from dedupd.errors import StoreError, StoreLockedError, StoreUnavailable
from dedupd.models import PostgresUrl
from dedupd.store.base import SqlStore, this_host
from dedupd.store.schema import (
    LOCK_CLASS,
    POSTGRES_RECORDED_AS,
    STEPS,
    WRITE_LOCK,
    Step,
    postgres_statements,
    steps_for,
)
from dedupd.store.sqlite import Store

if TYPE_CHECKING:
    from dedupd.backend import StoreBackend

#: the second key of the migration's advisory lock (the first is :data:`LOCK_CLASS`;
#: 1 is the write lock, 2 was a writer lock before each host had its own key)
MIGRATE_LOCK = 3
#: rows of the feed kept (seconds): a host away longer reads its index afresh
FEED_KEPT = 3600.0
#: a transaction left open this long by a host that hangs or lost its network
#: is ended by the server, and the store's write lock with it, so that the other
#: hosts wait no longer than this (far above any transaction of dedupd's: the
#: longest re-read a few pictures to verify a file)
STUCK_AFTER = "120s"


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
                    kwargs={
                        "autocommit": True,
                        "application_name": f"dedupd:{os.getpid()}",
                        # no statements prepared behind our back: the pool's DISCARD
                        # ALL drops them on the server while psycopg would still
                        # name them ("prepared statement _pg3_0 does not exist" on
                        # the sixth store opened on a pooled connection)
                        "prepare_threshold": None,
                    },
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


class PostgresStore(SqlStore):
    """A connection to a PostgreSQL store; open with :meth:`open`."""

    _SEEN = "pg_temp.seen"
    _UNSEEN = "NOT EXISTS (SELECT 1 FROM pg_temp.seen s WHERE s.id = files.id)"

    def __init__(self, url: PostgresUrl, pool: ConnectionPool, conn: psycopg.Connection[Any], host: str) -> None:
        super().__init__(host)
        self.url = url
        self.path = Path(str(url))  # for messages only: there is no file
        self._pool = pool
        self._conn = conn
        self._writer = False
        self._depth = 0  # atomic() blocks open on this connection
        self._pipe: psycopg.Pipeline | None = None  # the outermost one's pipeline

    @classmethod
    def open(cls, url: PostgresUrl, *, readonly: bool = False, host: str | None = None) -> PostgresStore:
        """Connect to the store at ``url``, creating and migrating its tables unless
        ``readonly``, as the host ``host`` (default: this machine's name)."""
        pool = _pools.acquire(url)
        try:
            conn = pool.getconn(timeout=30)
        except Exception as exc:  # psycopg_pool.PoolTimeout, or a connection error inside it
            _pools.release(url)
            raise StoreUnavailable(f"{url}: {exc}") from exc
        store = cls(url, pool, conn, host or this_host())
        try:
            # the feed's triggers name the host that wrote, and a transaction this
            # host leaves open cannot hold the others for long (both reset with the
            # connection; set here rather than as connection options, which would
            # replace any the URL or PGOPTIONS give, a search_path among them)
            conn.execute(
                "SELECT set_config('dedupd.host', %s, false),"
                " set_config('idle_in_transaction_session_timeout', %s, false)",
                [store.host, STUCK_AFTER],
            )
            if readonly:
                conn.execute("SET default_transaction_read_only = on")
                if not store._migrated("files"):
                    raise StoreError(f"{url}: no store here yet (run 'dedupd scan' first)")
                if not store._migrated("files", "host"):
                    # from before hosts, which no writer has migrated yet: one host's
                    # store, read as that host's (its rows are all host '' then)
                    store.host = ""
            else:
                store._migrate()
        except psycopg.Error as exc:
            store.close()
            raise _failure(url, exc, conn) from exc
        except StoreError:
            store.close()
            raise
        return store

    def _migrate(self, steps: Sequence[Step] = STEPS) -> None:
        """Apply, in one transaction, the steps of the schema this store has not
        recorded (:mod:`dedupd.store.schema`), and record them.  A name recorded
        before the one description (p001-p005) stands for the steps it was
        (:data:`~dedupd.store.schema.POSTGRES_RECORDED_AS`); one whose steps are
        all done is recorded too, for a dedupd from before that shares the store."""
        with self._conn.transaction():
            # two daemons starting at once: the second waits, then finds it done
            self._conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_CLASS, MIGRATE_LOCK])
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS dedupd_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)"
            )
            recorded = {r[0] for r in self._conn.execute("SELECT name FROM dedupd_migrations")}
            done = recorded | {n for name in recorded for n in POSTGRES_RECORDED_AS.get(name, ())}
            applied = []
            for each in steps_for("postgres", steps):
                if each.name in done:
                    continue
                for op in each.ops_for("postgres"):
                    for statement in postgres_statements(op):
                        if "%(host)s" in statement:
                            self._conn.execute(statement, {"host": self.host})
                        else:
                            self._conn.execute(statement.encode())  # no parameters: sent as it is
                applied.append(each.name)
                done.add(each.name)
            if not applied:
                return
            old = [n for n, covers in POSTGRES_RECORDED_AS.items() if n not in recorded and set(covers) <= done]
            for name in dict.fromkeys([*applied, *old]):
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
        return PostgresStore.open(self.url, readonly=True, host=self.host)

    def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None  # type: ignore[assignment]
        if self._writer and not self._conn.closed:
            # now, not when the pool resets the connection (on a thread of its own)
            try:
                self._x("SELECT pg_advisory_unlock(%s::bigint)", [_host_key(self.host)])
            except psycopg.Error:
                pass  # a lost connection holds no lock; the pool throws it away
            self._writer = False
        pool.putconn(self._conn)  # reset (DISCARD ALL): temporary tables, settings, any other lock
        _pools.release(self.url)

    # --- locking -----------------------------------------------------------

    def lock_writer(self) -> None:
        """Become this host's only writer process in the store, or raise
        StoreLockedError.  Each host has its own writer (its daemon or scan): the
        lock is keyed by the host's name, so daemons of several hosts share the
        store, each writing beside the others (their transactions take turns on
        the store's write lock)."""
        row = self._x("SELECT pg_try_advisory_lock(%s::bigint)", [_host_key(self.host)]).fetchone()
        if not row or not row[0]:
            pid = self.writer_pid()
            raise StoreLockedError(
                f"{self.url} (another 'dedupd run' or 'dedupd scan' is host {self.host!r}'s writer, pid {pid})"
            )
        self._writer = True

    def _where(self) -> str:
        return str(self.url)  # a Path would fold the URL's '//'

    def writer_pid(self) -> int | None:
        """The pid of the dedupd process holding the writer lock (as it named its
        connection), -1 when it cannot be told, None when nobody holds it."""
        row = self._x(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            # a lock on one bigint key shows its high and low halves, and objsubid 1
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s"
            " AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [(_host_key(self.host) >> 32) & 0xFFFFFFFF, _host_key(self.host) & 0xFFFFFFFF],
        ).fetchone()
        if row is None:
            return None
        name = str(row[0] or "")
        return int(name.split(":", 1)[1]) if name.startswith("dedupd:") and name[7:].isdigit() else -1

    @contextmanager
    def atomic(self, *, pipeline: bool = True) -> Iterator[None]:
        """A transaction: everything inside is written, or nothing is.

        The outermost one takes the store's write lock first (a transaction-level
        advisory lock, released at COMMIT or ROLLBACK): writers take turns as
        with SQLite's ``BEGIN IMMEDIATE``.  Nested ones are savepoints.

        The outermost one runs in libpq's pipeline mode (``pipeline=False``: not,
        for COPY, which a pipeline cannot carry): each statement is sent as it
        is made, and the server's answer waited for only when it is read.
        ``BEGIN``, the lock, savepoints, their release and writes whose result
        nobody reads cost no round trip of their own; they travel ahead of the
        next read (or of ``COMMIT``).  So an error in one of them is raised at
        that read or at the block's end, still inside the transaction it undoes.
        Transaction and savepoint statements are sent here, not through
        psycopg's ``transaction()``, which waits for the server at each one
        when in a pipeline."""
        try:
            if self._depth:
                with self._savepoint():
                    yield
            elif self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with self._conn.transaction():  # one opened without atomic(): a savepoint in it
                    yield
            else:
                with self._transaction(pipeline):
                    yield
        except psycopg.Error as exc:
            raise _failure(self.url, exc, self._conn) from exc

    @contextmanager
    def _transaction(self, pipelined: bool) -> Iterator[None]:
        conn = self._conn
        try:
            with conn.pipeline() if pipelined else nullcontext() as pipe:
                self._pipe = pipe
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_CLASS, WRITE_LOCK])
                self._depth = 1
                try:
                    yield
                except BaseException:
                    self._undo("ROLLBACK")
                    raise
                finally:
                    self._depth, self._pipe = 0, None
                conn.execute("COMMIT")
        except psycopg.Error:
            # a statement sent ahead failed (found at the pipeline's end): the
            # transaction is aborted, not ended
            if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self._undo("ROLLBACK")
            raise

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        name = f"dedupd_{self._depth}"
        self._conn.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._undo(f"ROLLBACK TO SAVEPOINT {name}", f"RELEASE SAVEPOINT {name}")
            raise
        finally:
            self._depth -= 1
        self._conn.execute(f"RELEASE SAVEPOINT {name}")

    def _undo(self, *statements: str) -> None:
        """Roll back after an exception (which the caller raises again): the
        pipeline first synced, since one aborted by an error runs nothing more;
        a connection that is gone has nothing to roll back."""
        try:
            if self._pipe is not None:
                self._pipe.sync()
        except psycopg.Error:
            pass  # the error being raised, reported once more
        try:
            for statement in statements:
                self._conn.execute(statement.encode())
        except psycopg.Error:
            pass

    def snapshot(self, dest: Path) -> Store:
        """A private copy of this store at ``dest``, a SQLite file (for dry runs),
        opened for writing: every row is read once (about 8,700 files a second
        in bench/migrate_bench.py, docs/benchmarks.md)."""
        from dedupd.store.transfer import copy_postgres_to_sqlite  # noqa: PLC0415 - transfer imports this module

        copy = Store.open(dest)
        copy.host = self.host  # the copy holds every host's rows: this one's are its own
        try:
            copy_postgres_to_sqlite(self, copy)
        except BaseException as exc:
            copy.close()
            if isinstance(exc, psycopg.Error):
                raise _failure(self.url, exc, self._conn) from exc
            raise
        return copy

    # --- the dialect: what the shared queries of SqlStore run on --------------

    def _sql(self, query: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self._x(_pg(query), params)

    def _any(self, column: str, values: list[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [values]

    def _insert(self, table: str, values: dict[str, Any]) -> int:
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, values)),
            sql.SQL(", ").join(sql.Placeholder() * len(values)),
        )
        return int(self._x(query, list(values.values())).fetchone()[0])  # type: ignore[index]

    def _migrated(self, table: str, column: str | None = None) -> bool:
        row = self._x(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s AND (%s::text IS NULL OR column_name = %s) LIMIT 1",
            [table, column, column],
        ).fetchone()
        return row is not None

    # --- the scan's removal pass, status ------------------------------------------

    def start_seen(self) -> None:
        """Begin recording which files a scan saw (in a temporary table of this session)."""
        self._x("CREATE TEMP TABLE IF NOT EXISTS seen (id BIGINT PRIMARY KEY)")
        self._x("DELETE FROM pg_temp.seen")

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

    def data_version(self) -> int:
        """A number that changes whenever a transaction that wrote has ended (the
        snapshot's ``xmax``): a cheap "has anyone written?".  Unlike SQLite's
        ``data_version`` it moves on this connection's own writes too, which
        costs the caller one needless look, never a missed change."""
        return int(self._one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")[0])

    def require_sound(self) -> None:
        """PostgreSQL checks its own pages as it reads them; nothing to do at start."""

    # --- the feed: what other hosts wrote -----------------------------------------

    def feed_mark(self) -> int:
        """Where the feed is now: :meth:`changes_after` this mark returns what
        is written from here on.  Taken before the index is read, so that what
        is written while it is read comes again (an index takes a file twice
        alike)."""
        # never below what was pruned (or reset by a migrate): an empty feed is not
        # "from the start", which changes_after would take for rows lost
        return int(self._one("SELECT GREATEST(COALESCE(MAX(rev), 0), (SELECT below FROM file_changes_pruned)) FROM file_changes")[0])

    def changes_after(self, mark: int) -> tuple[int, list[tuple[int, str, str]]] | None:
        """What other hosts wrote to files and matches after ``mark``: the new
        mark and (file id, the file's host, ``file`` or ``match``) in the order
        it was committed; None when rows after ``mark`` were pruned (the caller
        reads its index afresh).  One range of the feed's key: what a second's
        worth of other hosts' work costs, at any size of store."""
        # this host's own rows too, in the same statement: the new mark is the
        # last row read, never one committed after the read
        rows = self._x(
            "SELECT rev, file_id, host, kind, by_host FROM file_changes WHERE rev > %s ORDER BY rev", [mark]
        ).fetchall()
        # read after the rows: a pruning that committed before them shows here
        pruned = int(self._one("SELECT below FROM file_changes_pruned")[0])
        if mark < pruned:
            return None
        last = int(rows[-1][0]) if rows else mark
        return last, [(int(r[1]), str(r[2]), str(r[3])) for r in rows if r[4] != self.host]

    def prune_changes(self, kept: float = FEED_KEPT) -> int:
        """Drop feed rows older than ``kept`` seconds; how many went."""
        with self.atomic():
            # by the key: the rows are numbered in time order, so the old ones are
            # those below the first row young enough to keep (a walk over what goes)
            row = self._x(
                "WITH gone AS (DELETE FROM file_changes WHERE rev < COALESCE("
                " (SELECT rev FROM file_changes WHERE at >= extract(epoch FROM clock_timestamp()) - %s"
                "  ORDER BY rev LIMIT 1), (SELECT MAX(rev) + 1 FROM file_changes))"
                " RETURNING rev) SELECT COUNT(*), MAX(rev) FROM gone",
                [kept],
            ).fetchone()
            assert row is not None
            if row[0]:
                self._x("UPDATE file_changes_pruned SET below = GREATEST(below, %s)", [row[1]])
        return int(row[0])

    def quick_check(self) -> str | None:
        """None: the server answers (page damage is reported by the server as it reads)."""
        self._x("SELECT 1")
        return None


def _host_key(host: str) -> int:
    """A host's writer lock: one 64-bit key, from its name's SHA-256 (two hosts'
    names meet on one key with a chance of one in 2**64; on one 32-bit key, one
    in a few thousand among a hundred hosts).  One-key advisory locks never
    meet the two-key ones of :data:`LOCK_CLASS`."""
    return int.from_bytes(hashlib.sha256(b"dedupd writer " + host.encode()).digest()[:8], "big", signed=True)


@functools.lru_cache(maxsize=256)
def _pg(query: str) -> str:
    """A shared query (``?`` placeholders) in psycopg's words: ``%s``, and a literal ``%`` doubled."""
    return query.replace("%", "%%").replace("?", "%s")


if TYPE_CHECKING:  # mypy checks here that PostgresStore is a complete backend

    def _is_a_backend(store: PostgresStore) -> StoreBackend:
        return store
