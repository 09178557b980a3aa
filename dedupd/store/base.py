"""What both backends of the store share: every query they word alike, written once.

:class:`SqlStore` holds the store's methods whose SQL SQLite and PostgreSQL
both accept as it is (``ON CONFLICT ... DO UPDATE``, ``RETURNING``, ``TRUE``,
``NULLS LAST``), and the logic around them (a pair of files in one order, a
decision recorded once, seniority kept for a path, the audit's filters).  The
queries use ``?`` placeholders and have no ``?`` or ``%`` of their own except
inside string literals; a backend supplies:

- :meth:`SqlStore._sql`: run one statement, returning its cursor (PostgreSQL
  turns ``?`` into ``%s`` there);
- :meth:`SqlStore._any`: "this column is one of these values" in its dialect;
- :meth:`SqlStore._insert`: insert one row and return its id;
- :meth:`SqlStore._migrated`: does the schema have this table (and column);
- :meth:`SqlStore.atomic`, and the connection, locking and schema themselves;
- ``_SEEN`` / ``_UNSEEN``: the scan's temporary table of seen ids, and how a
  file not in it is asked for.

Also here: the encodings both store rows in (paths as bytes, 64-bit hashes
signed, packed crop keys and orientation variants) and the rows' conversion
back into :class:`~dedupd.models.Record` and :class:`~dedupd.models.Match`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Protocol

from dedupd import build
from dedupd.errors import StoreLockedError
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


class Cursor(Protocol):
    """What the shared queries need of a backend's cursor (sqlite3's and psycopg's both fit)."""

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class SqlStore(ABC):
    """The store's methods that read and write alike on every backend."""

    path: Path  # where the store is (PostgreSQL: its URL, for messages only)
    #: the scan's temporary table of the ids it saw, as this backend names it
    _SEEN: ClassVar[str]
    #: the condition "the row of ``files`` is not in ``_SEEN``", as this backend plans it best
    _UNSEEN: ClassVar[str]

    def __init__(self, host: str = "") -> None:
        self._present: set[tuple[str, str | None]] = set()
        #: the host this connection works for: its files, intents, crash counts,
        #: scanned roots and daemon row are the rows with this ``host`` (a SQLite
        #: store is one host's: '')
        self.host = host

    # --- what a backend supplies ------------------------------------------------

    @abstractmethod
    def _sql(self, query: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement written with ``?`` placeholders; its cursor."""

    @abstractmethod
    def _any(self, column: str, values: list[Any]) -> tuple[str, list[Any]]:
        """A condition "``column`` is one of ``values``" and its parameters, for any number of values."""

    @abstractmethod
    def _migrated(self, table: str, column: str | None = None) -> bool:
        """Does the store have this table (and column)?"""

    @abstractmethod
    def atomic(self) -> AbstractContextManager[None]:
        """A transaction that takes the write lock at its start; nested ones are savepoints."""

    @abstractmethod
    def lock_writer(self) -> None:
        """Become this store's only writer process, or raise StoreLockedError."""

    @abstractmethod
    def writer_pid(self) -> int | None:
        """The pid of the process holding the writer lock, or None when nobody does."""

    def _where(self) -> Path | str:
        """The store as a log line names it."""
        return self.path

    def lock_writer_or_share(self) -> bool:
        """For short writers (``restore``, ``ignore``, ``apply``): become the writer, or,
        when a daemon or scan already is, write beside it.  Every write is a
        transaction that takes the write lock first (SQLite: ``BEGIN IMMEDIATE``),
        so the two take turns (waiting on the lock) and neither fails.  Returns
        True when this process became the writer (and so owns the intents a
        crash left pending)."""
        try:
            self.lock_writer()
        except StoreLockedError:
            import structlog  # noqa: PLC0415 - only this path logs

            structlog.get_logger().info("store_shared", writer_pid=self.writer_pid(), path=self._where())
            return False
        return True

    def _decided_on(self, side: str) -> str:
        """The condition "side ``a``/``b`` of a decision is a file of the host
        given as the next parameter" (any host when it names none: recorded
        before hosts, or in a store no writer has migrated since)."""
        if not self._has("decisions", "host_a"):
            return "? IS NOT NULL"  # takes the parameter, holds for any host
        return f"(host_{side} IS NULL OR host_{side} = ?)"

    def _hosts_decided(self) -> bool:
        """Do decisions and files name hosts here (not a store from before hosts, read unmigrated)?"""
        return self._has("decisions", "host_a") and self._has("files", "host")

    def _same_host(self, decided: str, file_host: str) -> str:
        """`` AND`` a decision's host column names the host of a file row (or any host)."""
        return f" AND ({decided} IS NULL OR {decided} = {file_host})" if self._hosts_decided() else ""

    def _pair_decided(self, a: str, b: str) -> str:
        """A not-duplicates decision covering the pair of file rows aliased ``a`` and ``b``."""
        side = (
            "(i.sha_a = {x}.sha256 AND (i.path_a IS NULL OR (i.path_a = {x}.path{hx}))"
            " AND i.sha_b = {y}.sha256 AND (i.path_b IS NULL OR (i.path_b = {y}.path{hy})))"
        )

        def one(x: str, y: str) -> str:
            return side.format(x=x, y=y, hx=self._same_host("i.host_a", f"{x}.host"),
                               hy=self._same_host("i.host_b", f"{y}.host"))  # fmt: skip

        return f"SELECT 1 FROM decisions i WHERE i.kind = 'not_duplicates' AND ({one(a, b)} OR {one(b, a)})"

    def _hostcol(self, alias: str = "") -> str:
        """The ``files.host`` column (``alias.host``), or ``''`` in a store no
        writer has opened since hosts were added (a reader cannot migrate): its
        files are all one host's, as this connection's '' says."""
        return f"{alias}host" if self._has("files", "host") else "''"

    def _has(self, table: str, column: str | None = None) -> bool:
        """:meth:`_migrated`, asked once per connection while the answer is yes (a
        read-only connection cannot migrate: a store no writer has opened since an
        upgrade lacks the newest tables, and readers make do without them)."""
        key = (table, column)
        if key in self._present:
            return True
        if not self._migrated(table, column):
            return False
        self._present.add(key)
        return True

    @abstractmethod
    def _insert(self, table: str, values: dict[str, Any]) -> int:
        """Insert one row; its id."""

    def _update(self, table: str, key: str, key_value: Any, values: dict[str, Any]) -> None:
        sets = ", ".join(f"{column} = ?" for column in values)
        self._sql(f"UPDATE {table} SET {sets} WHERE {key} = ?", [*values.values(), key_value])

    # --- files -------------------------------------------------------------

    def record_for_path(self, path: Path) -> Record | None:
        rows = self._records(f"{self._hostcol('f.')} = ? AND f.path = ?", [self.host, _path_key(path)])
        return rows[0] if rows else None

    def record(self, file_id: int) -> Record | None:
        rows = self._records("f.id = ?", [file_id])
        return rows[0] if rows else None

    def records(self, ids: Iterable[int]) -> dict[int, Record]:
        where, params = self._any("f.id", sorted(set(ids)))
        return {r.id: r for r in self._records(where, params)}

    def records_by_inode(self, st: FileStat) -> list[Record]:
        return self._records(
            f"f.dev = ? AND f.ino = ? AND f.size = ? AND f.mtime_ns = ? AND {self._hostcol('f.')} = ?",
            [st.dev, st.ino, st.size, st.mtime_ns, self.host],
        )

    def ids_with(self, column: str, value: str) -> list[int]:
        assert column in ("sha256", "pixel_digest")
        return [row[0] for row in self._sql(f"SELECT id FROM files WHERE {column} = ? AND error IS NULL", [value])]

    def ids_under(self, root: Path) -> Iterator[tuple[int, Path]]:
        """Every record whose path is ``root`` or below it."""
        key = _path_key(root).rstrip(b"/")
        for file_id, path in self._sql(
            f"SELECT id, path FROM files WHERE {self._hostcol()} = ? AND (path = ? OR (path >= ? AND path < ?))",
            [self.host, key, key + b"/", key + b"0"],  # '0' sorts right after '/'
        ):
            yield file_id, Path(os.fsdecode(path))

    def ids_under_after(self, root: Path, after: Path | None, limit: int) -> list[tuple[int, Path]]:
        """Up to ``limit`` records under ``root`` whose path sorts after ``after``, in
        path order (one range of the path index per step): a sweep over a root in
        bounded steps that may delete as it goes."""
        key = _path_key(root).rstrip(b"/")
        where, low = ("path >= ?", key + b"/") if after is None else ("path > ?", _path_key(after))
        rows = self._sql(
            f"SELECT id, path FROM files WHERE {self._hostcol()} = ? AND {where} AND path < ? ORDER BY path LIMIT ?",
            [self.host, low, key + b"0", limit],  # '0' sorts right after '/'
        ).fetchall()
        return [(file_id, Path(os.fsdecode(path))) for file_id, path in rows]

    def count_under(self, root: Path) -> int:
        key = _path_key(root).rstrip(b"/")
        row = self._sql(
            f"SELECT COUNT(*) FROM files WHERE {self._hostcol()} = ? AND (path = ? OR (path >= ? AND path < ?))",
            [self.host, key, key + b"/", key + b"0"],
        ).fetchone()
        return int(row[0])

    def all_hashes(self) -> Iterator[tuple[int, int, tuple[int, ...]]]:
        """(id, unsigned pHash, crop keys) of every fingerprinted file, for the index."""
        for file_id, phash, crops in self._sql(
            "SELECT id, phash, crop_keys FROM files WHERE error IS NULL AND phash IS NOT NULL"
        ):
            yield file_id, to_unsigned(phash), unpack_keys(crops)

    def hash_batches(self, size: int = 65536) -> Iterator[tuple[list[int], list[int], list[bytes | None]]]:
        """Every fingerprinted file's id, pHash (as stored: signed) and packed
        crop keys, column-wise, ``size`` rows at a time: the index's bulk load
        (``HashIndex.load``), with no Python object made per crop key."""
        cursor = self._sql("SELECT id, phash, crop_keys FROM files WHERE error IS NULL AND phash IS NOT NULL")
        while rows := cursor.fetchmany(size):
            yield [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    def next_seq(self) -> int:
        """The next seniority number: one descent of the index on ``seq``."""
        return int(self._sql("SELECT COALESCE(MAX(seq), 0) + 1 FROM files").fetchone()[0])

    def upsert_file(self, path: Path, st: FileStat, fp: Fingerprint, *, seq: int | None = None) -> int:
        """Store a fingerprinted file.  A path already stored keeps its id and its
        seniority (``seq``) unless one is given."""
        return self._upsert(_file_row(self.host, path, st, seq) | _fingerprint_columns(fp))

    def upsert_error(self, path: Path, st: FileStat, reason: str, detail: str, *, seq: int | None = None) -> int:
        """Store a file that could not be read, with the build that judged it."""
        return self._upsert(
            _file_row(self.host, path, st, seq) | {"error": reason, "error_detail": detail, "build": build.build_id()}
        )

    def error_build(self, file_id: int) -> str | None:
        """The build that recorded ``file_id`` as unreadable (None: before builds were recorded)."""
        if not self._has("files", "build"):
            return None
        row = self._sql("SELECT build FROM files WHERE id = ?", [file_id]).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def _upsert(self, values: dict[str, Any]) -> int:
        """Insert the file row, or update the one stored at its path; its id.  One
        statement (one round trip to a server), where a look-up, ``next_seq`` and
        an insert or update were three."""
        keep_seq = values["seq"] is None  # seniority belongs to the path, not to the version
        marks, params, sets = [], [], []
        for column, value in values.items():
            if column == "seq" and keep_seq:
                marks.append("(SELECT COALESCE(MAX(seq), 0) + 1 FROM files)")  # a new path's: next_seq()
                continue
            marks.append("?")
            params.append(value)
            sets.append(f"{column} = excluded.{column}")
        query = (
            f"INSERT INTO files ({', '.join(values)}) VALUES ({', '.join(marks)})"
            f" ON CONFLICT (host, path) DO UPDATE SET {', '.join(sets)} RETURNING id"
        )
        with self.atomic():
            return int(self._sql(query, params).fetchall()[0][0])  # all: SQLite ends the statement

    def move_file(self, file_id: int, new_path: Path) -> None:
        """A rename: the same file (device, inode, size, mtime) at a new path.
        The decisions a person made about the file follow it."""
        old = self._sql("SELECT path, sha256 FROM files WHERE id = ?", [file_id]).fetchone()
        self._sql("DELETE FROM files WHERE host = ? AND path = ? AND id != ?", [self.host, _path_key(new_path), file_id])
        self._sql("UPDATE files SET path = ? WHERE id = ?", [_path_key(new_path), file_id])
        if old is not None and old[1] is not None:
            for side in ("a", "b"):
                self._sql(
                    f"UPDATE decisions SET path_{side} = ? WHERE path_{side} = ? AND sha_{side} = ?"
                    f" AND {self._decided_on(side)}",
                    [_path_key(new_path), old[0], old[1], self.host],
                )

    def delete_file(self, file_id: int) -> list[int]:
        """Forget a file; returns the ids of the duplicates it was the original of."""
        orphans = self.duplicates_of(file_id)
        self._sql("DELETE FROM matches WHERE file_id = ? OR original_id = ?", [file_id, file_id])
        self._sql("DELETE FROM files WHERE id = ?", [file_id])
        return orphans

    # --- what other hosts wrote (a shared store; one host's has nothing to tell) ---

    def feed_mark(self) -> int:
        """Where the feed of other hosts' writes is now (see the PostgreSQL store)."""
        return 0

    def changes_after(self, mark: int) -> tuple[int, list[tuple[int, str, str]]] | None:
        """What other hosts wrote after ``mark``: nothing, in a store of one host."""
        return mark, []

    def prune_changes(self) -> int:
        """Drop old rows of the feed: it has none in a store of one host."""
        return 0

    def errors(self) -> list[tuple[Path, str, str, float]]:
        """Every file of this host that was skipped: (path, reason, detail, when), in path order."""
        return [
            (Path(os.fsdecode(r[0])), r[1], r[2] or "", r[3] or 0.0)
            for r in self._sql(
                f"SELECT path, error, error_detail, indexed_at FROM files WHERE error IS NOT NULL AND {self._hostcol()} = ?"
                " ORDER BY path",
                [self.host],
            )
        ]

    # --- matches -----------------------------------------------------------

    def set_match(self, file_id: int, original_id: int, match: Match, *, tie: bool) -> None:
        self._sql(
            "INSERT INTO matches (file_id, original_id, tier, phash_distance, dhash_distance,"
            " colour_distance, similarity, orientation, reason, tie, matched_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (file_id) DO UPDATE SET original_id = excluded.original_id, tier = excluded.tier,"
            " phash_distance = excluded.phash_distance, dhash_distance = excluded.dhash_distance,"
            " colour_distance = excluded.colour_distance, similarity = excluded.similarity,"
            " orientation = excluded.orientation, reason = excluded.reason, tie = excluded.tie,"
            " matched_at = excluded.matched_at",
            [file_id, original_id, *_match_values(match), int(tie), time.time()],
        )

    def clear_match(self, file_id: int) -> None:
        self._sql("DELETE FROM matches WHERE file_id = ?", [file_id])

    def match_of(self, file_id: int) -> tuple[int, Match, bool] | None:
        row = self._sql(
            "SELECT original_id, tier, phash_distance, dhash_distance, colour_distance,"
            " similarity, orientation, reason, tie FROM matches WHERE file_id = ?",
            [file_id],
        ).fetchone()
        if row is None:
            return None
        return row[0], _match_from_row(row[1:8]), bool(row[8])

    def matches_of(self, file_ids: Iterable[int]) -> dict[int, tuple[int, Match, bool]]:
        """:meth:`match_of` for many files at once: file id -> (original id, match, tie)."""
        where, params = self._any("file_id", sorted(set(file_ids)))
        return {
            row[0]: (row[1], _match_from_row(row[2:9]), bool(row[9]))
            for row in self._sql(
                "SELECT file_id, original_id, tier, phash_distance, dhash_distance, colour_distance,"
                f" similarity, orientation, reason, tie FROM matches WHERE {where}",
                params,
            )
        }

    def matched_between(self, sha_a: str, sha_b: str, *, path_a: Path, path_b: Path) -> list[int]:
        """The match between these two files of this host (content and path), either way round: [] or [duplicate id]."""
        a, b = _path_key(path_a), _path_key(path_b)
        return [
            row[0]
            for row in self._sql(
                "SELECT m.file_id FROM matches m JOIN files d ON d.id = m.file_id"
                " JOIN files o ON o.id = m.original_id"
                " WHERE ((d.sha256 = ? AND d.path = ? AND o.sha256 = ? AND o.path = ?)"
                " OR (d.sha256 = ? AND d.path = ? AND o.sha256 = ? AND o.path = ?))"
                f" AND {self._hostcol('d.')} = ? AND {self._hostcol('o.')} = ?"
                " ORDER BY m.file_id",
                [sha_a, a, sha_b, b, sha_b, b, sha_a, a, self.host, self.host],
            )
        ]

    def duplicates_of(self, original_id: int) -> list[int]:
        return [
            row[0] for row in self._sql("SELECT file_id FROM matches WHERE original_id = ? ORDER BY file_id", [original_id])
        ]

    def groups(self) -> Iterator[tuple[Path, list[tuple[Path, Match, bool]]]]:
        """Every group, original first, in a stable order (by the original's path).

        Similar pairs (for review only) are listed under the file they look
        like, with their tier; they are not members of its group."""
        rows = self._sql(
            "SELECT o.path, d.path, m.tier, m.phash_distance, m.dhash_distance,"
            f" m.colour_distance, m.similarity, m.orientation, m.reason, m.tie, {self._hostcol('o.')}, {self._hostcol('d.')}"
            " FROM matches m JOIN files o ON o.id = m.original_id"
            " JOIN files d ON d.id = m.file_id"
            " UNION ALL"
            " SELECT o.path, d.path, s.tier, s.phash_distance, s.dhash_distance,"
            f" s.colour_distance, s.similarity, s.orientation, s.reason, 0, {self._hostcol('o.')}, {self._hostcol('d.')}"
            " FROM similar_pairs s JOIN files o ON o.id = s.other_id"
            " JOIN files d ON d.id = s.file_id"
            " ORDER BY 1, 11, 2, 12"
        )
        current: tuple[bytes, str] | None = None
        members: list[tuple[Path, Match, bool]] = []
        for row in rows:
            if (row[0], row[10]) != current:
                if current is not None:
                    yield self.shown(current[1], current[0]), members
                current, members = (row[0], row[10]), []
            members.append((self.shown(row[11], row[1]), _match_from_row(row[2:9]), bool(row[9])))
        if current is not None:
            yield self.shown(current[1], current[0]), members

    def shown(self, host: str, path: bytes) -> Path:
        """A stored path as output shows it: as it is for this host's files,
        ``host:/path`` (as scp and rsync write it) for another host's.  For
        display only: the second is no path on this machine."""
        if host == self.host:
            return Path(os.fsdecode(path))
        return Path(f"{host}:{os.fsdecode(path)}")

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
        params: list[Any] = []
        for column, wanted in (("m.original_id", original_ids), ("m.file_id", file_ids)):
            if wanted is not None:
                where, values = self._any(column, sorted(set(wanted)))
                only += f" AND {where}"
                params += values
        # matches.owed is kept by triggers (SQLite m014, PostgreSQL p003): read through
        # its partial index, the owed matches cost what they are, not what the whole table is
        owed = "TRUE" if logged else "m.owed = 1"
        return [
            row[0]
            for row in self._sql(
                "SELECT m.file_id FROM matches m JOIN files d ON d.id = m.file_id"
                " JOIN files o ON o.id = m.original_id"
                f" WHERE NOT EXISTS ({self._pair_decided('d', 'o')})"
                " AND NOT EXISTS (SELECT 1 FROM decisions k WHERE k.kind = 'keep'"
                f"  AND k.sha_a = d.sha256 AND k.path_a = d.path{self._same_host('k.host_a', 'd.host')})"
                # (an expression, not the column: SQLite would walk the host's
                # files through their index rather than the owed matches through theirs)
                f" AND {owed}{only} AND ({self._hostcol('d.')} || '') = ?"
                " ORDER BY m.file_id",
                [*params, self.host],
            )
        ]

    # --- similar pairs: for review, never a group and never acted on --------

    def set_similar(self, file_id: int, other_id: int, match: Match) -> None:
        """Record that ``file_id`` looks like ``other_id`` but may be another capture."""
        self._sql(
            "INSERT INTO similar_pairs (file_id, other_id, tier, phash_distance, dhash_distance,"
            " colour_distance, similarity, orientation, reason, matched_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (file_id, other_id) DO UPDATE SET tier = excluded.tier,"
            " phash_distance = excluded.phash_distance, dhash_distance = excluded.dhash_distance,"
            " colour_distance = excluded.colour_distance, similarity = excluded.similarity,"
            " orientation = excluded.orientation, reason = excluded.reason,"
            " matched_at = excluded.matched_at",
            [file_id, other_id, *_match_values(match), time.time()],
        )

    def clear_similar(self, file_id: int, *, placed_only: bool = False) -> None:
        """Forget every similar pair ``file_id`` is part of (its content changed), or
        with ``placed_only`` those found when it was placed (it is placed again)."""
        if placed_only:
            self._sql("DELETE FROM similar_pairs WHERE file_id = ?", [file_id])
        else:
            self._sql("DELETE FROM similar_pairs WHERE file_id = ? OR other_id = ?", [file_id, file_id])

    def similar_of(self, file_id: int) -> list[tuple[int, Match]]:
        """The files ``file_id`` was found similar to, with the verdict."""
        return [
            (row[0], _match_from_row(row[1:8]))
            for row in self._sql(
                "SELECT other_id, tier, phash_distance, dhash_distance, colour_distance,"
                " similarity, orientation, reason FROM similar_pairs WHERE file_id = ? ORDER BY other_id",
                [file_id],
            )
        ]

    def similar_against(self, other_id: int) -> list[tuple[int, str]]:
        """The files found similar to ``other_id`` when they were placed, with the reason."""
        return [
            (int(row[0]), row[1] or "")
            for row in self._sql("SELECT file_id, reason FROM similar_pairs WHERE other_id = ? ORDER BY file_id", [other_id])
        ]

    def regroup_pending(self) -> int | None:
        """Where placing this host's migrated files among the other hosts' stands (the
        last id placed), or None when nothing is pending."""
        if not self._has("regroup_pending"):
            return None
        row = self._sql("SELECT after FROM regroup_pending WHERE host = ?", [self.host]).fetchone()
        return None if row is None else int(row[0])

    def set_regroup_pending(self, after: int | None) -> None:
        """Record where placing this host's migrated files stands; None: done."""
        self._sql("DELETE FROM regroup_pending WHERE host = ?", [self.host])
        if after is not None:
            self._sql("INSERT INTO regroup_pending (host, after) VALUES (?, ?)", [self.host, after])

    def originals_here(self, after: int = 0, limit: int = 1000) -> list[int]:
        """This host's fingerprinted files that are nobody's duplicate, by id, after ``after``."""
        return [
            int(r[0])
            for r in self._sql(
                f"SELECT f.id FROM files f WHERE {self._hostcol('f.')} = ? AND f.id > ? AND f.error IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM matches m WHERE m.file_id = f.id) ORDER BY f.id LIMIT ?",
                [self.host, after, limit],
            )
        ]

    # --- each host's reference directories -------------------------------------

    def set_reference_dirs(self, dirs: Iterable[Path]) -> None:
        """Record this host's ``reference_dirs`` (its config's, as it runs now)."""
        with self.atomic():
            self._sql("DELETE FROM host_references WHERE host = ?", [self.host])
            for d in dict.fromkeys(dirs):
                self._sql("INSERT INTO host_references (host, path) VALUES (?, ?)", [self.host, _path_key(d)])

    def references_elsewhere(self) -> dict[str, tuple[Path, ...]]:
        """The other hosts' ``reference_dirs``, by host (a host that never said has none)."""
        if not self._has("host_references"):
            return {}
        out: dict[str, list[Path]] = {}
        for host, path in self._sql("SELECT host, path FROM host_references WHERE host <> ? ORDER BY host, path", [self.host]):
            out.setdefault(str(host), []).append(Path(os.fsdecode(bytes(path))))
        return {host: tuple(paths) for host, paths in out.items()}

    # --- pixels between hosts (a shared store; see dedupd/exchange.py) -----------

    def ask_pixels(self, file_id: int, sha256: str, side: int, waiting_id: int) -> None:
        """Ask the host of ``file_id`` (the version with these bytes) for its pixels at
        ``side``; ``waiting_id`` is the file to place again once they are shared."""
        self._sql(
            "INSERT INTO pixels_asked (file_id, sha256, side, host, waiting_id, asked_at) VALUES (?, ?, ?, ?, ?, ?)"
            # asked again: of the version it is now
            " ON CONFLICT (file_id, side, host, waiting_id) DO UPDATE SET sha256 = excluded.sha256,"
            " asked_at = excluded.asked_at",
            [file_id, sha256, side, self.host, waiting_id, time.time()],
        )

    def shared_pixels(self, sha256: str, side: int) -> bytes | None:
        """The pixels (a PNG) a host shared of a file with these bytes at ``side``, if any."""
        if not self._has("pixels_shared"):
            return None
        row = self._sql("SELECT pixels FROM pixels_shared WHERE sha256 = ? AND side = ?", [sha256, side]).fetchone()
        return bytes(row[0]) if row is not None else None

    def pixels_asked_here(self, limit: int, now: float | None = None) -> list[tuple[int, str, int]]:
        """What other hosts asked of this host's files and nobody shared yet, and not
        to be tried again later than ``now``: (file id, its SHA-256 when asked, side),
        oldest first."""
        return [
            (int(r[0]), str(r[1]), int(r[2]))
            for r in self._sql(
                "SELECT a.file_id, a.sha256, a.side FROM pixels_asked a JOIN files f ON f.id = a.file_id"
                f" WHERE {self._hostcol('f.')} = ? AND (a.retry_at IS NULL OR a.retry_at <= ?)"
                " AND NOT EXISTS (SELECT 1 FROM pixels_shared s WHERE s.sha256 = a.sha256 AND s.side = a.side)"
                " GROUP BY a.file_id, a.sha256, a.side ORDER BY MIN(a.asked_at) LIMIT ?",
                [self.host, time.time() if now is None else now, limit],
            )
        ]

    def retry_asked(self, file_id: int, sha256: str, side: int, at: float) -> None:
        """Answer what was asked of a file that could not be read just now at ``at``, not before."""
        self._sql(
            "UPDATE pixels_asked SET retry_at = ? WHERE file_id = ? AND sha256 = ? AND side = ?",
            [at, file_id, sha256, side],
        )

    def share_pixels(self, sha256: str, side: int, png: bytes) -> None:
        """Answer every host that asked for the pixels of a file with these bytes at ``side``."""
        self._sql(
            "INSERT INTO pixels_shared (sha256, side, pixels, host, shared_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (sha256, side) DO UPDATE SET pixels = excluded.pixels, host = excluded.host,"
            " shared_at = excluded.shared_at",
            [sha256, side, png, self.host, time.time()],
        )

    def pixel_questions(self) -> dict[str, Any]:
        """For ``status``: this host's files waiting for other hosts' pixels, by the host
        asked (``waiting``), and the questions of other hosts this host has yet to answer
        (``to_answer``)."""
        if not self._has("pixels_asked"):
            return {"waiting": {}, "to_answer": 0}
        waiting = {
            str(r[0]): int(r[1])
            for r in self._sql(
                "SELECT f.host, COUNT(DISTINCT a.waiting_id) FROM pixels_asked a JOIN files f ON f.id = a.file_id"
                " WHERE a.host = ? GROUP BY f.host ORDER BY f.host",
                [self.host],
            )
        }
        return {"waiting": waiting, "to_answer": len(self.pixels_asked_here(1_000_000, now=float("inf")))}

    def drop_shared(self, sha256: str, side: int) -> None:
        """Drop shared pixels that cannot be read (damaged in the store)."""
        self._sql("DELETE FROM pixels_shared WHERE sha256 = ? AND side = ?", [sha256, side])

    def drop_asked(self, file_id: int, sha256: str, side: int) -> None:
        """Withdraw what was asked of a file version that cannot be shared (changed, gone, unreadable)."""
        self._sql("DELETE FROM pixels_asked WHERE file_id = ? AND sha256 = ? AND side = ?", [file_id, sha256, side])

    def answered(self) -> list[tuple[int, int, int]]:
        """What this host asked for that is shared now: (file id, side, waiting file id)."""
        if not self._has("pixels_asked"):
            return []
        return [
            (int(r[0]), int(r[1]), int(r[2]))
            for r in self._sql(
                "SELECT a.file_id, a.side, a.waiting_id FROM pixels_asked a JOIN pixels_shared s"
                " ON s.sha256 = a.sha256 AND s.side = a.side WHERE a.host = ? ORDER BY a.asked_at",
                [self.host],
            )
        ]

    def drop_answered(self, rows: list[tuple[int, int, int]]) -> None:
        """Take what :meth:`answered` returned off the list of questions."""
        for file_id, side, waiting_id in rows:
            self._sql(
                "DELETE FROM pixels_asked WHERE file_id = ? AND side = ? AND host = ? AND waiting_id = ?",
                [file_id, side, self.host, waiting_id],
            )

    def prune_pixels(self, kept: float, asked_kept: float) -> None:
        """Drop pixels shared more than ``kept`` seconds ago that no question waits
        for any more (a host that is down, or only scans now and then, takes its
        answer when it runs: not read and shared again every hour meanwhile), and
        questions older than ``asked_kept`` (from a host gone for good)."""
        now = time.time()
        with self.atomic():
            self._sql("DELETE FROM pixels_asked WHERE asked_at < ?", [now - asked_kept])
            self._sql(
                "DELETE FROM pixels_shared WHERE shared_at < ? AND NOT EXISTS (SELECT 1 FROM pixels_asked a"
                " WHERE a.sha256 = pixels_shared.sha256 AND a.side = pixels_shared.side)",
                [now - kept],
            )

    # --- roots a scan was given ------------------------------------------------

    def add_scanned_roots(self, roots: Iterable[Path]) -> None:
        """Remember the directories ``dedupd scan`` indexed: ``dedupd apply`` acts
        inside them (and inside the config's roots), never outside."""
        with self.atomic():
            for root in roots:
                self._sql(
                    "INSERT INTO scanned_roots (host, path, scanned_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (host, path) DO UPDATE SET scanned_at = excluded.scanned_at",
                    [self.host, _path_key(root), time.time()],
                )

    def scanned_roots(self) -> list[Path]:
        """The directories ``dedupd scan`` was given, in path order."""
        return [
            Path(os.fsdecode(r[0]))
            for r in self._sql("SELECT path FROM scanned_roots WHERE host = ? ORDER BY path", [self.host])
        ]

    # --- decisions a person made ------------------------------------------------

    def is_ignored(
        self,
        sha_a: str,
        sha_b: str,
        *,
        path_a: Path,
        path_b: Path,
        host_a: str | None = None,
        host_b: str | None = None,
    ) -> bool:
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
        for any file with that content.  In a store several hosts share, a
        path is a path on its host (``host_a``, ``host_b``; None: this one's).
        """
        a, b = _path_key(path_a), _path_key(path_b)
        ha, hb = host_a or self.host, host_b or self.host
        side = (
            f"(i.sha_a = ? AND (i.path_a IS NULL OR (i.path_a = ? AND {self._decided_on('a')}))"
            f" AND i.sha_b = ? AND (i.path_b IS NULL OR (i.path_b = ? AND {self._decided_on('b')})))"
        )
        row = self._sql(
            f"SELECT 1 FROM decisions i WHERE i.kind = 'not_duplicates' AND ({side} OR {side}) LIMIT 1",
            [sha_a, a, ha, sha_b, b, hb, sha_b, b, hb, sha_a, a, ha],
        ).fetchone()
        return row is not None

    def is_kept(self, sha256: str, path: Path) -> bool:
        """Did a person restore this file (its content at this path), so that it is left alone?"""
        row = self._sql(
            f"SELECT 1 FROM decisions WHERE kind = 'keep' AND sha_a = ? AND path_a = ? AND {self._decided_on('a')}"
            " LIMIT 1",
            [sha256, _path_key(path), self.host],
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
        other_host: str | None = None,
    ) -> int | None:
        """Record a decision; returns its id, or None when the same one is already recorded.
        ``path`` is this host's; ``other_path`` is on ``other_host`` (None: this one)."""
        host, other = self.host, other_host or self.host
        if kind is DecisionKind.NOT_DUPLICATES:
            assert other_sha256 is not None and other_path is not None
            if self.is_ignored(sha256, other_sha256, path_a=path, path_b=other_path, host_b=other):
                return None
            # one order for the same pair, so that a listing shows it once
            (sha256, path, host), (other_sha256, other_path, other) = sorted(
                [(sha256, path, host), (other_sha256, other_path, other)],
                key=lambda side: (side[0], _path_key(side[1]), side[2]),
            )
        elif self.is_kept(sha256, path):
            return None
        values = {
            "kind": kind.value,
            "sha_a": sha256,
            "path_a": _path_key(path),
            "sha_b": other_sha256,
            "path_b": None if other_path is None else _path_key(other_path),
            "decided_at": time.time(),
            "decided_by": decided_by,
            "note": note,
        }
        if self._has("decisions", "host_a"):
            values |= {"host_a": host, "host_b": None if other_path is None else other}
        return self._insert("decisions", values)

    def decisions(self, decision_id: int | None = None) -> list[Decision]:
        """Every decision a person made (or the one with this id), oldest first."""
        if not self._has("decisions"):
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
            for r in self._sql(
                f"SELECT id, kind, sha_a, path_a, sha_b, path_b, decided_at, decided_by, note FROM decisions {where}"
                " ORDER BY id",
                params,
            )
        ]

    def remove_decision(self, decision_id: int) -> None:
        self._sql("DELETE FROM decisions WHERE id = ?", [decision_id])

    def ignores_after(self, mark: int) -> tuple[int, list[tuple[str, str]]]:
        """Pairs marked "not duplicates" after decision ``mark`` (0: all), and the mark to pass next time."""
        rows = self._sql(
            "SELECT id, sha_a, sha_b FROM decisions WHERE id > ? AND kind = 'not_duplicates' ORDER BY id", [mark]
        ).fetchall()
        last = self._sql("SELECT COALESCE(MAX(id), ?) FROM decisions", [mark]).fetchone()[0]
        return max(int(last), mark), [(r[1], r[2]) for r in rows if r[1] and r[2]]

    # --- originals a person chose -------------------------------------------

    def add_chosen(self, sha256: str, note: str) -> bool:
        """Remember that a person chose the file with this content as its group's
        original; False if it already was."""
        if self.is_chosen(sha256):
            return False
        self._sql("INSERT INTO chosen_originals (sha256, decided_at, note) VALUES (?, ?, ?)", [sha256, time.time(), note])
        return True

    def remove_chosen(self, sha256: str) -> None:
        self._sql("DELETE FROM chosen_originals WHERE sha256 = ?", [sha256])

    def is_chosen(self, sha256: str) -> bool:
        """Did a person choose this content as an original?"""
        return self._sql("SELECT 1 FROM chosen_originals WHERE sha256 = ?", [sha256]).fetchone() is not None

    # --- crash counts --------------------------------------------------------

    def add_crash(self, path: Path, st: FileStat, cause: str | None = None) -> int:
        """One more crash on this version of ``path``; returns its count.  ``cause``:
        what went wrong this time (an exception's text), None for a worker's death."""
        key, this_build = _path_key(path), build.build_id()
        with self.atomic():
            row = self._sql(
                "SELECT size, mtime_ns, count, build FROM crashes WHERE host = ? AND path = ?", [self.host, key]
            ).fetchone()
            same = row is not None and (row[0], row[1], row[3]) == (st.size, st.mtime_ns, this_build)
            count = int(row[2]) + 1 if same else 1
            self._sql(
                "INSERT INTO crashes (host, path, size, mtime_ns, count, at, cause, build)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (host, path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,"
                " count = excluded.count, at = excluded.at, cause = excluded.cause, build = excluded.build",
                [self.host, key, st.size, st.mtime_ns, count, time.time(), cause, this_build],
            )
        return count

    def crash_count(self, path: Path, st: FileStat) -> int:
        return self.crash_of(path, st)[0]

    def crash_of(self, path: Path, st: FileStat) -> tuple[int, str | None]:
        """Crashes of this version of ``path`` so far, under this build (another build,
        an upgrade, counts afresh), and the cause of the last (None: a worker's death)."""
        if not self._has("crashes", "build"):  # a reader of a store no writer has migrated yet
            return 0, None
        row = self._sql(
            "SELECT count, cause FROM crashes WHERE host = ? AND path = ? AND size = ? AND mtime_ns = ? AND build = ?",
            [self.host, _path_key(path), st.size, st.mtime_ns, build.build_id()],
        ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    # --- the scan's removal pass, status -----------------------------------------

    def mark_seen(self, file_id: int) -> None:
        self._sql(f"INSERT INTO {self._SEEN} (id) VALUES (?) ON CONFLICT DO NOTHING", [file_id])

    def unseen_under(self, root: Path, chunk: int = 1000) -> Iterator[tuple[int, Path]]:
        """Records under ``root`` the scan did not see, in path order and in chunks
        (each one range of the path index; the caller may delete as it goes)."""
        key = _path_key(root).rstrip(b"/")
        row = self._sql(
            f"SELECT id FROM files WHERE {self._hostcol()} = ? AND path = ? AND {self._UNSEEN}", [self.host, key]
        ).fetchone()
        if row is not None:  # the root itself, a file
            yield row[0], root
        where, low = "path >= ?", key + b"/"
        while True:
            rows = self._sql(
                f"SELECT id, path FROM files WHERE {self._hostcol()} = ? AND {where} AND path < ? AND {self._UNSEEN}"
                " ORDER BY path LIMIT ?",
                [self.host, low, key + b"0", chunk],  # '0' sorts right after '/'
            ).fetchall()
            if not rows:
                return
            for file_id, path in rows:
                yield file_id, Path(os.fsdecode(path))
            where, low = "path > ?", rows[-1][1]

    def counts(self) -> dict[str, int]:
        """Files, errors, groups and duplicates (by tier): kept by triggers, read in O(1)."""
        return {name: int(n) for name, n in self._sql("SELECT name, n FROM counters WHERE name NOT LIKE 'audit:%'")}

    def action_counts(self) -> dict[str, int]:
        """Audit rows by ``action_outcome`` (``quarantine_done``...): kept by a trigger, read in O(1)."""
        return {
            name.removeprefix("audit:"): int(n)
            for name, n in self._sql("SELECT name, n FROM counters WHERE name LIKE 'audit:%' AND n > 0 ORDER BY name")
        }

    # --- daemon status -----------------------------------------------------

    def write_daemon_status(self, *, pid: int, started_at: float, state: str, data: dict[str, Any]) -> None:
        """Record what this host's running daemon says about itself (one row per host)."""
        with self.atomic():
            self._sql(
                "INSERT INTO daemon (id, host, pid, started_at, heartbeat_at, state, data)"
                " VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM daemon), ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (host) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,"
                " heartbeat_at = excluded.heartbeat_at, state = excluded.state, data = excluded.data",
                [self.host, pid, started_at, time.time(), state, json.dumps(data, default=str)],
            )

    def read_daemon_status(self) -> dict[str, Any] | None:
        """What this host's daemon last said about itself, or None."""
        found = [d for d in self.daemon_hosts() if d["host"] == self.host]
        return found[0] if found else None

    def daemon_hosts(self) -> list[dict[str, Any]]:
        """What each host's daemon last said about itself, by host name."""
        if not self._has("daemon"):
            return []
        if not self._has("daemon", "host"):  # a reader before any writer migrated the store: one host's
            query = "SELECT '', pid, started_at, heartbeat_at, state, data FROM daemon WHERE id = 1"
        else:
            query = "SELECT host, pid, started_at, heartbeat_at, state, data FROM daemon ORDER BY host"
        return [
            {"host": r[0], "pid": r[1], "started_at": r[2], "heartbeat_at": r[3], "state": r[4], **json.loads(r[5])}
            for r in self._sql(query)
        ]

    # --- audit and intents ------------------------------------------------------
    # The SQL behind dedupd.audit.  Rows come back as tuples in the order of
    # AUDIT_COLUMNS / INTENT_COLUMNS; dedupd.audit turns them into values.
    # Call the writing ones inside atomic().

    def audit_insert(self, row: dict[str, Any]) -> int | None:
        """Append an audit row; None when its ``dedup_key`` is already recorded."""
        key = row.get("dedup_key")
        if key is not None and self._sql("SELECT 1 FROM audit WHERE dedup_key = ?", [key]).fetchone():
            return None
        return self._insert("audit", {"host": self.host, **row})

    def audit_rows(
        self,
        *,
        audit_id: int | None = None,
        since: float | None = None,
        moves: bool = False,
        not_log: bool = False,
        newest: int | None = None,
        sha256: str | None = None,
        mine: bool = False,
    ) -> list[tuple[Any, ...]]:
        """Audit rows in order (``newest=N``: the last N, newest first), filtered as
        asked (``mine``: only what this host did)."""
        where: list[str] = ["TRUE"]
        params: list[Any] = []
        if mine:
            where.append("host = ?")
            params.append(self.host)
        if sha256 is not None:  # indexed
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
        if not self._has("audit", "decided_by"):  # a store a reader opened before any writer migrated it
            columns = columns.replace("decided_by", "NULL AS decided_by")
        if not self._has("audit", "host"):
            columns = columns.replace("host, original_host", "'' AS host, NULL AS original_host")
        query = f"SELECT {columns} FROM audit WHERE {' AND '.join(where)} ORDER BY id"
        if newest is not None:
            query += f" DESC LIMIT {int(newest)}"
        return [tuple(r) for r in self._sql(query, params).fetchall()]

    def audit_link_intent(self, audit_id: int, intent_id: int) -> None:
        """Repair only: point an audit row at the intent re-created for its move (the store lost the one it named)."""
        self._sql("UPDATE audit SET intent_id = ? WHERE id = ?", [intent_id, audit_id])

    def intent_insert(self, values: dict[str, Any]) -> int:
        return self._insert("intents", {"host": self.host, **values})

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
        """This host's intents in id order, filtered as asked (every filter an indexed column)."""
        where: list[str] = ["host = ?" if self._has("intents", "host") else "'' = ?"]
        params: list[Any] = [self.host]
        for column, value in (
            ("original", None if original is None else _path_key(original)),
            ("path", None if path is None else _path_key(path)),
            ("destination", None if destination is None else _path_key(destination)),
            ("state", state),
            ("id", intent_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        columns = INTENT_COLUMNS
        if not self._has("intents", "original_host"):  # a reader before any writer migrated the store
            columns = columns.replace("original_host", "NULL AS original_host")
        query = f"SELECT {columns} FROM intents WHERE {' AND '.join(where)} ORDER BY id"
        return [tuple(r) for r in self._sql(query, params).fetchall()]

    def intent_of_audit(self, audit_id: int) -> int | None:
        row = self._sql("SELECT intent_id FROM audit WHERE id = ?", [audit_id]).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # --- review: pages for ``dedupd review`` ---------------------------------
    # Keyset paging on indexes: a page costs the same on the first screen and
    # the last, at ten groups or ten thousand.

    def review_group_page(
        self,
        *,
        after: tuple[bytes, int] | None = None,
        before: tuple[bytes, int] | None = None,
        limit: int = 50,
        tiers: tuple[str, ...] = (),
        folder: Path | None = None,
        min_similarity: float | None = None,
        max_similarity: float | None = None,
    ) -> list[tuple[int, bytes]]:
        """Originals of groups (id, stored path) in path order, then id (hosts
        sharing a store may have the same path): the page after the original
        ``after`` (its path and id) or, going back, the one before ``before``.  A
        walk of the path index from that point, each original checked for a
        member that passes the filter (on ``matches.original_id``'s index)."""
        members, params = _member_filter(tiers, folder, min_similarity, max_similarity)
        where, order = "TRUE", "ASC"
        if before is not None:
            where, order = "(o.path, o.id) < (?, ?)", "DESC"
            params = [*before, *params]
        elif after is not None:
            where = "(o.path, o.id) > (?, ?)"
            params = [*after, *params]
        rows = self._sql(
            f"SELECT o.id, o.path FROM files o WHERE {where} AND EXISTS (SELECT 1 FROM matches m"
            f" JOIN files d ON d.id = m.file_id WHERE m.original_id = o.id{members})"
            f" ORDER BY o.path {order}, o.id {order} LIMIT ?",
            [*params, limit],
        ).fetchall()
        out = [(int(r[0]), bytes(r[1])) for r in rows]
        return out[::-1] if before is not None else out

    def review_members(self, original_ids: list[int]) -> dict[int, list[tuple[int, Match, bool]]]:
        """The duplicates of each original: (file id, match, tie), most similar first."""
        out: dict[int, list[tuple[int, Match, bool]]] = {i: [] for i in original_ids}
        if not original_ids:
            return out
        where, params = self._any("original_id", list(original_ids))
        for row in self._sql(
            "SELECT original_id, file_id, tier, phash_distance, dhash_distance, colour_distance,"
            f" similarity, orientation, reason, tie FROM matches WHERE {where}"
            " ORDER BY original_id, similarity DESC NULLS LAST, file_id",
            params,
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
            for r in self._sql(
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
        """How many duplicates pass the filter (one pass over the matches)."""
        members, params = _member_filter(tiers, folder, min_similarity, max_similarity)
        row = self._sql(
            f"SELECT COUNT(*) FROM matches m JOIN files d ON d.id = m.file_id WHERE TRUE{members}", params
        ).fetchone()
        return int(row[0])

    def indexed_at(self, ids: Iterable[int]) -> dict[int, float]:
        """When each file was (last) fingerprinted."""
        where, params = self._any("id", sorted(set(ids)))
        return {
            int(i): float(at or 0.0) for i, at in self._sql(f"SELECT id, indexed_at FROM files WHERE {where}", params)
        }

    def review_similar_page(self, *, after: tuple[int, int] | None = None, limit: int = 50) -> list[tuple[int, int, Match]]:
        """Similar pairs (file id, the file it looks like, verdict), in key order after ``after``."""
        where, params = ("(file_id, other_id) > (?, ?)", list(after)) if after is not None else ("TRUE", [])
        return [
            (int(r[0]), int(r[1]), _match_from_row(r[2:9]))
            for r in self._sql(
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
            for r in self._sql(
                "SELECT a.id FROM audit a JOIN intents i ON i.id = a.intent_id"
                " WHERE a.action IN ('quarantine', 'symlink') AND a.outcome = 'done' AND i.state = 'done'"
                f" AND {'a.host' if self._has('audit', 'host') else chr(39) * 2} = ? AND a.id < ? ORDER BY a.id DESC LIMIT ?",
                [self.host, before if before is not None else 1 << 62, limit],
            )
        ]

    # --- helpers -----------------------------------------------------------

    def _records(self, where: str, params: list[Any]) -> list[Record]:
        query = (
            "SELECT f.id, f.path, f.dev, f.ino, f.size, f.mtime_ns, f.seq, f.sha256,"
            " f.pixel_digest, f.phash, f.dhash, f.colour, f.width, f.height, f.format,"
            f" f.detail, f.error, m.original_id, f.variants, f.crop_keys, f.ctime_ns, {self._hostcol('f.')}"
            f" FROM files f LEFT JOIN matches m ON m.file_id = f.id WHERE {where}"
        )
        return [_record_from_row(row, self.host) for row in self._sql(query, params).fetchall()]


# --- the SQL fragments both backends use --------------------------------------


AUDIT_COLUMNS = (
    "id, at, action, outcome, path, original, tier, phash_distance, dhash_distance,"
    " colour_distance, similarity, size, sha256, original_sha256, reason, detail,"
    " destination, intent_id, restores, decided_by, host, original_host"
)
INTENT_COLUMNS = (
    "id, action, state, path, destination, temp, link_target, dev, ino, size, mtime_ns,"
    " sha256, original, original_sha256, audit_id, work, root, ctime_ns, original_host"
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


# --- how values are stored ----------------------------------------------------


def this_host() -> str:
    """This machine's name: the host a shared store knows it by, unless the config names it (``host``)."""
    return socket.gethostname()


def _path_key(path: Path) -> bytes:
    return os.fsencode(path)


def to_signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


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


def _file_row(host: str, path: Path, st: FileStat, seq: int | None) -> dict[str, Any]:
    """The columns every file row has; fingerprint and error columns start empty."""
    return {
        "host": host,
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
        "build": None,
        "indexed_at": time.time(),
    }


def _fingerprint_columns(fp: Fingerprint) -> dict[str, Any]:
    """A fingerprint as the columns of its file row."""
    return {
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


def _match_values(match: Match) -> list[Any]:
    """A match's columns from ``tier`` to ``reason``, in the order of the tables."""
    return [
        match.tier.value,
        match.distances.phash,
        match.distances.dhash,
        round(match.distances.colour, 2),
        match.similarity,
        match.orientation.value,
        match.reason,
    ]


def _record_from_row(row: tuple[Any, ...], here: str) -> Record:
    """A file row as a Record; ``here``: this connection's host (a file of another names its host)."""
    (fid, path, dev, ino, size, mtime_ns, seq, sha, pix, ph, dh, col, w, h, fmt, det, err, orig, var, crops, ctime,
     host) = row  # fmt: skip
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
        host=None if host == here else host,
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
