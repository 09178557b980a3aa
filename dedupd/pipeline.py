"""Where the one-shot scan and the watcher meet.

For each file: stat it, skip it if unchanged, follow it if it was renamed,
otherwise fingerprint it (in a worker), store it, find its candidates in the
index, verify them against each group's original, and decide which file is
the original.  What to *do* about a duplicate is the caller's business
(``dedupd.actions``); this module only records facts.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from dedupd import errors
from dedupd.config import Config
from dedupd.hashing import fingerprint_file
from dedupd.index import HashIndex
from dedupd.matching import INVERSE, Decision, choose_original, verdict_for
from dedupd.models import FileStat, Fingerprint, Match, Record, Tier
from dedupd.store import Store

log = structlog.get_logger()

_TIER_RANK = {Tier.EXACT: 0, Tier.PIXEL: 1, Tier.NEAR: 2, Tier.SIMILAR: 3}


# --- what a worker sends back -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fingerprinted:
    path: Path
    stat: FileStat
    fingerprint: Fingerprint


@dataclass(frozen=True, slots=True)
class Failed:
    path: Path
    stat: FileStat | None
    reason: str
    detail: str


def fingerprint_job(path: Path, max_pixels: int, max_bytes: int) -> Fingerprinted | Failed:
    """Run in a worker process: read and fingerprint one file, errors as values."""
    try:
        st, fp = fingerprint_file(path, max_pixels=max_pixels, max_bytes=max_bytes)
    except errors.FileSkipped as exc:
        try:
            st_now: FileStat | None = FileStat.from_path(path)
        except OSError:
            st_now = None
        return Failed(path, st_now, exc.reason, exc.cause or exc.message)
    return Fingerprinted(path, st, fp)


def fingerprint_batch(paths: list[Path], max_pixels: int, max_bytes: int) -> list[Fingerprinted | Failed]:
    """Several files per worker task: a process pool's per-task overhead is
    comparable to fingerprinting one small JPEG, so a scan sends batches."""
    return [fingerprint_job(p, max_pixels, max_bytes) for p in paths]


# --- what the pipeline concludes ---------------------------------------------


class Step(enum.Enum):
    UNCHANGED = "unchanged"  # same device, inode, size and mtime as stored: not read
    RENAMED = "renamed"  # a stored file seen at a new path: not read
    FINGERPRINT = "fingerprint"  # new or changed: read it


@dataclass(frozen=True, slots=True)
class Plan:
    step: Step
    path: Path
    stat: FileStat
    record: Record | None = None  # for RENAMED: the stored record that moved


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A pair found: ``duplicate`` is a copy of ``original``."""

    duplicate: Record
    original: Record
    match: Match
    tie: bool
    rule: str


@dataclass(frozen=True, slots=True)
class Outcome:
    record: Record | None
    duplicate: Duplicate | None = None
    error: Failed | None = None


