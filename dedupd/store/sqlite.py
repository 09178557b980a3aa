"""The SQLite backend of the store: the only module that imports sqlite-utils.

One SQLite file in WAL mode, so readers (``dedupd groups``, ``dedupd status``)
never block the writer.  Every write goes through :meth:`Store.atomic`.
The schema is built by :data:`migrations`; paths are stored as bytes
(``os.fsencode``) so that a file name that is not valid UTF-8 round-trips.

The queries both backends word alike are in :class:`~dedupd.store.base.SqlStore`;
here are the connection, the writer lock, transactions, the schema and
SQLite's own words (``json_each`` for a list of values, ``PRAGMA`` checks).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dedupd.errors import StoreError, StoreLockedError
from dedupd.models import Tier
from dedupd.store.base import SqlStore

if TYPE_CHECKING:
    from dedupd.backend import StoreBackend


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

migrations = Migrations("dedupd")


@migrations()
def m001_files_and_matches(db: sqlite_utils.Database) -> None:
    db.table("files").create(
        {
            "id": int,
            "path": bytes,
            "dev": int,
            "ino": int,
            "size": int,
            "mtime_ns": int,
            "seq": int,
            "sha256": str,
            "pixel_digest": str,
            "phash": int,  # signed 64-bit: SQLite integers are signed
            "dhash": int,
            "colour": bytes,
            "width": int,
            "height": int,
            "format": str,
            "detail": float,
            "error": str,  # NULL when fingerprinted, else the reason it was skipped
            "error_detail": str,
            "indexed_at": float,
        },
        pk="id",
        not_null={"path", "dev", "ino", "size", "mtime_ns", "seq"},
    )
    db.table("files").create_index(["path"], unique=True)
    db.table("files").create_index(["dev", "ino"])
    db.table("files").create_index(["sha256"])
    db.table("files").create_index(["pixel_digest"])
    db.table("matches").create(
        {
            "file_id": int,  # the duplicate
            "original_id": int,  # its original, the root of the group
            "tier": str,
            "phash_distance": int,
            "dhash_distance": int,
            "colour_distance": float,
            "similarity": float,
            "orientation": str,
            "reason": str,
            "tie": int,  # 1: no keep rule decided which is the original
            "matched_at": float,
        },
        pk="file_id",
        foreign_keys=[("file_id", "files", "id"), ("original_id", "files", "id")],
    )
    db.table("matches").create_index(["original_id"])


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
                migrations.apply(db)
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


#: Is the action on the match of file {file} to original {original} owed, as far as
#: the audit says: no row for the pair yet, or its last row failed or was held back
#: by a breaker.  Kept in ``matches.owed`` by the triggers of m014.
_OWED_BY_AUDIT = (
    "COALESCE((SELECT a.outcome = 'failed' OR (a.outcome = 'skipped' AND ("
    "    a.detail LIKE 'circuit breaker%' OR a.detail LIKE 'actions on this root are paused%'))"
    "  FROM files d JOIN files o ON o.id = {original}"
    "  JOIN audit a ON a.sha256 = d.sha256 AND a.original_sha256 = o.sha256 AND a.path = d.path"
    "  WHERE d.id = {file} ORDER BY a.id DESC LIMIT 1), 1)"
)

@migrations()
def m002_audit_intents_ignores(db: sqlite_utils.Database) -> None:
    # Append-only: one row per thing done (or not done) to a file.  Never updated.
    db.table("audit").create(
        {
            "id": int,
            "at": float,
            "action": str,  # log, quarantine, symlink, restore, ignore
            "outcome": str,  # done, skipped, failed, dry_run
            "path": bytes,
            "original": bytes,
            "tier": str,
            "phash_distance": int,
            "dhash_distance": int,
            "colour_distance": float,
            "similarity": float,
            "size": int,
            "sha256": str,
            "original_sha256": str,
            "reason": str,  # why it matched, in words
            "detail": str,  # why it was done or skipped, in words
            "destination": bytes,  # where the file went
            "intent_id": int,
            "restores": int,  # for a restore: the audit id it undid
            "dedup_key": str,  # the same event twice is recorded once
        },
        pk="id",
    )
    db.table("audit").create_index(["dedup_key"], unique=True)
    db.table("audit").create_index(["at"])
    # Mutable: what is being moved right now, so a crash can be resolved on start.
    db.table("intents").create(
        {
            "id": int,
            "created_at": float,
            "action": str,
            "state": str,  # pending, done, abandoned, restored
            "path": bytes,
            "destination": bytes,
            "temp": bytes,  # the copy being written across filesystems, if any
            "link_target": bytes,  # for symlink: what the link points to
            "dev": int,
            "ino": int,
            "size": int,
            "mtime_ns": int,
            "sha256": str,
            "original": bytes,
            "original_sha256": str,
            "audit_id": int,
            "updated_at": float,
        },
        pk="id",
    )
    db.table("intents").create_index(["state"])
    # Pairs a person decided are not to be deduplicated (by content, so renames keep it).
    db.table("ignores").create(
        {"sha_a": str, "sha_b": str, "decided_at": float, "note": str},
        pk=("sha_a", "sha_b"),
    )


@migrations()
def m003_daemon_status(db: sqlite_utils.Database) -> None:
    # One row per store: what the running daemon last said about itself.
    db.table("daemon").create(
        {"id": int, "pid": int, "started_at": float, "heartbeat_at": float, "state": str, "data": str},
        pk="id",
    )


@migrations()
def m004_audit_sha_index(db: sqlite_utils.Database) -> None:
    db.table("audit").create_index(["sha256", "original_sha256"])


@migrations()
def m005_orientation_variants(db: sqlite_utils.Database) -> None:
    # the hashes of the seven other orientations, so that re-matching from the
    # store (after an original is deleted or replaced) still finds turned copies
    db.table("files").add_column("variants", bytes)


@migrations()
def m006_verify_crop_keys(db: sqlite_utils.Database) -> None:
    # pHashes of crop windows and of the content box, the index keys that
    # propose cropped and padded copies to the verifier; NULL for files
    # fingerprinted before (they are found as before, uncropped)
    db.table("files").add_column("crop_keys", bytes)


# --- grouping: seniority and counts in O(1) ------------------------------------


@migrations()
def m008_grouping_seq_index_and_counters(db: sqlite_utils.Database) -> None:
    # next_seq() is MAX(seq): with an index that is one b-tree descent, not a scan
    db.table("files").create_index(["seq"])
    # status counts kept by triggers, so that reading them costs the same at
    # ten files and at ten million (COUNT(*) scans)
    db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    names = ["files", "errors", "groups", "duplicates", *(f"duplicates_{t.value}" for t in Tier)]
    for name in names:
        db.execute("INSERT INTO counters (name, n) VALUES (?, 0)", [name])
    for trigger in _COUNTER_TRIGGERS.split("\nEND;")[:-1]:  # each trigger ends on its own line
        db.execute(trigger + "\nEND;")
    db.execute(
        "UPDATE counters SET n = (SELECT COUNT(*) FROM files WHERE error IS NULL) WHERE name = 'files'"
    )
    db.execute(
        "UPDATE counters SET n = (SELECT COUNT(*) FROM files WHERE error IS NOT NULL) WHERE name = 'errors'"
    )
    db.execute("UPDATE counters SET n = (SELECT COUNT(DISTINCT original_id) FROM matches) WHERE name = 'groups'")
    db.execute("UPDATE counters SET n = (SELECT COUNT(*) FROM matches) WHERE name = 'duplicates'")
    db.execute(
        "UPDATE counters SET n = (SELECT COUNT(*) FROM matches WHERE 'duplicates_' || tier = counters.name)"
        " WHERE name LIKE 'duplicates_%'"
    )


_COUNTER_TRIGGERS = """
CREATE TRIGGER counters_files_insert AFTER INSERT ON files BEGIN
  UPDATE counters SET n = n + 1 WHERE name = CASE WHEN NEW.error IS NULL THEN 'files' ELSE 'errors' END;
