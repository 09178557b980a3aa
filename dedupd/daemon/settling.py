"""Settling: when a file is complete enough to read.

Complete means: no event and no change of size, mtime or ctime for the
settle time after the last write and the LAST close (a file appended in
chunks, closed after each, is not complete after the first); a file written
but not yet closed (inotify) waits up to :data:`OPEN_WRITE_TIMEOUT`.  Any
change seen restarts the clock.  A file found by a catch-up walk and
untouched for longer than the settle time is complete at once.

Pure: the times and the stats are given, nothing is read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dedupd.models import FileStat

#: a file written (an inotify modify) but never closed is taken as still being
#: written for this long; after that, a writer that died is assumed
OPEN_WRITE_TIMEOUT = 300.0


@dataclass
class Pending:
    """A file waiting to be complete: its size and mtime must hold still."""

    root: Path  # the watched root it was found under
    changed_at: float = 0.0  # monotonic time of the last change seen
    seen: FileStat | None = None  # what the last look saw
    closed_at: float | None = None  # monotonic time of the last close-after-write
    from_walk: bool = False  # found by a catch-up walk rather than an event
    open_for_write: bool = False  # written, and the observer has not seen it closed yet
    seen_ctime: int | None = None  # st_ctime_ns at the last look: a metadata change restarts the clock

    def on_event(self, *, closed: bool, written: bool, inotify: bool, now: float) -> None:
        """An observer event: a close after writing, or a change (``written``: its content)."""
        self.from_walk = False
        if closed:
            self.closed_at = now
            self.open_for_write = False
        else:
            self.closed_at = None
            self.changed_at = now
            if written:
                # inotify reports close-after-write: until it does, the writer is still at it
                self.open_for_write = inotify

    def complete(self, st: FileStat, ctime_ns: int, *, now: float, wall_now: float, settle: float) -> bool:
        """Look at the file as it is now (``st``, its ctime): is it complete?

        ``now`` is monotonic, ``wall_now`` the wall clock (to compare with mtime).
        """
        if st != self.seen or ctime_ns != self.seen_ctime:
            first = self.seen is None
            self.seen, self.seen_ctime = st, ctime_ns
            written_before = wall_now - st.mtime_ns / 1e9 >= settle
            if first and self.from_walk and written_before:
                self.changed_at = now - settle  # found by a walk, untouched for a while
            else:
                self.changed_at = now
                return False
        last = max(self.changed_at, self.closed_at or 0.0)
        return now - last >= (OPEN_WRITE_TIMEOUT if self.open_for_write else settle)
