"""Before the daemon starts: can it read every root and write where it must?

``dedupd run`` calls :func:`check` once, before it opens the store; ``dedupd
reload`` calls it on the new configuration before it signals the daemon.  A
problem found here is a :class:`~dedupd.errors.ConfigError` (exit 78) that
names the path, so systemd's ``RestartPreventExitStatus=78`` stops instead of
restarting a daemon that would fail the same way five seconds later, and the
first duplicate does not fail with "Read-only file system" hours after a start
that looked fine.

The answer comes from access(2), which applies the process's user, groups and
ACLs and refuses writes on read-only mounts, as systemd's ``ProtectSystem=strict``
makes everything outside ``ReadWritePaths=`` and the state directory.  Nothing
is created or written to find out: the roots are other people's photo
directories, and a probe file would change their modification time.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dedupd.config import Config
from dedupd.errors import ConfigError, display_path
from dedupd.models import Action, StoreLocation

READ = os.R_OK | os.X_OK  # list a directory and open what is in it
WRITE = os.W_OK | os.X_OK  # create, rename and remove entries in a directory


@dataclass(frozen=True)
class Problem:
    """One path the daemon cannot use as the configuration asks."""

    key: str  # the config key that names the path
    path: Path
    why: str

    def __str__(self) -> str:
        return f"{self.key} {display_path(self.path)}: {self.why}"


def check(config: Config, db_path: StoreLocation) -> None:
    """Raise a ConfigError naming every path the daemon cannot read or write as it must."""
    found = list(problems(config, db_path))
    if found:
        raise ConfigError(
            f"for {_whoami()}: " + "; ".join(str(p) for p in found),
            source=config.source,
            key=found[0].key,
        )


def problems(config: Config, db_path: StoreLocation) -> Iterator[Problem]:
    """Every path the daemon cannot use: unreadable roots, unwritable store, quarantine or log."""
    moves = any(
        action is not Action.LOG
        for action in (config.actions.exact, config.actions.pixel, config.actions.near)
    )
    for root in config.roots:
        why = _directory(root, READ, "read")
        if why is None and moves:
            why = _directory(root, WRITE, "write", hint="quarantine and symlink move files out of it")
        if why:
            yield Problem("roots", root, why)
    if moves and config.quarantine_dir is not None:
        why = _creatable_directory(config.quarantine_dir)
        if why:
            yield Problem("quarantine_dir", config.quarantine_dir, why)
    why = _writable_file(db_path) if isinstance(db_path, Path) else None  # PostgreSQL: checked on connecting
    if why and isinstance(db_path, Path):
        yield Problem("db", db_path, why)
    if config.audit_jsonl is not None:
        why = _writable_file(config.audit_jsonl)
        if why:
            yield Problem("audit_jsonl", config.audit_jsonl, why)


def _directory(path: Path, mode: int, verb: str, hint: str = "") -> str | None:
    """Why ``path`` is not a directory this process may ``verb`` (None if it is)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return _unreachable(exc)
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if os.access(path, mode):
        return None
    why = _refused(path, verb)
    return f"{why} ({hint})" if hint else why


def _creatable_directory(path: Path) -> str | None:
    """Why ``path`` is neither a writable directory nor one that can be made (None if fine)."""
    try:
        parent = _existing_ancestor(path)
    except OSError as exc:
        return _unreachable(exc)
    if parent == path:
        return _directory(path, WRITE, "write")
    if not parent.is_dir():
        return f"does not exist, and {display_path(parent)} is not a directory"
    if os.access(parent, WRITE):
        return None
    return f"does not exist, and cannot be made in {display_path(parent)}: {_refused(parent, 'write')}"


def _writable_file(path: Path) -> str | None:
    """Why the file ``path`` (and files beside it: SQLite's -wal, -shm) cannot be written."""
    try:
        exists = _existing_ancestor(path) == path
    except OSError as exc:
        return _unreachable(exc)
    if exists:
        if path.is_dir():
            return "a directory, not a file"
        if not os.access(path, os.R_OK | os.W_OK):
            return _refused(path, "write")
    why = _creatable_directory(path.parent)
    return f"its directory {display_path(path.parent)}: {why}" if why else None


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself if it exists (as anything, even a dangling symlink), else its nearest
    existing parent; OSError if that cannot be told (a parent that may not be searched)."""
    for candidate in (path, *path.parents):
        try:
            os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a parent is a file
            continue
        return candidate
    return Path(path.anchor or "/")


def _unreachable(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "does not exist"
    if exc.errno == errno.EACCES:
        return "no permission to reach it (a parent directory may not be searched)"
    return exc.strerror or str(exc)


def _refused(path: Path, verb: str) -> str:
    """The reason access(2) refused: a read-only mount, or the permissions."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only and verb == "write":
        return "read-only file system here (under systemd: not in the unit's ReadWritePaths=)"
    return f"no permission to {verb} it"


def _whoami() -> str:
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
