"""Where a directory lives on disk: the mount table, read from /proc/self/mountinfo.

Two paths can be the same directory on disk without either being inside the
other by name: a bind mount shows a directory of one filesystem at a second
place.  Resolving symlinks (``identity.real``) does not see through a bind
mount, and comparing device and inode only catches a mount of the very
directory compared.  The mount table does: each mount says which device it
belongs to and which directory of that device it shows (its *root*), so a
path's place on disk is that device and the mount's root joined with the
rest of the path.  Two such places on one device, one inside the other, are
the same files under two names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MOUNTINFO = Path("/proc/self/mountinfo")

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: a device, the directory of it shown (``root``), and where."""

    device: str  # major:minor
    root: PurePosixPath  # the directory of the device this mount shows
    mount_point: Path


@dataclass(frozen=True)
class OnDisk:
    """A directory's place on disk: its device and its path within that device."""

    device: str
    path: PurePosixPath
    mount_point: Path

    def holds(self, other: OnDisk) -> bool:
        """Is ``other`` this directory or one below it, on the same device?"""
        return self.device == other.device and (self.path == other.path or other.path.is_relative_to(self.path))


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse(text: str) -> list[Mount]:
    """The mounts of a mountinfo text, in the order listed (later mounts over earlier ones)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        mounts.append(Mount(fields[2], PurePosixPath(_unescape(fields[3])), Path(_unescape(fields[4]))))
    return mounts


def read(source: Path = MOUNTINFO) -> list[Mount] | None:
    """This process's mounts, or None where there is no mountinfo to read."""
    try:
        return parse(source.read_text(encoding="utf-8", errors="surrogateescape"))
    except OSError:
        return None


def on_disk(path: Path, mounts: list[Mount]) -> OnDisk | None:
    """Where the resolved directory ``path`` is on disk: the last-listed mount holding it."""
    best: Mount | None = None
    for m in mounts:
        if path == m.mount_point or path.is_relative_to(m.mount_point):
            # the deepest mount point wins; at the same point, the one mounted last
            if best is None or len(m.mount_point.parts) >= len(best.mount_point.parts):
                best = m
    if best is None:
        return None
    rest = path.relative_to(best.mount_point)
    return OnDisk(best.device, best.root.joinpath(*rest.parts), best.mount_point)