class Pipeline:
    """Stateful glue between the store, the index and the matcher.  One per writer."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.index = HashIndex.build(store.all_hashes())

    # --- planning ---------------------------------------------------------

    def plan(self, path: Path) -> Plan:
        """Decide what ``path`` needs without reading it.  Raises OSError if it is gone."""
        st = FileStat.from_path(path)
        rec = self.store.record_for_path(path)
        if rec is not None and rec.stat == st:
            return Plan(Step.UNCHANGED, path, st, rec)
        for other in self.store.records_by_inode(st):
            if other.path != path and not _same_inode(other.path, st):
                return Plan(Step.RENAMED, path, st, other)
        return Plan(Step.FINGERPRINT, path, st, rec)

    def follow_rename(self, plan: Plan) -> Record:
        assert plan.record is not None
        with self.store.atomic():
            replaced = self.store.record_for_path(plan.path)
            if replaced is not None and replaced.id != plan.record.id:
                # renamed over another indexed file: that one is gone
                self.index.remove(replaced.id)
                for orphan in self.store.delete_file(replaced.id):
                    self._rematch(orphan)
            self.store.move_file(plan.record.id, plan.path)
        log.info("file_renamed", path=plan.path, old_path=plan.record.path)
        moved = self.store.record(plan.record.id)
        assert moved is not None
        return moved

    # --- ingesting ----------------------------------------------------------

    def ingest(self, result: Fingerprinted | Failed) -> Outcome:
        """Store a worker's result and match it.  One transaction."""
        if isinstance(result, Failed):
            return Outcome(None, error=self.record_failure(result))
        with self.store.atomic():
            previous = self.store.record_for_path(result.path)
            orphans: list[int] = []
            if previous is not None:  # a new version of a known file
                orphans = self._detach(previous)
            file_id = self.store.upsert_file(
                result.path, result.stat, result.fingerprint, seq=self.store.next_seq()
            )
            self.index.add_fingerprint(file_id, result.fingerprint)
            record = self.store.record(file_id)
            assert record is not None
            # the stored record has no orientation variants; the fresh one does
            record = dataclasses.replace(record, fingerprint=result.fingerprint)
            found = self._match(record)
            for orphan in orphans:
                self._rematch(orphan)
        return Outcome(record, found)

    def record_failure(self, failed: Failed) -> Failed:
        log.warning("file_skipped", path=failed.path, reason=failed.reason, detail=failed.detail)
        if failed.stat is not None:
            with self.store.atomic():
                previous = self.store.record_for_path(failed.path)
                if previous is not None:
                    for orphan in self._detach(previous):
                        self._rematch(orphan)
                self.store.upsert_error(
                    failed.path, failed.stat, failed.reason, failed.detail, seq=self.store.next_seq()
                )
        return failed

    def forget(self, path: Path) -> bool:
        """A file is gone: drop its record; its duplicates look for a new original."""
        record = self.store.record_for_path(path)
        if record is None:
            return False
        with self.store.atomic():
            self.index.remove(record.id)
            orphans = self.store.delete_file(record.id)
            for orphan in orphans:
                self._rematch(orphan)
        log.info("file_forgotten", path=path)
        return True

    # --- matching -----------------------------------------------------------

    def _detach(self, record: Record) -> list[int]:
        """Take a file out of its group before its record changes."""
        self.store.clear_match(record.id)
        self.index.remove(record.id)
        orphans = self.store.duplicates_of(record.id)
        for orphan in orphans:
            self.store.clear_match(orphan)
        return orphans

    def _rematch(self, file_id: int) -> None:
        record = self.store.record(file_id)
        if record is not None and record.fingerprint is not None:
            self._match(record)

    def _match(self, new: Record) -> Duplicate | None:
        fp = new.fingerprint
        assert fp is not None
        settings = self.config.match
        candidates: set[int] = set(self.store.ids_with("sha256", fp.sha256))
        candidates.update(self.store.ids_with("pixel_digest", fp.pixel_digest))
        candidates.update(self.index.candidates(fp, settings))
        candidates.discard(new.id)
        if not candidates:
            return None
        # Groups are stars: a new file is compared with each group's original,
        # never joined to a group through one of its duplicates.
        found = self.store.records(candidates)
        roots = {r.original_id or r.id for r in found.values()} - {new.id}
        originals = self.store.records(roots)
        best: tuple[tuple[int, float, int], Record, Match] | None = None
        for root in originals.values():
            if root.fingerprint is None:
                continue
            if self.store.is_ignored(fp.sha256, root.fingerprint.sha256):
                log.info("pair_ignored", path=new.path, original=root.path)
                continue
            verdict = verdict_for(new, root, settings)
            if verdict.match is None:
                continue
            key = (_TIER_RANK[verdict.match.tier], -verdict.match.similarity, root.seq)
            if best is None or key < best[0]:
                best = (key, root, verdict.match)
        if best is None:
            return None
        _, root, match = best
        decision, rule = choose_original(new, root, self.config)
        if decision is Decision.KEEP_NEW:
            return self._promote(new, root, match, rule)
        self.store.set_match(new.id, root.id, match, tie=decision is Decision.TIE)
        return _found(Duplicate(new, root, match, decision is Decision.TIE, rule))

    def _promote(self, new: Record, old_root: Record, match: Match, rule: str) -> Duplicate:
        """The new file is the better original: the old original and its duplicates follow it."""
        inverse = Match(
            match.tier,
            match.distances,
            match.similarity,
            INVERSE.get(match.orientation, match.orientation),
            match.reason,
        )
        members = self.store.duplicates_of(old_root.id)
        self.store.set_match(old_root.id, new.id, inverse, tie=False)
        assert new.fingerprint is not None
        for member_id in members:
            member = self.store.record(member_id)
            if member is None or member.fingerprint is None:
                continue
            verdict = verdict_for(member, new, self.config.match)
            if verdict.match is not None:
                self.store.set_match(member_id, new.id, verdict.match, tie=False)
            else:
                self.store.clear_match(member_id)
                log.info("group_split", path=member.path, original=new.path, reason=verdict.reason)
        return _found(Duplicate(old_root, new, inverse, False, rule))