END;
CREATE TRIGGER counters_files_delete AFTER DELETE ON files BEGIN
  UPDATE counters SET n = n - 1 WHERE name = CASE WHEN OLD.error IS NULL THEN 'files' ELSE 'errors' END;
END;
CREATE TRIGGER counters_files_update AFTER UPDATE OF error ON files
WHEN (OLD.error IS NULL) != (NEW.error IS NULL) BEGIN
  UPDATE counters SET n = n - 1 WHERE name = CASE WHEN OLD.error IS NULL THEN 'files' ELSE 'errors' END;
  UPDATE counters SET n = n + 1 WHERE name = CASE WHEN NEW.error IS NULL THEN 'files' ELSE 'errors' END;
END;
CREATE TRIGGER counters_matches_insert AFTER INSERT ON matches BEGIN
  UPDATE counters SET n = n + 1 WHERE name IN ('duplicates', 'duplicates_' || NEW.tier);
  UPDATE counters SET n = n + 1 WHERE name = 'groups'
    AND (SELECT COUNT(*) FROM matches WHERE original_id = NEW.original_id) = 1;
END;
CREATE TRIGGER counters_matches_delete AFTER DELETE ON matches BEGIN
  UPDATE counters SET n = n - 1 WHERE name IN ('duplicates', 'duplicates_' || OLD.tier);
  UPDATE counters SET n = n - 1 WHERE name = 'groups'
    AND NOT EXISTS (SELECT 1 FROM matches WHERE original_id = OLD.original_id);
