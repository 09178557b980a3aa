"""Reconciliation: what the store believes against what is on disk.

Three kinds of work, each done in slices on the main loop so that a pass
stays short at any store size (the loop serves the systemd watchdog):

* catch-up walks (at start, on a reload, after lost events, every
  ``reconcile_interval``, and for a new directory): every file found is
  planned for settling (:data:`CATCH_UP_BATCH` per pass);
* the sweep that follows a whole-root walk, once every walked file was
  planned (files renamed meanwhile are followed, not forgotten): indexed
  files are looked for (:data:`SWEEP_BATCH` ``lstat``\\ s per pass), and
  those gone are forgotten once a rename had its chance to be followed
  (a file renamed while the sweep runs keeps its record);
* deleted or moved-away paths, forgotten once a rename had its chance to
  be followed.

Before forgetting, the root is looked at again *after* the files were found
gone: a root unmounted in between trips its breaker and nothing is forgotten.
Nothing is forgotten on a root whose breaker is open, nor a file a move has
in hand (it is looked at again once the move is recorded).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Container, Iterable, Iterator
from pathlib import Path

import structlog

from dedupd import faults, fileops
from dedupd.backend import StoreBackend
from dedupd.daemon.breakers import RootState
from dedupd.daemon.settling import Pending
from dedupd.walking import Filter, missing, walk

log = structlog.get_logger()

CATCH_UP_BATCH = 64  # files planned per pass while catching up
#: indexed files checked (lstat) per pass by the sweep that forgets what a
#: catch-up walk did not find: a pass stays short at any store size, so the
#: loop keeps serving the systemd watchdog, signals and events
SWEEP_BATCH = 2000
#: most files waiting to settle; a walk waits while there are more
MAX_PENDING = 10_000
#: most files a sweep found missing and waits on (a rename may yet be followed)
#: before it looks for more
MAX_MISSING = 4 * SWEEP_BATCH


@dataclasses.dataclass
class Sweep:
    """Where a root's sweep is: the last indexed path looked for, and the missing
    files waiting for a rename to be followed before they are forgotten."""

    after: Path | None = None
    looked_at_all: bool = False
    forgotten: int = 0
    missing: dict[Path, float] = dataclasses.field(default_factory=dict)  # path -> when found missing


class Reconciliation:
    """Catch-up walks, the sweeps after them, and deleted paths waiting to be forgotten."""

    def __init__(self, store: StoreBackend, make_filter: Callable[[], Filter]) -> None:
        self.store = store
        self.make_filter = make_filter
        self.walks: collections.deque[tuple[Path, Iterator[Path], bool]] = collections.deque()
        self.gone: dict[Path, tuple[Path, float]] = {}  # path -> (root, when): forgotten later
        self.finishing: set[Path] = set()  # roots whose catch-up walk is done, files still queued
        self.sweeps: dict[Path, Sweep] = {}

    # --- what the loop asks -------------------------------------------------

    @property
    def busy(self) -> bool:
        """Is a walk or a sweep under way with work for the next pass?  (A sweep only
        waiting for its missing files' rename delay lets the loop sleep.)"""
        return bool(self.walks) or any(
            not s.looked_at_all and len(s.missing) < MAX_MISSING for s in self.sweeps.values()
        )

    def in_progress(self) -> int:
        """Walks, walks waiting for their files to settle, and sweeps (for status)."""
        return len(self.walks) + len(self.finishing) + len(self.sweeps)

    # --- what there is to do ---------------------------------------------------

    def walk_root(self, root: Path) -> None:
        """Walk a whole root; a sweep follows."""
        self.walks.append((root, walk(root, self.make_filter()), True))
        log.info("catch_up_started", root=root)

    def walk_directory(self, root: Path, directory: Path) -> None:
        """Walk a directory that appeared (created, or moved in)."""
        self.walks.append((root, walk(directory, self.make_filter()), False))

    def note_gone(self, path: Path, root: Path, now: float) -> None:
        """A path was deleted or moved away: forget it later, if it is not followed as a rename."""
        self.gone[path] = (root, now)

    # --- doing it, a slice per pass ----------------------------------------------

    def advance_walks(self, pending: dict[Path, Pending]) -> None:
        """Plan up to CATCH_UP_BATCH walked files for settling."""
        budget = CATCH_UP_BATCH
        while self.walks and budget and len(pending) < MAX_PENDING:
            root, walker, whole_root = self.walks[0]
            for path in walker:
                budget -= 1
                pending.setdefault(path, Pending(root, from_walk=True))
                if not budget:
                    break
            else:
                self.walks.popleft()
                if whole_root:
                    self.finishing.add(root)

    def finish_walks(self, pending: dict[Path, Pending], in_flight: Iterable[Path]) -> None:
        """Once every walked file was planned (so that files renamed meanwhile were
        followed, not forgotten), start the sweep that forgets files deleted while
        we were away."""
        flying = list(in_flight)
        for root in list(self.finishing):
            if any(p.from_walk and p.root == root for p in pending.values()) or any(
                path.is_relative_to(root) for path in flying
            ):
                continue
            self.finishing.discard(root)
            self.sweeps[root] = Sweep()

    def advance_sweeps(
        self,
        roots: dict[Path, RootState],
        check_roots: Callable[[], None],
        busy: frozenset[Path],
        forget: Callable[[Path], None],
        now: float,
        delay: float,
        poll_interval: float = 0.0,
    ) -> None:
        """Check up to SWEEP_BATCH indexed files of the sweeping roots; forget those
        gone once a rename had ``delay`` seconds to be followed (a file renamed while
        the sweep runs keeps its record and is not read again as new), and
        ``poll_interval`` more on a polled root, whose observer reports a rename up
        to one poll late.  The files forgotten count against the same budget."""
        budget = SWEEP_BATCH
        for root in list(self.sweeps):
            if budget <= 0:
                return
            # a root unmounted since this loop's check must not be taken as emptied
            check_roots()
            state = roots.get(root)
            if state is None or state.tripped:
                del self.sweeps[root]
                continue
            sweep = self.sweeps[root]
            wait = delay + (poll_interval if state.watch is not None and state.watch.polling else 0.0)
            due = list(itertools.islice(
                (p for p, when in sweep.missing.items() if now - when >= wait and p not in busy), budget
            ))  # fmt: skip
            budget -= len(due)
            if due:
                # still recorded under that path (not followed as a rename), and still missing
                lost = [p for path in due for _, p in self.store.ids_under(path) if missing(p)]
                if lost and not _still_there(state, check_roots):
                    del self.sweeps[root]
                    continue
                for path in due:
                    del sweep.missing[path]
                for path in lost:
                    forget(path)
                    sweep.forgotten += 1
            if not sweep.looked_at_all and len(sweep.missing) < MAX_MISSING:
                asked = budget
                rows = self.store.ids_under_after(root, sweep.after, asked)
                budget -= len(rows)
                sweep.looked_at_all = len(rows) < asked  # fewer than asked: the last of them
                if rows:
                    for path in [p for _, p in rows if p in busy]:
                        self.gone.setdefault(path, (root, now))  # looked at again after the move
                    began = time.monotonic()
                    faults.point("sweep.before_look")  # tests only: widen the window after the check
                    lost = [p for _, p in rows if p not in busy and missing(p)]
                    if lost and not _still_there(state, check_roots):
                        del self.sweeps[root]
                        continue
                    looked = now + time.monotonic() - began  # the delay counts from after the look, however long
                    for path in lost:
                        sweep.missing.setdefault(path, looked)
                    sweep.after = rows[-1][1]
            if sweep.looked_at_all and not sweep.missing:
                del self.sweeps[root]
                state.vouched = False
                log.info("catch_up_finished", root=root, forgotten=sweep.forgotten, indexed=self.store.count_under(root))

    def process_gone(
        self,
        now: float,
        delay: float,
        roots: dict[Path, RootState],
        check_roots: Callable[[], None],
        busy: frozenset[Path],
        forget: Callable[[Path], None],
        pending: dict[Path, Pending],
        in_flight: Container[Path],
    ) -> None:
        """Forget what was deleted or moved away, once a rename had its chance to be followed."""
        for path, (root, when) in list(self.gone.items()):
            if now - when < delay or path in busy:
                continue  # a file being moved is forgotten, if at all, once the move is recorded
            del self.gone[path]
            state = roots.get(root)
            if state is not None and state.tripped:
                continue  # a storm of deletes on a vanished share: forget nothing
            if os.path.lexists(path):
                if fileops.is_regular(path) and path not in pending and path not in in_flight:
                    # a file is there again: renamed over it, or swapped in (a restore
                    # over a symlink reports the path gone last); look at it
                    pending[path] = Pending(root, changed_at=now)
                continue
            lost = [p for _, p in self.store.ids_under(path) if missing(p)]  # a directory, or the file itself
            if lost and state is not None and not _still_there(state, check_roots):
                continue
            for p in lost:
                forget(p)


def _still_there(state: RootState, check_roots: Callable[[], None]) -> bool:
    """Look at the root again after finding files gone from it, before forgetting them.

    The files were looked for after the root was last checked: a root
    unmounted (or a directory mounted over it) in between made them look
    gone.  Checked again now, after the look, the breaker trips instead.
    """
    check_roots()
    return state.tripped is None