def _found(dup: Duplicate) -> Duplicate:
    log.info(
        "duplicate_found",
        path=dup.duplicate.path,
        original=dup.original.path,
        tier=dup.match.tier.value,
        distance=dup.match.distances.phash,
        similarity=dup.match.similarity,
        orientation=dup.match.orientation.value,
        tie=dup.tie,
        reason=dup.match.reason,
        rule=dup.rule,
    )
    return dup


def _same_inode(path: Path, st: FileStat) -> bool:
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return now.st_ino == st.ino and now.st_dev == st.dev


# --- walking ----------------------------------------------------------------------


class Filter:
    """Include/exclude patterns on file and directory names (case-insensitive)."""

    def __init__(self, config: Config, extra_never: tuple[Path, ...] = ()) -> None:
        self.include = tuple(p.lower() for p in config.include)
        self.exclude = tuple(p.lower() for p in config.exclude)
        self.never = tuple(
            p for p in (config.quarantine_dir, config.db, config.audit_jsonl, *extra_never) if p is not None
        )

    def excluded_name(self, name: str) -> bool:
        low = name.lower()
        return any(fnmatch.fnmatchcase(low, p) for p in self.exclude)

    def wanted_file(self, path: Path) -> bool:
        low = path.name.lower()
        if self.excluded_name(path.name) or not any(fnmatch.fnmatchcase(low, p) for p in self.include):
            return False
        return not self.inside_never(path)

    def inside_never(self, path: Path) -> bool:
        return any(path == n or path.is_relative_to(n) for n in self.never)

    def wanted_path(self, path: Path, root: Path) -> bool:
        """A file under ``root``: no part of its relative path is excluded."""
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            return False
        return all(not self.excluded_name(p) for p in parts[:-1]) and self.wanted_file(path)


def walk(root: Path, filt: Filter, unreadable: list[Path] | None = None) -> Iterator[Path]:
    """Regular files under ``root`` in sorted order; symlinks are never followed.

    Directories that cannot be listed are logged and appended to ``unreadable``.
    """
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        log.warning("directory_unreadable", path=root, error=exc.strerror or str(exc))
        if unreadable is not None:
            unreadable.append(root)
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                if not filt.excluded_name(entry.name) and not filt.inside_never(path):
                    yield from walk(path, filt, unreadable)
            elif entry.is_file(follow_symlinks=False):
                if filt.wanted_file(path):
                    yield path
        except OSError as exc:  # vanished between scandir and stat
            log.debug("entry_skipped", path=path, error=exc.strerror or str(exc))


def missing(path: Path) -> bool:
    """Provably gone: not merely unreadable (EACCES on a parent is not a deletion)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def unique_roots(paths: Iterable[Path]) -> list[Path]:
    """Absolute, de-duplicated roots, none inside another."""
    roots = sorted({Path(os.path.abspath(p)) for p in paths})
    out: list[Path] = []
    for r in roots:
        if not any(r.is_relative_to(o) for o in out):
            out.append(r)
    return out
