"""``dedupd migrate``: copy a SQLite store into a PostgreSQL store, empty or
shared with other hosts already; and back, into a private SQLite file, for
``scan --dry-run`` on a PostgreSQL store.

Row for row, in one PostgreSQL transaction: a copy that fails leaves the
destination as it was.  Into an empty store the ids are kept; into one that
other hosts already fill, every id (files, audit rows, intents, decisions)
and seniority (``seq``) is moved past the highest there, and each reference
to them with it, so matches, similar pairs, audit rows and intents still
point at the same files, and the copied files are junior to the store's.  A
host whose rows the store already holds is refused: it shares the store
already.  The counters are recomputed; the daemon's status row is not copied
(it described the daemon that used the SQLite store).  Both stores are held
as their writer for the whole copy, so no daemon writes to either meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

from dedupd.errors import StoreError
from dedupd.store.postgres import PostgresStore
from dedupd.store.sqlite import Store

#: files before what refers to them, the audit before the matches (whose ``owed``
#: flag a trigger computes from the audit as each is written: once per match,
#: rather than once per audit row); `counters` and `daemon` are not copied
TABLES = (
    "files",
    "audit",
    "intents",
    "decisions",
    "matches",
    "similar_pairs",
    "crashes",
    "scanned_roots",
    "chosen_originals",
)
BATCH = 10_000

#: what a dry run's copy holds besides: what hosts asked of each other and shared,
#: and each host's reference_dirs, so that it judges as the real run would
SNAPSHOT_ALSO = ("host_references", "pixels_asked", "pixels_shared")

#: the columns that hold an id (or a seniority), by table, and whose ids they are:
#: moved past the destination's highest of those when it is not empty
MOVED: dict[str, dict[str, str]] = {
    "files": {"id": "files", "seq": "seq"},
    "audit": {"id": "audit", "intent_id": "intents", "restores": "audit"},
    "intents": {"id": "intents", "audit_id": "audit"},
    "decisions": {"id": "decisions"},
    "matches": {"file_id": "files", "original_id": "files"},
    "similar_pairs": {"file_id": "files", "other_id": "files"},
}


def _columns(store: PostgresStore, table: str) -> list[str]:
    """The columns of one of the PostgreSQL store's tables, in their order."""
    return [
        r[0]
        for r in store._x(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s ORDER BY ordinal_position",
            [table],
        )
    ]


class StoreNotEmptyError(StoreError):
    """The destination store holds this host's rows already: it shares the store (dedupd migrate copies a host in once)."""


