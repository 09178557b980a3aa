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
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from dedupd import build, errors, faults
from dedupd.config import Config
from dedupd.crashes import CrashTracker
from dedupd.grouping import Grouping
from dedupd.index import HashIndex
from dedupd.models import Duplicate, FileStat, Record
from dedupd.backend import StoreBackend
from dedupd.walking import Filter, missing, unique_roots, walk
from dedupd.worker import Failed, Fingerprinted, failed_now, fingerprint_batch, fingerprint_job, worker_init

__all__ = [
    "Duplicate", "Failed", "Filter", "Fingerprinted", "Outcome", "Pipeline", "Plan", "Step",
    "bug_on_file", "fingerprint_batch", "fingerprint_job", "log_worker_bug", "missing", "unique_roots", "walk",
    "worker_init",
]  # fmt: skip

log = structlog.get_logger()


def bug_on_file(path: Path, exc: Exception, crashes: CrashTracker) -> Failed:
    """Fingerprinting ``path`` raised ``exc``, which no damaged picture raises (those
    come back as :class:`Failed` values): a bug.  For the one-shot scan.

    It is logged as one, with its traceback (a worker's own traceback travels
    with the exception), and counted against the file in the store, as the
    daemon counts it (``daemon.loop``): once the file has raised
    :data:`~dedupd.crashes.CRASH_LIMIT` times, by a scan or the daemon, the
    failure records it as skipped (``internal_error``); below that the file is
    skipped in this scan only (:attr:`Failed.retry`), and the next scan or
    daemon start tries it again."""
    failed = failed_now(path, errors.INTERNAL_ERROR, errors.bug_detail(log_worker_bug(path, exc)))
    if failed.stat is None:  # gone meanwhile: nothing to count against
        return failed
    if crashes.raised(path, failed.stat, exc):
        return Failed(path, failed.stat, *crashes.why(path, failed.stat))
    detail = f"{failed.detail}; not recorded as skipped: the next scan or daemon start tries it again"
    return dataclasses.replace(failed, detail=detail, retry=True)


def log_worker_bug(path: Path, exc: BaseException) -> str:
    """Log ``exc``, met while fingerprinting ``path``, as a bug (``worker_error``,
    with its traceback); returns its one-line cause."""
    cause = errors.bug_cause(exc)
    log.error("worker_error", path=path, error=cause, exc_info=exc, note="a bug in dedupd; please report it")
    return cause


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
class Outcome:
    """What one step changed: the file's record, and every match made or moved
    (each for the Actor), or the failure that made the file be skipped."""

    record: Record | None
    duplicates: tuple[Duplicate, ...] = ()
    error: Failed | None = None


class Pipeline:
    """Stat, skip, fingerprint, store; grouping does the matching.  One per writer."""

    def __init__(self, store: StoreBackend, config: Config) -> None:
        self.store = store
        self.grouping = Grouping(store, config)
        # for the other hosts sharing the store: their keep rules ask it
        store.set_reference_dirs(config.reference_dirs)
        self.grouping.build_index_in_background()

    @property
    def config(self) -> Config:
        return self.grouping.config

    @config.setter
    def config(self, config: Config) -> None:
        self.grouping.config = config
        self.store.set_reference_dirs(config.reference_dirs)

    @property
    def index(self) -> HashIndex:
        return self.grouping.index

    # --- planning ---------------------------------------------------------

    def plan(self, path: Path) -> Plan:
        """Decide what ``path`` needs without reading it.  Raises OSError if it is gone."""
        st = FileStat.from_path(path)
        rec = self.store.record_for_path(path)
        # a file recorded as unreadable by another build (an upgrade) is read once more
        if rec is not None and rec.stat == st and (rec.error is None or self.store.error_build(rec.id) == build.build_id()):
            return Plan(Step.UNCHANGED, path, st, rec)
        for other in self.store.records_by_inode(st):
            if other.path != path and not _same_inode(other.path, st):
                return Plan(Step.RENAMED, path, st, other)
        return Plan(Step.FINGERPRINT, path, st, rec)

    def follow_rename(self, plan: Plan) -> Outcome:
        assert plan.record is not None
        found = self.grouping.renamed(plan.record.id, plan.path)
        log.info("file_renamed", path=plan.path, old_path=plan.record.path)
        moved = self.store.record(plan.record.id)
        assert moved is not None
        return Outcome(moved, tuple(found))

    # --- ingesting ----------------------------------------------------------

    def ingest(self, result: Fingerprinted | Failed) -> Outcome:
        """Store a worker's result and group it.  One transaction."""
        if isinstance(result, Failed):
            return self.record_failure(result)
        with self.store.atomic():
            previous = self.store.record_for_path(result.path)
            file_id = self.store.upsert_file(result.path, result.stat, result.fingerprint)
            record = self.store.record(file_id)
            assert record is not None
            # the fresh fingerprint, exactly as the worker computed it
            record = dataclasses.replace(record, fingerprint=result.fingerprint)
            faults.point("pipeline.ingest", result.path)  # tests only: a bug met while grouping this file
            found = self.grouping.changed(record, previous)
        return Outcome(record, tuple(found))

    def record_failure(self, failed: Failed) -> Outcome:
        """Record a file that could not be read (when its stat is known, and unless
        it is to be tried again) and say so: the log line comes once the record is
        committed, so a reader that sees ``file_skipped`` finds the record."""
        found: list[Duplicate] = []
        if failed.stat is not None and not failed.retry:
            with self.store.atomic():
                file_id = self.store.upsert_error(failed.path, failed.stat, failed.reason, failed.detail)
                found = self.grouping.unreadable(file_id)
        log.warning("file_skipped", path=failed.path, reason=failed.reason, detail=failed.detail)
        return Outcome(None, tuple(found), error=failed)

    def forget(self, path: Path) -> Outcome | None:
        """A file is gone: drop its record; its duplicates look for a new original.
        None when nothing was stored for ``path``."""
        record = self.store.record_for_path(path)
        if record is None:
            return None
        found = self.grouping.forget(record.id)
        log.info("file_forgotten", path=path)
        return Outcome(None, tuple(found))

    def acted(self, dup: Duplicate) -> list[Duplicate]:
        """After the Actor handled ``dup``: a file it moved away leaves the index too."""
        return self.grouping.removed([dup.duplicate.id])


def _same_inode(path: Path, st: FileStat) -> bool:
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return now.st_ino == st.ino and now.st_dev == st.dev
