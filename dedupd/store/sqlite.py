"""The SQLite backend of the store: the only module that imports sqlite-utils.

One SQLite file in WAL mode, so readers (``dedupd groups``, ``dedupd status``)
never block the writer.  Every write goes through :meth:`Store.atomic`.
The schema is :mod:`dedupd.store.schema`'s, applied by sqlite-utils'
``Migrations`` (:func:`schema_migrations`); paths are stored as bytes
(``os.fsencode``) so that a file name that is not valid UTF-8 round-trips.

The queries both backends word alike are in :class:`~dedupd.store.base.SqlStore`;
here are the connection, the writer lock, transactions, the schema and
SQLite's own words (``json_each`` for a list of values, ``PRAGMA`` checks).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dedupd.errors import StoreError, StoreLockedError
from dedupd.store.base import SqlStore

if TYPE_CHECKING:
    from dedupd.backend import StoreBackend
    from dedupd.store.schema import Op, Step, Table


@contextmanager
def _numpy_hidden() -> Iterator[None]:
    """Within: ``import numpy`` fails, unless numpy is already imported.

    sqlite-utils imports numpy if it can, only to name the column type of
    numpy's scalar types when it infers a table's columns from values.  The
    store never does that (the migrations name every column's type, and
    values are bound as Python values), but the import costs about 0.2 s of
    CPU: more than a third of what ``dedupd status`` or ``dedupd audit``
    costs in all (docs/benchmarks.md, "Start-up of a dedupd process").
    """
    if "numpy" in sys.modules:
        yield
        return
    sys.modules["numpy"] = None  # type: ignore[assignment]  # None: the import system's "not found"
    try:
        yield
    finally:
        if sys.modules.get("numpy", False) is None:
            del sys.modules["numpy"]


with _numpy_hidden():
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

#: the Python type sqlite-utils is given for each column type of the schema
#: (:class:`dedupd.store.schema.Type`, by value): its words for them are
#: :data:`~dedupd.store.schema.TYPE_NAMES`' SQLite ones
_PYTHON_TYPES: dict[str, type] = {"int": int, "bigint": int, "id": int, "text": str, "bytes": bytes, "real": float}


def _create(db: sqlite_utils.Database, table: Table) -> None:
    """``CREATE TABLE`` by sqlite-utils' ``create()``, which has no words for ``ON DELETE``."""
    if any(c.cascade for c in table.columns):
        db.execute(table.sql("sqlite"))
        return
    db.table(table.name).create(
        {c.name: _PYTHON_TYPES[c.type.value] for c in table.columns},
        pk=table.pk[0] if len(table.pk) == 1 else table.pk,
        not_null={c.name for c in table.columns if c.not_null},
        defaults={c.name: c.default for c in table.columns if c.default is not None},
        foreign_keys=[(c.name, *c.references) for c in table.columns if c.references is not None],
    )


def _run(db: sqlite_utils.Database, op: Op) -> None:
    """One operation of a step, through sqlite-utils where it has the words."""
    from dedupd.store.schema import AddColumn, Dialects, DropTable, Index, PrimaryKey, Sql, Table  # noqa: PLC0415

    if isinstance(op, Table):
        _create(db, op)
    elif isinstance(op, AddColumn):
        c = op.column
        if c.references is None and c.not_null == (c.default is not None):
            db.table(op.table).add_column(c.name, _PYTHON_TYPES[c.type.value], not_null_default=c.default)
        else:  # a reference, or a default on a column that may be NULL: not add_column's words
            db.execute(op.sql("sqlite"))
    elif isinstance(op, Index) and op.where is None:
        db.table(op.table).create_index(list(op.columns), index_name=op.index_name, unique=op.unique)
    elif isinstance(op, DropTable):
        db.table(op.name).drop()
    elif isinstance(op, PrimaryKey):
        db.table(op.table).transform(pk=op.columns)  # SQLite alters no key: the table is rebuilt
    elif isinstance(op, (Sql, Dialects)):
        for statement in op.of("sqlite"):
            db.execute(statement)
    else:  # a partial index, DropIndex
        db.execute(op.sql("sqlite"))


def migrations_of(steps: Sequence[Step]) -> Migrations:
    """sqlite-utils' migrations for those of ``steps`` SQLite has something to do
    in, each applied and recorded by its name in one transaction."""
    from dedupd.store.schema import steps_for  # noqa: PLC0415 - see schema_migrations

    out = Migrations("dedupd")
    for each in steps_for("sqlite", steps):

        def apply(db: sqlite_utils.Database, each: Step = each) -> None:
            for op in each.ops_for("sqlite"):
                _run(db, op)

        out(name=each.name)(apply)
    return out


@functools.cache
def schema_migrations() -> Migrations:
    """The store's schema (:data:`dedupd.store.schema.STEPS`) as sqlite-utils'
    migrations.  Made when a writer first opens a store, not at import: the
    description's import (its dataclasses) cost 12 ms of ``python -X importtime``
    on the shared 2-core machine, which the read-only commands (``status``,
    ``groups``, ``audit``) never need."""
    from dedupd.store.schema import STEPS  # noqa: PLC0415

    return migrations_of(STEPS)


