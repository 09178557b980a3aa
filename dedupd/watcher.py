"""Filesystem events in, queued work out.  Nothing else happens here.

The watchdog handler runs on the observer's thread: it filters events and
puts small frozen values on a bounded queue; it never blocks, never does
I/O and never raises (an exception would kill the observer thread).  If the
queue is full the root is flagged for a rescan instead.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from dedupd.walking import Filter

log = structlog.get_logger()

#: filesystem types on which inotify does not see changes made by other machines
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "lustre",
     "gpfs", "beegfs", "davfs", "ncpfs", "virtiofs", "vboxsf", "vmhgfs"}
)  # fmt: skip


class Kind(enum.Enum):
    CREATED = "created"  # appeared (created, hard-linked, renamed in): settle, then handle
    CHANGED = "changed"  # written: wait for the close, or settle
    CLOSED = "closed"  # closed after writing: complete
    GONE = "gone"  # deleted or moved away
    DIRECTORY = "directory"  # a directory appeared: walk it
    RESCAN = "rescan"  # events were lost: reconcile the root


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    path: Path
    root: Path


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` lives on, from /proc/self/mountinfo."""
    best, best_type = "", "unknown"
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5:
                    continue
                mount = fields[4].replace("\\040", " ")
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, best_type = mount, right.split()[0]
    except OSError:
        pass
    return best_type


def wants_polling(root: Path, setting: bool | None) -> tuple[bool, str]:
    """Whether to poll ``root``, and why, in words."""
    fstype = filesystem_type(root)
    if setting is True:
        return True, f"polling: forced by config (filesystem {fstype})"
    if setting is False:
        return False, f"inotify: forced by config (filesystem {fstype})"
    if fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse"):
        return True, f"polling: {fstype} is a network or FUSE filesystem, inotify misses remote changes"
    return False, f"inotify: local filesystem {fstype}"


class Handler(FileSystemEventHandler):
    """Turns watchdog events into :class:`Event` values on a bounded queue."""

    def __init__(self, root: Path, filt: Filter, out: queue.Queue[Event], overflow: threading.Event) -> None:
        self.root = root
        self.filt = filt
        self.out = out
        self.overflow = overflow

    def _put(self, kind: Kind, raw: str | bytes) -> None:
        path = Path(os.fsdecode(raw))
        try:
            self.out.put_nowait(Event(kind, path, self.root))
        except queue.Full:
            self.overflow.set()

    def _file_wanted(self, raw: str | bytes) -> bool:
        return self.filt.wanted_path(Path(os.fsdecode(raw)), self.root)

    def _dir_wanted(self, raw: str | bytes) -> bool:
        path = Path(os.fsdecode(raw))
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return False
        return not any(self.filt.excluded_name(p) for p in parts) and not self.filt.inside_never(path)

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # noqa: BLE001 - an exception here would kill the observer thread
            log.exception("event_handler_failed", event=repr(event))
            self.overflow.set()

    def _dispatch(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if event.is_directory:
            if kind == "created" and self._dir_wanted(event.src_path):
                self._put(Kind.DIRECTORY, event.src_path)
            elif kind == "moved":
                if self._dir_wanted(event.src_path):
                    self._put(Kind.GONE, event.src_path)
                if self._dir_wanted(event.dest_path):
                    self._put(Kind.DIRECTORY, event.dest_path)
            elif kind == "deleted":
                self._put(Kind.GONE, event.src_path)
            return
        if kind in ("created", "modified"):
            if self._file_wanted(event.src_path):
                self._put(Kind.CREATED if kind == "created" else Kind.CHANGED, event.src_path)
        elif kind == "closed":
            if self._file_wanted(event.src_path):
                self._put(Kind.CLOSED, event.src_path)
        elif kind == "deleted":
            self._put(Kind.GONE, event.src_path)
        elif kind == "moved":
            # a rename within the root, or a temporary name renamed into place
            self._put(Kind.GONE, event.src_path)
            if self._file_wanted(event.dest_path):
                self._put(Kind.CLOSED, event.dest_path)


class _OverflowLog(logging.Handler):
    """watchdog reports a kernel queue overflow only in a log message; listen for it."""

    def __init__(self, flag: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self.flag = flag

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.flag.set()


def listen_for_overflow(flag: threading.Event) -> logging.Handler:
    """Set ``flag`` whenever watchdog reports lost events; returns the handler to remove later."""
    handler = _OverflowLog(flag)
    logging.getLogger("watchdog").addHandler(handler)
    return handler


@dataclass
class Watch:
    root: Path
    observer: BaseObserver
    polling: bool
    why: str


def start_watch(
    root: Path,
    filt: Filter,
    out: queue.Queue[Event],
    overflow: threading.Event,
    *,
    polling: bool | None,
    poll_interval: float,
) -> Watch:
    """Start a recursive observer on ``root``: inotify, or polling where inotify cannot see."""
    use_polling, why = wants_polling(root, polling)
    handler = Handler(root, filt, out, overflow)
    observer: BaseObserver
    if not use_polling:
        observer = Observer()
        try:
            observer.schedule(handler, str(root), recursive=True)
            observer.start()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            sysctl = "fs.inotify.max_user_watches" if exc.errno == errno.ENOSPC else "fs.inotify.max_user_instances"
            log.error(
                "inotify_limit_reached",
                root=root,
                error=str(exc),
                fix=f"raise the limit: sysctl -w {sysctl}=<larger> (and persist it in /etc/sysctl.d/)",
                fallback="polling this root instead",
            )
            try:
                observer.stop()
            except RuntimeError:
                pass
            use_polling, why = True, f"polling: inotify limit reached ({sysctl})"
    if use_polling:
        observer = PollingObserver(timeout=poll_interval)
        observer.schedule(handler, str(root), recursive=True)
        observer.start()
    log.info("watching", root=root, observer="polling" if use_polling else "inotify", why=why)
    return Watch(root, observer, use_polling, why)


def stop_watch(watch: Watch) -> None:
    watch.observer.stop()
    watch.observer.join(timeout=10)