def copy_sqlite_to_postgres(
    source: Store, dest: PostgresStore, progress: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Copy every row of ``source`` into ``dest``; returns the rows copied per table."""
    copied: dict[str, int] = {}
    with dest.atomic(pipeline=False):  # COPY cannot run in a pipeline
        mine = [
            t for t in ("files", "audit", "intents")
            if dest._one(f"SELECT EXISTS (SELECT 1 FROM {t} WHERE host = %s)", [dest.host])[0]
        ]  # fmt: skip
        if mine:
            raise StoreNotEmptyError(
                f"{dest.url} already has rows of host {dest.host} in {', '.join(mine)}: this host shares it already"
            )
        # into a store other hosts fill: ids past theirs (0: an empty store, ids kept)
        offsets = {
            "files": _highest(dest, "SELECT MAX(id) FROM files"),
            "seq": _highest(dest, "SELECT MAX(seq) FROM files"),
            "audit": _highest(dest, "SELECT MAX(id) FROM audit"),
            "intents": _highest(dest, "SELECT MAX(id) FROM intents"),
            "decisions": _highest(dest, "SELECT MAX(id) FROM decisions"),
        }
        chosen_there = {r[0] for r in dest._x("SELECT sha256 FROM chosen_originals")}
        for table in TABLES:
            columns = _columns(dest, table)
            have = set(source.db.table(table).columns_dict) if table in source.db.table_names() else set()
            if not have:
                copied[table] = 0
                continue
            # a SQLite store is one host's (host ''): its rows become the migrating host's
            own = "'" + dest.host.replace("'", "''") + "'"

            def chosen(c: str, table: str = table) -> str:
                if c == "host":
                    return f"{own} AS host"
                if c not in have:
                    return f"NULL AS {c}"
                moved = MOVED.get(table, {}).get(c)
                if moved is not None and offsets[moved]:
                    return f"{c} + {offsets[moved]} AS {c}"
                if table == "decisions" and c in ("host_a", "host_b"):
                    # a SQLite store's files are host '' (NULL: any host's, kept so)
                    return f"CASE WHEN {c} = '' THEN {own} ELSE {c} END AS {c}"
                if table == "audit" and c == "dedup_key":
                    # as a host of a shared store writes its keys (actions.py): the same
                    # finding is still recorded once after the move
                    return f"CASE WHEN dedup_key IS NULL THEN NULL ELSE {own} || ':' || dedup_key END AS dedup_key"
                return c

            rows = source.db.execute(f"SELECT {', '.join(chosen(c) for c in columns)} FROM {table} ORDER BY rowid")
            skip = columns.index("sha256") if table == "chosen_originals" else None
            n = 0
            if table in ("files", "matches"):
                # the feed is for what hosts write as they run: a copy would add a
                # row per file; other hosts read their index afresh instead (below)
                dest._x(f"ALTER TABLE {table} DISABLE TRIGGER file_changes_{table}_insert")
            if table == "audit":
                # it marks the matches an audit row settles, and the matches come
                # after it: nothing to mark yet (each match's own trigger reads the
                # audit as it is copied), and in this transaction its plan scanned
                # every file for each row (minutes at a million files)
                dest._x("ALTER TABLE audit DISABLE TRIGGER matches_owed_audit")
            with dest._conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                while batch := rows.fetchmany(BATCH):
                    for row in batch:
                        if skip is not None and row[skip] in chosen_there:
                            continue  # another host's person chose this content already
                        copy.write_row(row)
                        n += 1
                    if progress is not None:
                        progress(table, n)
            if table == "audit":
                dest._x("ALTER TABLE audit ENABLE TRIGGER matches_owed_audit")
            if table in ("files", "matches"):
                dest._x(f"ALTER TABLE {table} ENABLE TRIGGER file_changes_{table}_insert")
            dest._x(f"ANALYZE {table}")  # the triggers of the tables copied next plan on its real size
            copied[table] = n
            if "id" in columns:  # the next id the identity column gives follows the copied ones
                dest._x(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false)"
                    f" FROM {table}"
                )
        dest.recount()
        if offsets["files"]:  # other hosts' files there: this host's to be placed among them
            dest.set_regroup_pending(0)
        # a host whose index was read before the copy reads it afresh
        # (a number taken from the feed's own sequence: the rows written next come after it)
        dest._x("UPDATE file_changes_pruned SET below = nextval(pg_get_serial_sequence('file_changes', 'rev'))")
    return copied


def _highest(store: PostgresStore, query: str) -> int:
    return int(store._one(query)[0] or 0)


def copy_postgres_to_sqlite(source: PostgresStore, dest: Store) -> dict[str, int]:
    """Copy every row of ``source`` into ``dest``, a new, empty SQLite store, ids
    kept, in one transaction on each side: the private copy a dry run works on
    (the SQLite triggers keep its counters and ``owed`` flags as rows arrive).
    Read through a server-side cursor, :data:`BATCH` rows at a time, so a
    large store is never held in memory whole."""
    copied: dict[str, int] = {}
    with dest.atomic(), source._conn.transaction():
        for table in (*TABLES, *SNAPSHOT_ALSO):
            have = set(dest.db.table(table).columns_dict)
            columns = [c for c in _columns(source, table) if c in have]
            names = ", ".join(columns)
            insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in columns)})"
            n = 0
            with source._conn.cursor(name=f"dedupd_copy_{table}") as rows:
                rows.execute(f"SELECT {names} FROM {table}")
                while batch := rows.fetchmany(BATCH):
                    dest.db.conn.executemany(insert, batch)
                    n += len(batch)
            copied[table] = n
    return copied