END;
CREATE TRIGGER counters_matches_update AFTER UPDATE OF tier, original_id ON matches BEGIN
  UPDATE counters SET n = n - 1 WHERE name = 'duplicates_' || OLD.tier;
  UPDATE counters SET n = n + 1 WHERE name = 'duplicates_' || NEW.tier;
  UPDATE counters SET n = n - 1 WHERE name = 'groups' AND OLD.original_id != NEW.original_id
    AND NOT EXISTS (SELECT 1 FROM matches WHERE original_id = OLD.original_id);
  UPDATE counters SET n = n + 1 WHERE name = 'groups' AND OLD.original_id != NEW.original_id
    AND (SELECT COUNT(*) FROM matches WHERE original_id = NEW.original_id) = 1;
END;
"""


@migrations()
def m008_grouping_crashes(db: sqlite_utils.Database) -> None:
    # worker deaths per file, so that a file that kills workers is skipped after a restart
    db.table("crashes").create(
        {"path": bytes, "size": int, "mtime_ns": int, "count": int, "at": float}, pk="path"
    )


@migrations()
def m008_grouping_audit_counters(db: sqlite_utils.Database) -> None:
    # `dedupd status` shows audit rows per action and outcome: counted as they are written
    db.execute(
        "INSERT INTO counters (name, n) SELECT 'audit:' || action || '_' || outcome, COUNT(*)"
        " FROM audit GROUP BY 1"
    )
    db.execute(
        "CREATE TRIGGER counters_audit_insert AFTER INSERT ON audit BEGIN"
        " INSERT INTO counters (name, n) VALUES ('audit:' || NEW.action || '_' || NEW.outcome, 1)"
        " ON CONFLICT (name) DO UPDATE SET n = n + 1;"
        " END"
    )


@migrations()
def m009_similar_pairs(db: sqlite_utils.Database) -> None:
    # Pairs that look alike but may be different captures: kept apart from
    # `matches`, so that a similar pair never makes a file a group member (its
    # own copies keep it as their original) and never reaches an action.
    db.execute(
        "CREATE TABLE similar_pairs ("
        " file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,"
        " other_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,"
        " tier TEXT NOT NULL, phash_distance INTEGER, dhash_distance INTEGER,"
        " colour_distance FLOAT, similarity FLOAT, orientation TEXT, reason TEXT,"
        " matched_at FLOAT, PRIMARY KEY (file_id, other_id))"
    )
    db.execute("CREATE INDEX similar_pairs_other ON similar_pairs (other_id)")
    # similar verdicts recorded as group members before this table existed
    db.execute(
        "INSERT OR IGNORE INTO similar_pairs (file_id, other_id, tier, phash_distance,"
        " dhash_distance, colour_distance, similarity, orientation, reason, matched_at)"
        " SELECT file_id, original_id, tier, phash_distance, dhash_distance, colour_distance,"
        " similarity, orientation, reason, matched_at FROM matches WHERE tier = 'similar'"
    )
    db.execute("DELETE FROM matches WHERE tier = 'similar'")


@migrations()
def m010_review_chosen_originals(db: sqlite_utils.Database) -> None:
    # Contents a person chose as their group's original (``dedupd review``):
    # by SHA-256 like ignores, so a rename or a rescan keeps the choice; the
    # keep rules are asked only between files nobody chose
    db.execute("CREATE TABLE chosen_originals (sha256 TEXT PRIMARY KEY, decided_at FLOAT, note TEXT)")


if TYPE_CHECKING:  # mypy checks here that Store is a complete backend

    def _is_a_backend(store: Store) -> StoreBackend:
        return store


@migrations()
def m007_safety_identity_and_steps(db: sqlite_utils.Database) -> None:
    # ctime: a file rewritten in place with its size and mtime put back is
    # another version; work: the private name a move takes its source to (and
    # a restore its copy), so that a crash at any step can be settled; root:
    # the watched root the file was under, which a restore must stay inside
    db.table("files").add_column("ctime_ns", int)
    db.table("intents").add_column("work", bytes)
    db.table("intents").add_column("root", bytes)
    db.table("intents").add_column("ctime_ns", int)
    # the quarantine records are matched to their moves at every start, and a
    # symlink seen arriving is looked up by its path
    db.table("intents").create_index(["destination"])
    db.table("intents").create_index(["path"])


@migrations()
def m010_apply_roots_and_deciders(db: sqlite_utils.Database) -> None:
    # the directories a scan was given: `dedupd apply` acts on files a scan
    # found, after the fact, and must know the roots they were found under
    # (a root is what a move keeps relative paths to, and what a restore must
    # stay inside)
    db.execute("CREATE TABLE scanned_roots (path BLOB PRIMARY KEY, scanned_at FLOAT NOT NULL)")
    # who asked for an action: NULL for the daemon and scans, 'cli' for
    # `dedupd apply`, the browser's user agent for the review page
    db.table("audit").add_column("decided_by", str)


@migrations()
def m011_decisions(db: sqlite_utils.Database) -> None:
    # What a person decided, by file (content and path), replacing `ignores`
    # (by content alone, which ignored every copy of either picture). Old
    # ignores are kept with no paths: they still hold for any file with that
    # content, as they did.
    db.execute(
        "CREATE TABLE decisions (id INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
        " sha_a TEXT NOT NULL, path_a BLOB, sha_b TEXT, path_b BLOB,"
        " decided_at FLOAT NOT NULL, decided_by TEXT, note TEXT)"
    )
    db.execute("CREATE INDEX decisions_a ON decisions (sha_a, sha_b)")
    db.execute("CREATE INDEX decisions_path_a ON decisions (path_a)")
    db.execute("CREATE INDEX decisions_path_b ON decisions (path_b)")
    db.execute(
        "INSERT INTO decisions (kind, sha_a, sha_b, decided_at, note)"
        " SELECT 'not_duplicates', sha_a, sha_b, decided_at, note FROM ignores ORDER BY decided_at"
    )
    db.execute("DROP TABLE ignores")


@migrations()
def m012_intents_by_original(db: sqlite_utils.Database) -> None:
    # when an original is deleted, the symlinks that point at it are found by it
    db.table("intents").create_index(["original"])


@migrations()
def m013_crash_causes(db: sqlite_utils.Database) -> None:
    # an exception while working on a file counts like a worker's death: which one it was
    db.table("crashes").add_column("cause", str)


@migrations()
def m014_matches_owed(db: sqlite_utils.Database) -> None:
    # Which matches still owe their action, kept as they change, so that a start
    # finds them through an index instead of a pass over every match (1.3 s at
    # 50,000).  A match's flag is computed when it is made or re-pointed, when an
    # audit row is written for its pair (the newest row decides), and when its
    # file's path or content changes (the audit names both).
    owed = _OWED_BY_AUDIT.format(file="matches.file_id", original="matches.original_id")
    last_failed = (
        "(NEW.outcome = 'failed' OR (NEW.outcome = 'skipped' AND ("
        "NEW.detail LIKE 'circuit breaker%' OR NEW.detail LIKE 'actions on this root are paused%')))"
    )
    db.execute("ALTER TABLE matches ADD COLUMN owed INTEGER NOT NULL DEFAULT 1")
    db.execute(f"UPDATE matches SET owed = {owed}")
    db.execute("CREATE INDEX matches_owed ON matches (file_id) WHERE owed = 1")
    triggers = f"""
