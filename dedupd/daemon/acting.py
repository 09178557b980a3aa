"""The daemon's actions, off its main loop.

A move reads whole files: the copy across filesystems (up to
``max_file_bytes``), and the SHA-256 of the duplicate and of its original
just before the file is taken.  On a slow disk or a network share that is
seconds, and the main loop is the thread that pings the systemd watchdog.
So the file work of a move (:meth:`Actor.carry_out`) runs on one action
thread, one move at a time, while the main loop goes on settling, ingesting
and pinging; what touches the store (:meth:`Actor.prepare`, the intent, and
:meth:`Actor.finish`, the audit row) stays on the main loop, the store's
only writer.

Duplicates wait in a queue, one entry per duplicate file.  When its turn
comes, a duplicate is looked up again in the store: the match it was found
with may have been undone (forgotten, ignored, regrouped) meanwhile, and
then the store's current match is what is acted on, or nothing.

While a move is in flight, its two files (the duplicate and the original)
are *busy*: the daemon leaves their events, re-reads and forgetting until
the move is recorded, so that nothing changes their records underneath it.
A queued duplicate whose action has not run yet is still an unacted match
in the store: a stop or a crash leaves it for the next start.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from dedupd.actions import Actor, Move, Moved, current_form
from dedupd.backend import StoreBackend
from dedupd.models import Duplicate

log = structlog.get_logger()

#: seconds of main-loop time spent per pass on preparing and recording actions
#: (a burst of "log only" or skipped duplicates is recorded in slices)
ACTION_BUDGET = 0.05


class ActionLane:
    """Queued duplicates, and the one move whose file work runs on the action thread."""

    def __init__(self, store: StoreBackend, budget: float = ACTION_BUDGET) -> None:
        self.store = store
        self.budget = budget
        self.queued: dict[int, Duplicate] = {}  # duplicate file id -> as found (oldest first)
        self.current: tuple[Move, cf.Future[Moved]] | None = None
        self.executor = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dedupd-action")

    def add(self, found: Iterable[Duplicate]) -> None:
        """Queue duplicates; a file queued already keeps its place."""
        for dup in found:
            self.queued.setdefault(dup.duplicate.id, dup)

    @property
    def busy(self) -> frozenset[Path]:
        """The paths of the move in flight (its duplicate and its original, when
        that is this host's: another host's path names no file here)."""
        if self.current is None:
            return frozenset()
        dup = self.current[0].dup
        if dup.original.host is not None:
            return frozenset((dup.duplicate.path,))
        return frozenset((dup.duplicate.path, dup.original.path))

    @property
    def idle(self) -> bool:
        return self.current is None and not self.queued

    def futures(self) -> list[cf.Future[Moved]]:
        return [] if self.current is None else [self.current[1]]

    def advance(self, actor: Actor, acted: Callable[[Duplicate], list[Duplicate]]) -> None:
        """Record the move that finished, start the next; at most ``budget`` seconds.

        ``acted(dup)`` is told of every duplicate handled, and returns the
        duplicates that made (re-matches); they join the queue.
        """
        deadline = time.monotonic() + self.budget
        while time.monotonic() < deadline:
            if self.current is not None:
                move, future = self.current
                if not future.done():
                    return
                self.current = None
                actor.finish(move, future.result())  # an exception here is a bug: it stops the daemon
                self.add(acted(move.dup))
                continue
            if not self.queued:
                return
            file_id = next(iter(self.queued))
            found = self.queued.pop(file_id)
            dup = current_form(self.store, file_id, found.rule)
            if dup is None:
                continue  # no longer a duplicate: nothing is owed
            prepared = actor.prepare(dup)
            if isinstance(prepared, Move):
                self.current = (prepared, self.executor.submit(actor.carry_out, prepared))
            else:
                self.add(acted(dup))

    def finish_current(self, actor: Actor, acted: Callable[[Duplicate], list[Duplicate]]) -> None:
        """On stop: wait for the move in flight and record it; what is queued stays owed."""
        if self.current is not None:
            move, future = self.current
            self.current = None
            actor.finish(move, future.result())
            acted(move.dup)
        if self.queued:
            log.info("actions_left_for_next_start", count=len(self.queued))
        self.queued.clear()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
