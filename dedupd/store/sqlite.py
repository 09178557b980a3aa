"""The SQLite backend of the store: the only module that imports sqlite-utils.

One SQLite file in WAL mode, so readers (``dedupd groups``, ``dedupd status``)
never block the writer.  Every write goes through :meth:`Store.atomic`.
The schema is built by :data:`migrations`; paths are stored as bytes
(``os.fsencode``) so that a file name that is not valid UTF-8 round-trips.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from dedupd.errors import StoreError, StoreLockedError

if TYPE_CHECKING:
    from dedupd.backend import StoreBackend
from dedupd.models import (
    Decision,
    DecisionKind,
    Distances,
    FileStat,
    Fingerprint,
    Hashes,
    Match,
    Orientation,
    Record,
    Tier,
)

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


def to_signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def _path_key(path: Path) -> bytes:
    return os.fsencode(path)


class Store:
    """A connection to the store; open with :meth:`open`."""

    def __init__(self, db: sqlite_utils.Database, path: Path) -> None:
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
        return Store.open(self.path, readonly=True)

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

    def lock_writer_or_share(self) -> bool:
        """For short writers (``restore``, ``ignore``, ``apply``): become the writer, or,
        when a daemon or scan already is, write beside it.  Every write is a ``BEGIN
        IMMEDIATE`` transaction, so the two take turns (waiting on the busy
        timeout) and neither fails.  Returns True when this process became the
        writer (and so owns the intents a crash left pending)."""
        try:
            self.lock_writer()
        except StoreLockedError:
            import structlog  # noqa: PLC0415 - only this path logs

            structlog.get_logger().info("store_shared", writer_pid=self.writer_pid(), path=self.path)
            return False
        return True

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

    # --- files -------------------------------------------------------------

    def record_for_path(self, path: Path) -> Record | None:
        rows = self._records("f.path = ?", [_path_key(path)])
        return rows[0] if rows else None

    def record(self, file_id: int) -> Record | None:
        rows = self._records("f.id = ?", [file_id])
        return rows[0] if rows else None

    def records(self, ids: Iterable[int]) -> dict[int, Record]:
        wanted = list(set(ids))
        out: dict[int, Record] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.update((r.id, r) for r in self._records(f"f.id IN ({marks})", chunk))
        return out

    def records_by_inode(self, st: FileStat) -> list[Record]:
        return self._records(
            "f.dev = ? AND f.ino = ? AND f.size = ? AND f.mtime_ns = ?",
            [st.dev, st.ino, st.size, st.mtime_ns],
        )

    def ids_with(self, column: str, value: str) -> list[int]:
        assert column in ("sha256", "pixel_digest")
        return [
            row[0]
            for row in self.db.execute(
                f"SELECT id FROM files WHERE {column} = ? AND error IS NULL", [value]
            ).fetchall()
        ]

    def ids_under(self, root: Path) -> Iterator[tuple[int, Path]]:
        """Every record whose path is ``root`` or below it."""
        key = _path_key(root).rstrip(b"/")
        for file_id, path in self.db.execute(
            "SELECT id, path FROM files WHERE path = ? OR (path >= ? AND path < ?)",
            [key, key + b"/", key + b"0"],  # '0' sorts right after '/'
        ):
            yield file_id, Path(os.fsdecode(path))

    def ids_under_after(self, root: Path, after: Path | None, limit: int) -> list[tuple[int, Path]]:
        """Up to ``limit`` records under ``root`` whose path sorts after ``after``, in
        path order (one range of the path index per step): a sweep over a root in
        bounded steps that may delete as it goes."""
        key = _path_key(root).rstrip(b"/")
        if after is None:
            where, low = "path >= ?", key + b"/"
        else:
            where, low = "path > ?", _path_key(after)
        rows = self.db.execute(
            f"SELECT id, path FROM files WHERE {where} AND path < ? ORDER BY path LIMIT ?",
            [low, key + b"0", limit],  # '0' sorts right after '/'
        ).fetchall()
        return [(file_id, Path(os.fsdecode(path))) for file_id, path in rows]

    def count_under(self, root: Path) -> int:
        key = _path_key(root).rstrip(b"/")
        row = self.db.execute(
            "SELECT COUNT(*) FROM files WHERE path = ? OR (path >= ? AND path < ?)",
            [key, key + b"/", key + b"0"],
        ).fetchone()
        return int(row[0])

    def all_hashes(self) -> Iterator[tuple[int, int, tuple[int, ...]]]:
        """(id, unsigned pHash, crop keys) of every fingerprinted file, for the index."""
        for file_id, phash, crops in self.db.execute(
            "SELECT id, phash, crop_keys FROM files WHERE error IS NULL AND phash IS NOT NULL"
        ):
            yield file_id, to_unsigned(phash), unpack_keys(crops)

    def hash_batches(self, size: int = 65536) -> Iterator[tuple[list[int], list[int], list[bytes | None]]]:
        """Every fingerprinted file's id, pHash (as stored: signed) and packed
        crop keys, column-wise, ``size`` rows at a time: the index's bulk load
        (``HashIndex.load``), with no Python object made per crop key."""
        cursor = self.db.execute(
            "SELECT id, phash, crop_keys FROM files WHERE error IS NULL AND phash IS NOT NULL"
        )
        while rows := cursor.fetchmany(size):
            yield [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    def next_seq(self) -> int:
        """The next seniority number: O(log n) through the index on ``seq``."""
        row = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM files").fetchone()
        return int(row[0])

    def upsert_file(self, path: Path, st: FileStat, fp: Fingerprint, *, seq: int | None = None) -> int:
        """Store a fingerprinted file.  A path already stored keeps its id and its
        seniority (``seq``) unless one is given."""
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
            existing = self.db.execute("SELECT id FROM files WHERE path = ?", [values["path"]]).fetchone()
            if existing:
                if values["seq"] is None:
                    del values["seq"]  # seniority belongs to the path, not to the version
                self.db.table("files").update(existing[0], values)
                return int(existing[0])
            if values["seq"] is None:
                values["seq"] = self.next_seq()
            return int(self.db.table("files").insert(values).last_pk)  # type: ignore[arg-type]

    def move_file(self, file_id: int, new_path: Path) -> None:
        """A rename: the same file (device, inode, size, mtime) at a new path.
        The decisions a person made about the file follow it."""
        old = self.db.execute("SELECT path, sha256 FROM files WHERE id = ?", [file_id]).fetchone()
        self.db.execute("DELETE FROM files WHERE path = ? AND id != ?", [_path_key(new_path), file_id])
        self.db.execute("UPDATE files SET path = ? WHERE id = ?", [_path_key(new_path), file_id])
        if old is not None and old[1] is not None:
            for side in ("a", "b"):
                self.db.execute(
                    f"UPDATE decisions SET path_{side} = ? WHERE path_{side} = ? AND sha_{side} = ?",
                    [_path_key(new_path), old[0], old[1]],
                )

    def delete_file(self, file_id: int) -> list[int]:
        """Forget a file; returns the ids of the duplicates it was the original of."""
        orphans = self.duplicates_of(file_id)
        self.db.execute("DELETE FROM matches WHERE file_id = ? OR original_id = ?", [file_id, file_id])
        self.db.execute("DELETE FROM files WHERE id = ?", [file_id])
        return orphans

    # --- matches -----------------------------------------------------------

    def set_match(self, file_id: int, original_id: int, match: Match, *, tie: bool) -> None:
        self.db.table("matches").upsert(
            {
                "file_id": file_id,
                "original_id": original_id,
                "tier": match.tier.value,
                "phash_distance": match.distances.phash,
                "dhash_distance": match.distances.dhash,
                "colour_distance": round(match.distances.colour, 2),
                "similarity": match.similarity,
                "orientation": match.orientation.value,
                "reason": match.reason,
                "tie": int(tie),
                "matched_at": time.time(),
            },
            pk="file_id",
        )

    def clear_match(self, file_id: int) -> None:
        self.db.execute("DELETE FROM matches WHERE file_id = ?", [file_id])

    # --- similar pairs: for review, never a group and never acted on --------

    def set_similar(self, file_id: int, other_id: int, match: Match) -> None:
        """Record that ``file_id`` looks like ``other_id`` but may be another capture."""
        self.db.execute(
            "INSERT INTO similar_pairs (file_id, other_id, tier, phash_distance, dhash_distance,"
            " colour_distance, similarity, orientation, reason, matched_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (file_id, other_id) DO UPDATE SET tier = excluded.tier,"
            " phash_distance = excluded.phash_distance, dhash_distance = excluded.dhash_distance,"
            " colour_distance = excluded.colour_distance, similarity = excluded.similarity,"
            " orientation = excluded.orientation, reason = excluded.reason,"
            " matched_at = excluded.matched_at",
            [
                file_id,
                other_id,
                match.tier.value,
                match.distances.phash,
                match.distances.dhash,
                round(match.distances.colour, 2),
                match.similarity,
                match.orientation.value,
                match.reason,
                time.time(),
            ],
        )

    def clear_similar(self, file_id: int) -> None:
        """Forget every similar pair ``file_id`` is part of (its content changed)."""
        self.db.execute("DELETE FROM similar_pairs WHERE file_id = ? OR other_id = ?", [file_id, file_id])

    def similar_of(self, file_id: int) -> list[tuple[int, Match]]:
        """The files ``file_id`` was found similar to, with the verdict."""
        return [
            (row[0], _match_from_row(row[1:8]))
            for row in self.db.execute(
                "SELECT other_id, tier, phash_distance, dhash_distance, colour_distance,"
                " similarity, orientation, reason FROM similar_pairs WHERE file_id = ? ORDER BY other_id",
                [file_id],
            )
        ]

    def match_of(self, file_id: int) -> tuple[int, Match, bool] | None:
        row = self.db.execute(
            "SELECT original_id, tier, phash_distance, dhash_distance, colour_distance,"
            " similarity, orientation, reason, tie FROM matches WHERE file_id = ?",
            [file_id],
        ).fetchone()
        if row is None:
            return None
        return row[0], _match_from_row(row[1:8]), bool(row[8])

    def matched_between(self, sha_a: str, sha_b: str, *, path_a: Path, path_b: Path) -> list[int]:
        """The match between these two files (content and path), either way round: [] or [duplicate id]."""
        a, b = _path_key(path_a), _path_key(path_b)
        return [
            row[0]
            for row in self.db.execute(
                "SELECT m.file_id FROM matches m JOIN files d ON d.id = m.file_id"
                " JOIN files o ON o.id = m.original_id"
                " WHERE (d.sha256 = ? AND d.path = ? AND o.sha256 = ? AND o.path = ?)"
                " OR (d.sha256 = ? AND d.path = ? AND o.sha256 = ? AND o.path = ?)"
                " ORDER BY m.file_id",
                [sha_a, a, sha_b, b, sha_b, b, sha_a, a],
            )
        ]

    def duplicates_of(self, original_id: int) -> list[int]:
        return [
            row[0]
            for row in self.db.execute(
                "SELECT file_id FROM matches WHERE original_id = ? ORDER BY file_id", [original_id]
            )
        ]

    def groups(self) -> Iterator[tuple[Path, list[tuple[Path, Match, bool]]]]:
        """Every group, original first, in a stable order (by the original's path).

        Similar pairs (for review only) are listed under the file they look
        like, with their tier; they are not members of its group."""
        rows = self.db.execute(
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
        )
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
        """Duplicates whose action is still owed: none was recorded for the pair (a
        crash came in between, or the match was made by ``ignore``), or the last
        one failed or was held back by a circuit breaker.  Never a pair a person
        restored or ignored, nor a file a person restored.

        ``logged`` (``dedupd apply``): also the duplicates whose last record is
        anything but a completed move (only logged under an earlier config,
        skipped by a check, a dry run): every duplicate a person may now ask
        to act on.  A completed move leaves no match behind (the moved file's
        record is deleted), so these are all the matches not decided against.
        ``original_ids`` / ``file_ids``: only in these groups / only these duplicates."""
        only = ""
        params: list[str] = []
        for column, wanted in (("m.original_id", original_ids), ("m.file_id", file_ids)):
            if wanted is not None:
                values = sorted(set(wanted))
                only += f" AND {column} IN (SELECT value FROM json_each(?))"
                params.append(json.dumps(values))
        # matches.owed is kept by triggers (m014): read through its partial index, the
        # owed matches cost what they are, not what the whole table is
        owed = "1" if logged else "m.owed = 1"
        return [
            row[0]
            for row in self.db.execute(
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
        """:meth:`match_of` for many files at once: file id -> (original id, match, tie)."""
        out: dict[int, tuple[int, Match, bool]] = {}
        for row in self.db.execute(
            "SELECT file_id, original_id, tier, phash_distance, dhash_distance, colour_distance,"
            " similarity, orientation, reason, tie FROM matches"
            " WHERE file_id IN (SELECT value FROM json_each(?))",
            [json.dumps(sorted(set(file_ids)))],
        ):
            out[row[0]] = (row[1], _match_from_row(row[2:9]), bool(row[9]))
        return out

    def errors(self) -> list[tuple[Path, str, str, float]]:
        """Every indexed file that was skipped: (path, reason, detail, when), in path order."""
        return [
            (Path(os.fsdecode(r[0])), r[1], r[2] or "", r[3] or 0.0)
            for r in self.db.execute(
                "SELECT path, error, error_detail, indexed_at FROM files WHERE error IS NOT NULL ORDER BY path"
            )
        ]

    # --- roots a scan was given ------------------------------------------------

    def add_scanned_roots(self, roots: Iterable[Path]) -> None:
        """Remember the directories ``dedupd scan`` indexed: ``dedupd apply`` acts
        inside them (and inside the config's roots), never outside."""
        with self.atomic():
            for root in roots:
                self.db.execute(
                    "INSERT INTO scanned_roots (path, scanned_at) VALUES (?, ?)"
                    " ON CONFLICT (path) DO UPDATE SET scanned_at = excluded.scanned_at",
                    [_path_key(root), time.time()],
                )

    def scanned_roots(self) -> list[Path]:
        """The directories ``dedupd scan`` was given, in path order."""
        return [Path(os.fsdecode(r[0])) for r in self.db.execute("SELECT path FROM scanned_roots ORDER BY path")]

    def is_ignored(self, sha_a: str, sha_b: str, *, path_a: Path, path_b: Path) -> bool:
        """Did a person decide that these two files are not duplicates?

        A file is named by its content *and* its path.  Content alone (what
        was kept before) made a decision about two files one about every
        copy of either picture: restoring one exact copy stopped every later
        copy of that picture from being deduplicated.  Path alone would not
        survive an edit being undone, nor tell a new picture saved under an
        old name.  Together they name the same two files across rescans
        (same path, same bytes), re-uploads of the same files to the same
        place, and renames (:meth:`move_file` carries decisions to the new
        path, the way it carries the file's record), and nothing else: a new
        copy of either picture elsewhere is another file, grouped as usual.
        Decisions recorded before paths were kept (``path`` NULL) still hold
        for any file with that content.
        """
        row = self.db.execute(
            "SELECT 1 FROM decisions i WHERE i.kind = 'not_duplicates' AND ("
            "(i.sha_a = ? AND (i.path_a IS NULL OR i.path_a = ?) AND i.sha_b = ? AND (i.path_b IS NULL OR i.path_b = ?))"
            " OR (i.sha_a = ? AND (i.path_a IS NULL OR i.path_a = ?) AND i.sha_b = ? AND (i.path_b IS NULL OR i.path_b = ?)))"
            " LIMIT 1",
            [sha_a, _path_key(path_a), sha_b, _path_key(path_b), sha_b, _path_key(path_b), sha_a, _path_key(path_a)],
        ).fetchone()
        return row is not None

    def is_kept(self, sha256: str, path: Path) -> bool:
        """Did a person restore this file (its content at this path), so that it is left alone?"""
        row = self.db.execute(
            "SELECT 1 FROM decisions WHERE kind = 'keep' AND sha_a = ? AND path_a = ? LIMIT 1",
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
            # one order for the same pair, so that a listing shows it once
            (sha256, path), (other_sha256, other_path) = sorted(
                [(sha256, path), (other_sha256, other_path)], key=lambda side: (side[0], _path_key(side[1]))
            )
        elif self.is_kept(sha256, path):
            return None
        return int(
            self.db.table("decisions").insert(  # type: ignore[arg-type]
                {
                    "kind": kind.value,
                    "sha_a": sha256,
                    "path_a": _path_key(path),
                    "sha_b": other_sha256,
                    "path_b": None if other_path is None else _path_key(other_path),
                    "decided_at": time.time(),
                    "decided_by": decided_by,
                    "note": note,
                }
            ).last_pk
        )

    def _migrated(self, table: str, column: str | None = None) -> bool:
        """Does the store have this table (and column)?  A read-only connection
        cannot migrate: a store no writer has opened since an upgrade lacks
        the newest ones, and readers make do without them."""
        if table not in self.db.table_names():
            return False
        return column is None or column in self.db.table(table).columns_dict

    def decisions(self, decision_id: int | None = None) -> list[Decision]:
        """Every decision a person made (or the one with this id), oldest first."""
        if not self._migrated("decisions"):
            return []  # before decisions were kept by file; no writer has migrated this store yet
        where, params = ("WHERE id = ?", [decision_id]) if decision_id is not None else ("", [])
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
            for r in self.db.execute(
                "SELECT id, kind, sha_a, path_a, sha_b, path_b, decided_at, decided_by, note"
                f" FROM decisions {where} ORDER BY id",
                params,
            )
        ]

    def remove_decision(self, decision_id: int) -> None:
        self.db.execute("DELETE FROM decisions WHERE id = ?", [decision_id])

    # --- crash counts --------------------------------------------------------

    def add_crash(self, path: Path, st: FileStat, cause: str | None = None) -> int:
        """One more crash on this version of ``path``; returns its count.  ``cause``:
        what went wrong this time (an exception's text), None for a worker's death."""
        key = _path_key(path)
        with self.atomic():
            row = self.db.execute("SELECT size, mtime_ns, count FROM crashes WHERE path = ?", [key]).fetchone()
            count = row[2] + 1 if row is not None and (row[0], row[1]) == (st.size, st.mtime_ns) else 1
            self.db.execute(
                "INSERT OR REPLACE INTO crashes (path, size, mtime_ns, count, at, cause) VALUES (?, ?, ?, ?, ?, ?)",
                [key, st.size, st.mtime_ns, count, time.time(), cause],
            )
        return count

    def crash_count(self, path: Path, st: FileStat) -> int:
        return self.crash_of(path, st)[0]

    def crash_of(self, path: Path, st: FileStat) -> tuple[int, str | None]:
        """Crashes of this version of ``path`` so far, and the cause of the last (None: a worker's death)."""
        row = self.db.execute(
            "SELECT count, cause FROM crashes WHERE path = ? AND size = ? AND mtime_ns = ?",
            [_path_key(path), st.size, st.mtime_ns],
        ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def action_counts(self) -> dict[str, int]:
        """Audit rows by ``action_outcome`` (``quarantine_done``...): kept by a trigger, read in O(1)."""
        return {
            name.removeprefix("audit:"): int(n)
            for name, n in self.db.execute(
                "SELECT name, n FROM counters WHERE name LIKE 'audit:%' AND n > 0 ORDER BY name"
            )
        }

    # --- the scan's removal pass -------------------------------------------------

    def start_seen(self) -> None:
        """Begin recording which files a scan saw (in a temporary table, not in memory)."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS seen (id INTEGER PRIMARY KEY)")
        self.db.execute("DELETE FROM temp.seen")

    def mark_seen(self, file_id: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO temp.seen (id) VALUES (?)", [file_id])

    def unseen_under(self, root: Path, chunk: int = 1000) -> Iterator[tuple[int, Path]]:
        """Records under ``root`` the scan did not see, in path order and in chunks
        (each one range of the path index; the caller may delete as it goes)."""
        key = _path_key(root).rstrip(b"/")
        row = self.db.execute("SELECT id FROM files WHERE path = ? AND id NOT IN (SELECT id FROM temp.seen)", [key]).fetchone()
        if row is not None:  # the root itself, a file
            yield row[0], root
        where, low = "path >= ?", key + b"/"
        while True:
            rows = self.db.execute(
                f"SELECT id, path FROM files WHERE {where} AND path < ?"
                " AND id NOT IN (SELECT id FROM temp.seen) ORDER BY path LIMIT ?",
                [low, key + b"0", chunk],  # '0' sorts right after '/'
            ).fetchall()
            if not rows:
                return
            for file_id, path in rows:
                yield file_id, Path(os.fsdecode(path))
            where, low = "path > ?", rows[-1][1]

    def counts(self) -> dict[str, int]:
        """Files, errors, groups and duplicates (by tier): kept by triggers, read in O(1)."""
        return {
            name: int(n) for name, n in self.db.execute("SELECT name, n FROM counters WHERE name NOT LIKE 'audit:%'")
        }

    # --- audit and intents ------------------------------------------------------
    # The SQL behind dedupd.audit.  Rows come back as tuples in the order of
    # AUDIT_COLUMNS / INTENT_COLUMNS; dedupd.audit turns them into values.
    # Call the writing ones inside atomic().

    def audit_insert(self, row: dict[str, Any]) -> int | None:
        """Append an audit row; None when its ``dedup_key`` is already recorded."""
        key = row.get("dedup_key")
        if key is not None:
            if self.db.execute("SELECT 1 FROM audit WHERE dedup_key = ?", [key]).fetchone():
                return None
        return int(self.db.table("audit").insert(row).last_pk)  # type: ignore[arg-type]

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
        where: list[str] = ["1"]
        params: list[Any] = []
        if sha256 is not None:  # indexed (m004)
            where.append("sha256 = ?")
            params.append(sha256)
        if audit_id is not None:
            where.append("id = ?")
            params.append(audit_id)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if moves:
            where.append("action IN ('quarantine', 'symlink') AND outcome = 'done'")
        if not_log:
            where.append("action != 'log'")
        columns = AUDIT_COLUMNS
        if not self._migrated("audit", "decided_by"):  # a store a reader opened before any writer migrated it
            columns = columns.replace("decided_by", "NULL AS decided_by")
        sql = f"SELECT {columns} FROM audit WHERE {' AND '.join(where)} ORDER BY id"
        if newest is not None:
            sql += f" DESC LIMIT {int(newest)}"
        return [tuple(r) for r in self.db.execute(sql, params).fetchall()]

    def audit_link_intent(self, audit_id: int, intent_id: int) -> None:
        """Repair only: point an audit row at the intent re-created for its move (the store lost the one it named)."""
        self.db.execute("UPDATE audit SET intent_id = ? WHERE id = ?", [intent_id, audit_id])

    def intent_insert(self, values: dict[str, Any]) -> int:
        return int(self.db.table("intents").insert(values).last_pk)  # type: ignore[arg-type]

    def intent_update(self, intent_id: int, values: dict[str, Any]) -> None:
        """Set some columns of an intent (``audit_id`` is only ever set, never cleared)."""
        if values.get("audit_id", 0) is None:
            values = {k: v for k, v in values.items() if k != "audit_id"}
        sets = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE intents SET {sets} WHERE id = ?", [*values.values(), intent_id])

    def intent_rows(
        self,
        *,
        state: str | None = None,
        intent_id: int | None = None,
        destination: Path | None = None,
        path: Path | None = None,
        original: Path | None = None,
    ) -> list[tuple[Any, ...]]:
        where: list[str] = ["1"]
        params: list[Any] = []
        if original is not None:
            where.append("original = ?")
            params.append(_path_key(original))
        if path is not None:
            where.append("path = ?")
            params.append(_path_key(path))
        if destination is not None:
            where.append("destination = ?")
            params.append(_path_key(destination))
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if intent_id is not None:
            where.append("id = ?")
            params.append(intent_id)
        sql = f"SELECT {INTENT_COLUMNS} FROM intents WHERE {' AND '.join(where)} ORDER BY id"
        return [tuple(r) for r in self.db.execute(sql, params).fetchall()]

    def intent_of_audit(self, audit_id: int) -> int | None:
        row = self.db.execute("SELECT intent_id FROM audit WHERE id = ?", [audit_id]).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def data_version(self) -> int:
        """A number that changes whenever another connection commits (SQLite's
        ``PRAGMA data_version``): a cheap "has anyone else written?"."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def ignores_after(self, mark: int) -> tuple[int, list[tuple[str, str]]]:
        """Pairs marked "not duplicates" after decision ``mark`` (0: all), and the mark to pass next time."""
        rows = self.db.execute(
            "SELECT id, sha_a, sha_b FROM decisions WHERE id > ? AND kind = 'not_duplicates' ORDER BY id", [mark]
        ).fetchall()
        last = self.db.execute("SELECT COALESCE(MAX(id), ?) FROM decisions", [mark]).fetchone()[0]
        return max(int(last), mark), [(r[1], r[2]) for r in rows if r[1] and r[2]]

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

    # --- review: pages for ``dedupd review`` ---------------------------------
    # Keyset paging on indexes: a page costs the same on the first screen and
    # the last, at ten groups or ten thousand.

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
        """Originals of groups (id, stored path) in path order: the page after the
        path ``after`` or, going back, the one before ``before``.  A walk of the
        path index from that point, each original checked for a member that
        passes the filter (on ``matches.original_id``'s index)."""
        members, params = _member_filter(tiers, folder, min_similarity, max_similarity)
        where, order = "1", "ASC"
        if before is not None:
            where, order = "o.path < ?", "DESC"
            params = [before, *params]
        elif after is not None:
            where = "o.path > ?"
            params = [after, *params]
        rows = self.db.execute(
            f"SELECT o.id, o.path FROM files o WHERE {where} AND EXISTS (SELECT 1 FROM matches m"
            f" JOIN files d ON d.id = m.file_id WHERE m.original_id = o.id{members})"
            f" ORDER BY o.path {order} LIMIT ?",
            [*params, limit],
        ).fetchall()
        out = [(int(r[0]), bytes(r[1])) for r in rows]
        return out[::-1] if before is not None else out

    def review_members(self, original_ids: list[int]) -> dict[int, list[tuple[int, Match, bool]]]:
        """The duplicates of each original: (file id, match, tie), most similar first."""
        out: dict[int, list[tuple[int, Match, bool]]] = {i: [] for i in original_ids}
        if not original_ids:
            return out
        marks = ",".join("?" * len(original_ids))
        for row in self.db.execute(
            "SELECT original_id, file_id, tier, phash_distance, dhash_distance, colour_distance,"
            f" similarity, orientation, reason, tie FROM matches WHERE original_id IN ({marks})"
            " ORDER BY original_id, similarity DESC, file_id",
            original_ids,
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
        """Every (duplicate id, original id) that passes the filter: what a bulk decision covers."""
        members, params = _member_filter(tiers, folder, min_similarity, max_similarity)
        return [
            (int(r[0]), int(r[1]))
            for r in self.db.execute(
                "SELECT m.file_id, m.original_id FROM matches m JOIN files d ON d.id = m.file_id"
                f" WHERE 1{members} ORDER BY m.original_id, m.file_id",
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
        """How many duplicates pass the filter (one pass over the matches)."""
        members, params = _member_filter(tiers, folder, min_similarity, max_similarity)
        row = self.db.execute(
            f"SELECT COUNT(*) FROM matches m JOIN files d ON d.id = m.file_id WHERE 1{members}", params
        ).fetchone()
        return int(row[0])

    def indexed_at(self, ids: Iterable[int]) -> dict[int, float]:
        """When each file was (last) fingerprinted."""
        wanted = list(set(ids))
        out: dict[int, float] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(
                (int(i), float(at or 0.0))
                for i, at in self.db.execute(f"SELECT id, indexed_at FROM files WHERE id IN ({marks})", chunk)
            )
        return out

    def review_similar_page(self, *, after: tuple[int, int] | None = None, limit: int = 50) -> list[tuple[int, int, Match]]:
        """Similar pairs (file id, the file it looks like, verdict), in key order after ``after``."""
        where, params = ("(file_id, other_id) > (?, ?)", list(after)) if after is not None else ("1", [])
        return [
            (int(r[0]), int(r[1]), _match_from_row(r[2:9]))
            for r in self.db.execute(
                "SELECT file_id, other_id, tier, phash_distance, dhash_distance, colour_distance,"
                f" similarity, orientation, reason FROM similar_pairs WHERE {where}"
                " ORDER BY file_id, other_id LIMIT ?",
                [*params, limit],
            )
        ]

    def review_moves_page(self, *, before: int | None = None, limit: int = 50) -> list[int]:
        """Audit ids of moves that are done and not restored, newest first, below ``before``."""
        return [
            int(r[0])
            for r in self.db.execute(
                "SELECT a.id FROM audit a JOIN intents i ON i.id = a.intent_id"
                " WHERE a.action IN ('quarantine', 'symlink') AND a.outcome = 'done' AND i.state = 'done'"
                " AND a.id < ? ORDER BY a.id DESC LIMIT ?",
                [before if before is not None else 1 << 62, limit],
            )
        ]

    # --- originals a person chose -------------------------------------------

    def add_chosen(self, sha256: str, note: str) -> bool:
        """Remember that a person chose the file with this content as its group's
        original; False if it already was."""
        if self.is_chosen(sha256):
            return False
        self.db.execute(
            "INSERT INTO chosen_originals (sha256, decided_at, note) VALUES (?, ?, ?)", [sha256, time.time(), note]
        )
        return True

    def remove_chosen(self, sha256: str) -> None:
        self.db.execute("DELETE FROM chosen_originals WHERE sha256 = ?", [sha256])

    def is_chosen(self, sha256: str) -> bool:
        """Did a person choose this content as an original?"""
        return self.db.execute("SELECT 1 FROM chosen_originals WHERE sha256 = ?", [sha256]).fetchone() is not None

    # --- daemon status -----------------------------------------------------

    def write_daemon_status(self, *, pid: int, started_at: float, state: str, data: dict[str, Any]) -> None:
        write_daemon_status(self, pid=pid, started_at=started_at, state=state, data=data)

    def read_daemon_status(self) -> dict[str, Any] | None:
        return read_daemon_status(self)

    # --- helpers -----------------------------------------------------------

    def _records(self, where: str, params: list[Any]) -> list[Record]:
        sql = (
            "SELECT f.id, f.path, f.dev, f.ino, f.size, f.mtime_ns, f.seq, f.sha256,"
            " f.pixel_digest, f.phash, f.dhash, f.colour, f.width, f.height, f.format,"
            " f.detail, f.error, m.original_id, f.variants, f.crop_keys, f.ctime_ns"
            f" FROM files f LEFT JOIN matches m ON m.file_id = f.id WHERE {where}"
        )
        return [_record_from_row(row) for row in self.db.execute(sql, params).fetchall()]


#: a not-duplicates decision covering the pair of file rows aliased {a} and {b}
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

_PAIR_DECIDED = (
    "SELECT 1 FROM decisions i WHERE i.kind = 'not_duplicates' AND ("
    "(i.sha_a = {a}.sha256 AND (i.path_a IS NULL OR i.path_a = {a}.path)"
    " AND i.sha_b = {b}.sha256 AND (i.path_b IS NULL OR i.path_b = {b}.path))"
    " OR (i.sha_a = {b}.sha256 AND (i.path_a IS NULL OR i.path_a = {b}.path)"
    " AND i.sha_b = {a}.sha256 AND (i.path_b IS NULL OR i.path_b = {a}.path)))"
)

AUDIT_COLUMNS = (
    "id, at, action, outcome, path, original, tier, phash_distance, dhash_distance,"
    " colour_distance, similarity, size, sha256, original_sha256, reason, detail,"
    " destination, intent_id, restores, decided_by"
)
INTENT_COLUMNS = (
    "id, action, state, path, destination, temp, link_target, dev, ino, size, mtime_ns,"
    " sha256, original, original_sha256, audit_id, work, root, ctime_ns"
)

_FINGERPRINT_COLUMNS = (
    "sha256", "pixel_digest", "phash", "dhash", "colour", "width", "height", "format", "detail", "variants",
    "crop_keys",
)  # fmt: skip


def _member_filter(
    tiers: tuple[str, ...], folder: Path | None, min_similarity: float | None, max_similarity: float | None
) -> tuple[str, list[Any]]:
    """SQL conditions on a group member (``m`` its match, ``d`` its file) for review's filters."""
    sql = ""
    params: list[Any] = []
    if tiers:
        sql += f" AND m.tier IN ({','.join('?' * len(tiers))})"
        params += list(tiers)
    if folder is not None:
        key = _path_key(folder).rstrip(b"/")
        sql += " AND d.path >= ? AND d.path < ?"
        params += [key + b"/", key + b"0"]  # '0' sorts right after '/'
    if min_similarity is not None:
        sql += " AND m.similarity >= ?"
        params.append(min_similarity)
    if max_similarity is not None:
        sql += " AND m.similarity <= ?"
        params.append(max_similarity)
    return sql, params


def _file_row(path: Path, st: FileStat, seq: int | None) -> dict[str, Any]:
    """The columns every file row has; fingerprint and error columns start empty."""
    return {
        "path": _path_key(path),
        "dev": st.dev,
        "ino": st.ino,
        "size": st.size,
        "mtime_ns": st.mtime_ns,
        "ctime_ns": st.ctime_ns,
        "seq": seq,
        **dict.fromkeys(_FINGERPRINT_COLUMNS),
        "error": None,
        "error_detail": None,
        "indexed_at": time.time(),
    }


def _record_from_row(row: tuple[Any, ...]) -> Record:
    (fid, path, dev, ino, size, mtime_ns, seq, sha, pix, ph, dh, col, w, h, fmt, det, err, orig, var, crops, ctime) = row
    fp = None
    if err is None and sha is not None:
        fp = Fingerprint(
            sha256=sha,
            pixel_digest=pix,
            hashes=Hashes(phash=to_unsigned(ph), dhash=to_unsigned(dh), colour=bytes(col)),
            width=w,
            height=h,
            format=fmt,
            detail=det,
            variants=unpack_variants(var),
            crop_keys=unpack_keys(crops),
        )
    return Record(
        id=fid,
        path=Path(os.fsdecode(path)),
        stat=FileStat(dev=dev, ino=ino, size=size, mtime_ns=mtime_ns, ctime_ns=ctime or 0),
        fingerprint=fp,
        seq=seq,
        error=err,
        original_id=orig,
    )


def _match_from_row(row: tuple[Any, ...]) -> Match:
    tier, pd, dd, cd, sim, orient, reason = row
    return Match(
        tier=Tier(tier),
        distances=Distances(phash=pd, dhash=dd, colour=cd),
        similarity=sim,
        orientation=Orientation(orient),
        reason=reason,
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


def write_daemon_status(store: Store, *, pid: int, started_at: float, state: str, data: dict[str, Any]) -> None:
    with store.atomic():
        store.db.table("daemon").upsert(
            {
                "id": 1,
                "pid": pid,
                "started_at": started_at,
                "heartbeat_at": time.time(),
                "state": state,
                "data": json.dumps(data, default=str),
            },
            pk="id",
        )


def read_daemon_status(store: Store) -> dict[str, Any] | None:
    if "daemon" not in store.db.table_names():
        return None
    row = store.db.execute("SELECT pid, started_at, heartbeat_at, state, data FROM daemon WHERE id = 1").fetchone()
    if row is None:
        return None
    return {"pid": row[0], "started_at": row[1], "heartbeat_at": row[2], "state": row[3], **json.loads(row[4])}


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


def pack_keys(keys: tuple[int, ...]) -> bytes | None:
    return b"".join(k.to_bytes(8, "big") for k in keys) or None


def unpack_keys(raw: bytes | None) -> tuple[int, ...]:
    if not raw:
        return ()
    return tuple(int.from_bytes(raw[i : i + 8], "big") for i in range(0, len(raw), 8))


_VARIANT_ORDER = [o for o in Orientation if o is not Orientation.IDENTITY]


def pack_variants(variants: tuple[tuple[Orientation, Hashes], ...]) -> bytes | None:
    if not variants:
        return None
    out = bytearray()
    by = dict(variants)
    for o in _VARIANT_ORDER:
        h = by[o]
        out += h.phash.to_bytes(8, "big") + h.dhash.to_bytes(8, "big") + h.colour
    return bytes(out)


def unpack_variants(raw: bytes | None) -> tuple[tuple[Orientation, Hashes], ...]:
    if not raw:
        return ()
    size = len(raw) // len(_VARIANT_ORDER)
    out = []
    for i, o in enumerate(_VARIANT_ORDER):
        chunk = raw[i * size : (i + 1) * size]
        out.append(
            (o, Hashes(phash=int.from_bytes(chunk[:8], "big"), dhash=int.from_bytes(chunk[8:16], "big"), colour=bytes(chunk[16:])))
        )
    return tuple(out)


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
