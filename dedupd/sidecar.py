"""The record each quarantined file carries beside it: ``NAME.dedupd.json``.

The store is the main record of every move, but a store can be lost (a
deleted WAL, a corrupt file, a disk swapped).  So before a move completes,
a small JSON record is written beside the quarantined copy: where the file
came from, its watched root, its original, the hashes and the intent.
``dedupd restore --from-quarantine DIR`` puts files back from these records
alone.

Paths are stored as text with undecodable bytes kept as surrogate escapes
(``os.fsdecode``), which JSON holds exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import structlog

from dedupd.fileops import NAME_MAX, fsync_dir, temp_name

log = structlog.get_logger()

SUFFIX = ".dedupd.json"
VERSION = 1


@dataclass(frozen=True)
class QuarantineRecord:
    """What a quarantined file needs to go home without the store."""

    file: str  # the quarantined file's name, in the record's directory
    path: str  # where it came from
    root: str | None  # the watched root it was under
    action: str  # quarantine or symlink
    sha256: str
    original: str | None
    original_sha256: str | None
    link_target: str | None  # for symlink: what the link at ``path`` points to
    intent_id: int  # the store maps it to the audit row of the move
    audit_id: int | None  # known only when the record is adopted from a lost store
    at: float
    version: int = VERSION
    #: the original's host, in a store several hosts share (None: this host's;
    #: records written before hosts have no such key)
    original_host: str | None = None


_FIELDS = frozenset(f.name for f in fields(QuarantineRecord))


def record_path(quarantined: Path) -> Path:
    """Where the record of ``quarantined`` lives: beside it, its name within NAME_MAX bytes."""
    raw = os.fsencode(quarantined.name)
    if len(raw) + len(SUFFIX) <= NAME_MAX:
        return quarantined.with_name(quarantined.name + SUFFIX)
    tag = hashlib.sha256(raw).hexdigest()[:12]
    short = os.fsdecode(raw[: NAME_MAX - len(SUFFIX) - 13])
    return quarantined.with_name(f"{short}~{tag}{SUFFIX}")


def is_record(path: Path) -> bool:
    return path.name.endswith(SUFFIX)


def _encode(record: QuarantineRecord) -> bytes:
    return json.dumps(asdict(record), indent=1, sort_keys=True).encode()


def write(quarantined: Path, record: QuarantineRecord) -> Path:
    """Write the record of ``quarantined``; returns its path.

    Written in place (no temporary name that a crash could strand), before the
    copy is placed: a crash while writing leaves a record that does not parse,
    which :func:`read` ignores and the intent's roll-back removes.
    """
    target = record_path(quarantined)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = _encode(record)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(target.parent)
    return target


def read(path: Path) -> QuarantineRecord | None:
    """The record at ``path``, or None when it is not a readable record of ours."""
    try:
        data: Any = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return None
    try:
        # keys a later dedupd adds (optional ones, the version unchanged) are left aside
        return QuarantineRecord(**{k: v for k, v in data.items() if k in _FIELDS})
    except TypeError:
        return None


def remove(quarantined: Path, intent_id: int | None = None, *, sync: bool = True) -> None:
    """Remove the record of ``quarantined`` (only if it is this intent's, when one is given).

    ``sync`` False: its directory is left for the caller to sync (once for several files)."""
    target = record_path(quarantined)
    if intent_id is not None:
        found = read(target)
        if found is not None and found.intent_id != intent_id:
            return
    try:
        os.unlink(target)
    except FileNotFoundError:
        return
    if sync:
        fsync_dir(target.parent)


def walk(top: Path) -> Iterator[tuple[Path, QuarantineRecord]]:
    """Every record under ``top`` with the quarantined file it describes, in sorted order."""
    for dirpath, dirnames, names in os.walk(top):
        dirnames.sort()
        for name in sorted(names):
            p = Path(dirpath) / name
            if is_record(p):
                rec = read(p)
                if rec is not None:
                    yield p.with_name(rec.file), rec


def renumber(top: Path, ids_for: Callable[[Path, QuarantineRecord], tuple[int, int | None] | None]) -> int:
    """Point the records under ``top`` at their moves' ids in another store, as
    ``ids_for(quarantined, record)`` gives them (intent id, audit id; None: not
    known there, left as it is).  ``dedupd migrate`` into a store other hosts
    share moves every id past theirs.  Each changed record is written under a
    private name (with the old record's owner and mode) and renamed over the old
    one: a crash leaves one or the other, whole.  A record that cannot be
    rewritten keeps its old ids and is named in the log.  Returns how many changed."""
    changed = 0
    for quarantined, rec in walk(top):
        ids = ids_for(quarantined, rec)
        if ids is None or ids == (rec.intent_id, rec.audit_id):
            continue
        target = record_path(quarantined)
        fresh = temp_name(target)
        data = _encode(replace(rec, intent_id=ids[0], audit_id=ids[1]))
        try:
            old = os.lstat(target)
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                    # the daemon's user rewrites it later (a relink); only root may give it back
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, old.st_uid, old.st_gid)
                os.fchmod(fd, stat.S_IMODE(old.st_mode))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(fresh, target)
            fsync_dir(target.parent)
        except OSError as exc:
            if os.path.lexists(fresh):
                os.unlink(fresh)
            log.warning("quarantine_record_not_renumbered", record=target, intent_id=ids[0],
                        error=exc.strerror or str(exc))  # fmt: skip
            continue
        changed += 1
    return changed
