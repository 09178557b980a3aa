"""Crash tracking: which file kills the fingerprinting workers, or makes dedupd's
own code raise.

When a worker process dies (a crash in a decoder, the kernel's OOM killer)
the pool fails every file in flight, so one death only says "one of
these".  A crash is counted against a file only when it was the only one in
flight; files in flight together at a death become *suspects* and are
retried one at a time until each has either finished or died alone.

An exception that is not an error dedupd expects (a ``TypeError`` in its own
code, say: a bug, not a damaged picture) is raised by one file, so it counts
against that file at once, like a death alone.  Deaths and exceptions share
one count: a file that crashed :data:`CRASH_LIMIT` times, either way, is
skipped, with the last cause as its reason (``crashed_decoder`` or
``internal_error``).  Each count is logged: ``worker_crash_counted`` for a
worker that died or raised, ``ingest_bug_counted`` for a bug met while the
file was stored and grouped on the process's own thread.

Counts live in the store, so that a file that killed workers is skipped
after a restart too, instead of killing them again every time the daemon
starts.  A file that changes (size or modification time) gets a fresh
count.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import structlog

from dedupd.errors import INTERNAL_ERROR, bug_cause, bug_detail
from dedupd.models import FileStat
from dedupd.backend import StoreBackend

log = structlog.get_logger()

#: a file that killed a worker this many times, alone, is skipped
CRASH_LIMIT = 2

class CrashTracker:
    """Counts worker deaths per file, in the store."""

    def __init__(self, store: StoreBackend, limit: int = CRASH_LIMIT) -> None:
        self.store = store
        self.limit = limit
        self.suspects: set[Path] = set()

    @property
    def isolating(self) -> bool:
        """Are there suspects to retry one at a time?"""
        return bool(self.suspects)

    def died(self, in_flight: Iterable[tuple[Path, FileStat | None]]) -> list[Path]:
        """A worker died with these files in flight; returns the files now known to be poison."""
        flying = list(in_flight)
        if len(flying) != 1:
            self.suspects.update(path for path, _ in flying)
            return []
        path, st = flying[0]
        self.suspects.discard(path)
        if st is None:
            return []
        with self.store.atomic():
            count = self.store.add_crash(path, st)
        log.error("worker_crash_counted", path=path, crashes=count, limit=self.limit)
        return [path] if count >= self.limit else []

    def raised(self, path: Path, st: FileStat, exc: BaseException) -> bool:
        """Fingerprinting this file raised ``exc``, a bug: count it; is the file now poison?"""
        count, cause = self._count_bug(path, st, exc)
        log.error("worker_crash_counted", path=path, crashes=count, limit=self.limit, cause=cause)
        return count >= self.limit

    def raised_while_ingesting(self, path: Path, st: FileStat, exc: BaseException) -> bool:
        """Storing or grouping this file (on the process's own thread, not in a
        worker) raised ``exc``, a bug: count it; is the file now poison?"""
        count, cause = self._count_bug(path, st, exc)
        log.error("ingest_bug_counted", path=path, crashes=count, limit=self.limit, cause=cause)
        return count >= self.limit

    def _count_bug(self, path: Path, st: FileStat, exc: BaseException) -> tuple[int, str]:
        self.suspects.discard(path)
        cause = bug_cause(exc)
        with self.store.atomic():
            count = self.store.add_crash(path, st, cause)
        return count, cause

    def poisoned(self, path: Path, st: FileStat) -> bool:
        """Has this version of this file crashed often enough to be skipped?"""
        return self.store.crash_count(path, st) >= self.limit

    def why(self, path: Path, st: FileStat) -> tuple[str, str]:
        """The reason and detail a poison file is skipped with: its last crash's cause."""
        count, cause = self.store.crash_of(path, st)
        if cause is None:
            return "crashed_decoder", f"the file killed a worker process {count} times"
        return INTERNAL_ERROR, bug_detail(cause, count)

    def survived(self, path: Path) -> None:
        """The file was fingerprinted (or failed cleanly): it is no suspect."""
        self.suspects.discard(path)