CREATE TRIGGER matches_owed_insert AFTER INSERT ON matches BEGIN
    UPDATE matches SET owed = {owed} WHERE file_id = NEW.file_id;
END;
CREATE TRIGGER matches_owed_update AFTER UPDATE OF file_id, original_id ON matches BEGIN
    UPDATE matches SET owed = {owed} WHERE file_id = NEW.file_id;
END;
CREATE TRIGGER matches_owed_audit AFTER INSERT ON audit
WHEN NEW.sha256 IS NOT NULL AND NEW.original_sha256 IS NOT NULL BEGIN
    UPDATE matches SET owed = {last_failed}
    WHERE file_id IN (SELECT id FROM files WHERE path = NEW.path AND sha256 = NEW.sha256)
    AND original_id IN (SELECT id FROM files WHERE sha256 = NEW.original_sha256);
END;
CREATE TRIGGER matches_owed_files AFTER UPDATE OF path, sha256 ON files BEGIN
    UPDATE matches SET owed = {owed} WHERE file_id = NEW.id OR original_id = NEW.id;
END;
"""
    for trigger in triggers.split("\nEND;")[:-1]:  # each trigger ends on its own line
        db.execute(trigger + "\nEND;")


@migrations()
def m015_matches_owed_audit_never_null(db: sqlite_utils.Database) -> None:
    # m014's audit trigger computed the flag from the new row alone, without the
    # COALESCE of _OWED_BY_AUDIT: a skipped row with no detail gave NULL, and the
    # insert failed on owed NOT NULL.  The same rule as the pass over every match
    # (and as PostgreSQL's p003): an outcome that says nothing leaves the action owed.
    last_failed = (
        "COALESCE(NEW.outcome = 'failed' OR (NEW.outcome = 'skipped' AND ("
        "NEW.detail LIKE 'circuit breaker%' OR NEW.detail LIKE 'actions on this root are paused%')), 1)"
    )
    db.execute("DROP TRIGGER matches_owed_audit")
    db.execute(
        f"""CREATE TRIGGER matches_owed_audit AFTER INSERT ON audit
