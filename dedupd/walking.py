"""Which files dedupd looks at, and how a tree is walked.

Pure file-system helpers shared by the one-shot scan, the daemon and the
watcher (which imports this, never the pipeline).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import structlog

from dedupd.config import Config

log = structlog.get_logger()




class Filter:
    """Include/exclude patterns on file and directory names (case-insensitive)."""

    def __init__(self, config: Config, extra_never: tuple[Path, ...] = ()) -> None:
        self.include = tuple(p.lower() for p in config.include)
        self.exclude = tuple(p.lower() for p in config.exclude)
        self.never = tuple(
            p for p in (config.quarantine_dir, config.db, config.audit_jsonl, *extra_never) if isinstance(p, Path)
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