def default_db_path() -> Path:
    """``$STATE_DIRECTORY`` under systemd, else ``$XDG_STATE_HOME/dedupd``."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0]) / "dedupd.db"
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(xdg) / "dedupd" / "dedupd.db"


class Store(SqlStore):
    """A connection to the store; open with :meth:`open`."""

    _SEEN = "temp.seen"
    _UNSEEN = "id NOT IN (SELECT id FROM temp.seen)"

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
        super().__init__()
        self.db = db
        self.path = path
        self._lock_fd: int | None = None

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Store:
        """Open (creating and migrating unless ``readonly``) the store at ``path``."""
        try:
            if readonly:
                if not path.exists():
                    raise StoreError(f"{path}: no store here yet (run 'dedupd scan' first)")
                conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False
                )
                try:
                    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                except sqlite3.OperationalError:
                    # a directory this user cannot write, with no WAL index to share:
                    # read the file as it is (no writer can be running there either)
                    conn.close()
                    conn = sqlite3.connect(
                        f"file:{path}?mode=ro&immutable=1", uri=True, timeout=30, check_same_thread=False
                    )
                    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                db = sqlite_utils.Database(conn)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
                db = sqlite_utils.Database(conn)
                db.enable_wal()
                db.execute("PRAGMA synchronous=NORMAL")
                # 64 MiB of page cache (the default is 2 MiB): the indexes on
                # SHA-256 and pixel digest take random keys, and at a million
                # files their pages no longer fit the default
                db.execute("PRAGMA cache_size=-65536")
                db.execute("PRAGMA foreign_keys=ON")
                schema_migrations().apply(db)
            db.execute("PRAGMA busy_timeout=30000")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"{path}: {exc.strerror or exc}") from exc
        return cls(db, path)

    def reader(self) -> Store:
        """Another, read-only connection to this store (a snapshot per query, for another thread)."""
        other = Store.open(self.path, readonly=True)
        other.host = self.host  # a dry run's copy of a shared store holds every host's rows
        return other

    def close(self) -> None:
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def lock_writer(self) -> None:
        """Become this store's only writer process, or raise StoreLockedError."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"{self.path} (another 'dedupd run' or 'dedupd scan' holds {self.lock_path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def writer_pid(self) -> int | None:
        """The pid of the process holding the writer lock, or None when nobody does."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def snapshot(self, dest: Path) -> Store:
        """A private copy of this store at ``dest`` (for dry runs), opened for writing."""
        target = sqlite3.connect(str(dest))
        try:
            self.db.conn.backup(target)
        finally:
            target.close()
        return Store.open(dest)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction: everything inside is written, or nothing is.

        The outermost one starts with ``BEGIN IMMEDIATE``: it takes SQLite's
        write lock first, so a second writer waits on the busy timeout instead
        of failing at its first write after a read ("database is locked" is
        immediate for a deferred transaction that must upgrade).  Nested ones
        are savepoints.
        """
        conn = self.db.conn
        try:
            if conn.in_transaction:
                with self.db.atomic():  # a savepoint
                    yield
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from exc


    # --- the dialect: what the shared queries of SqlStore run on --------------

    def _sql(self, query: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        # sqlite-utils' execute: a write outside atomic() is committed at once
        return self.db.execute(query, params)

    def _insert(self, table: str, values: dict[str, Any]) -> int:
        # sqlite-utils' insert: its own transaction outside atomic(), a savepoint inside
        return int(self.db.table(table).insert(values).last_pk)  # type: ignore[arg-type]

    def _any(self, column: str, values: list[Any]) -> tuple[str, list[Any]]:
        # one parameter however many values (SQLite allows 32766 parameters a statement)
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(values)]

    def _migrated(self, table: str, column: str | None = None) -> bool:
        """Does the store have this table (and column)?"""
        if table not in self.db.table_names():
            return False
        return column is None or column in self.db.table(table).columns_dict

    def start_seen(self) -> None:
        """Begin recording which files a scan saw (in a temporary table, not in memory)."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS seen (id INTEGER PRIMARY KEY)")
        self.db.execute("DELETE FROM temp.seen")

    def data_version(self) -> int:
        """A number that changes whenever another connection commits (SQLite's
        ``PRAGMA data_version``): a cheap "has anyone else written?"."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def require_sound(self) -> None:
        """Raise StoreError (exit 74) unless ``PRAGMA quick_check`` finds the store sound."""
        problem = self.quick_check()
        if problem is not None:
            raise StoreError(
                f"{self.path} is damaged ({problem}); the quarantine records beside each "
                "quarantined file still allow 'dedupd restore --from-quarantine DIR'"
            )

    def quick_check(self) -> str | None:
        """SQLite's ``PRAGMA quick_check``: None when the store is sound, else what is wrong."""
        try:
            rows = self.db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        found = [str(r[0]) for r in rows]
        return None if found == ["ok"] else "; ".join(found[:5])


if TYPE_CHECKING:  # mypy checks here that Store is a complete backend

    def _is_a_backend(store: Store) -> StoreBackend:
        return store