WHEN NEW.sha256 IS NOT NULL AND NEW.original_sha256 IS NOT NULL BEGIN
    UPDATE matches SET owed = {last_failed}
    WHERE file_id IN (SELECT id FROM files WHERE path = NEW.path AND sha256 = NEW.sha256)
    AND original_id IN (SELECT id FROM files WHERE sha256 = NEW.original_sha256);
END;"""
    )


@migrations()
def m016_hosts(db: sqlite_utils.Database) -> None:
    # A store several hosts share (PostgreSQL, p005) names each file, intent,
    # audit row, crash count, scanned root and daemon row by its host as well as
    # its path: two hosts may both have /srv/photos/a.jpg.  A SQLite store is
    # one host's, and every row of it has host '' (`dedupd migrate` gives them
    # the host's name in the shared store); the columns are here so that the
    # two backends keep one schema and one set of queries.
    for table in ("files", "audit", "intents", "daemon"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN host TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE audit ADD COLUMN original_host TEXT")  # NULL: the original is on `host`
    db.execute("ALTER TABLE intents ADD COLUMN original_host TEXT")  # the same, for a move's record
    db.execute("DROP INDEX idx_files_path")
    db.execute("CREATE UNIQUE INDEX idx_files_host_path ON files (host, path)")
    # every host's files in path order (the review page's keyset, with the id)
    db.execute("CREATE INDEX idx_files_path ON files (path)")
    db.execute("CREATE UNIQUE INDEX idx_daemon_host ON daemon (host)")
    for table in ("crashes", "scanned_roots"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN host TEXT NOT NULL DEFAULT ''")
        db.table(table).transform(pk=("host", "path"))
    # a decision names each file by content, path and host (NULL: any host, as
    # one recorded without a path names any file with that content)
    for side in ("a", "b"):
        db.execute(f"ALTER TABLE decisions ADD COLUMN host_{side} TEXT")
        db.execute(f"UPDATE decisions SET host_{side} = '' WHERE path_{side} IS NOT NULL")
