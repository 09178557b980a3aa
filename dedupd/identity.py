"""One identity per file and per directory.

Paths are text, and text lies: a directory reached through a symlink, a bind
mount or a ``..`` has several spellings, and a file with two hard links has
two names.  This module is where that is settled, once:

* :func:`resolve` turns the configured roots, reference directories,
  quarantine, store and JSONL paths into real paths (symlinks resolved) and
  checks how they relate, refusing (``ConfigError``, exit 78, naming the key
  and the reason) what cannot work: the same directory as two roots under
  different names, a quarantine that is a root or holds one, a missing root
  or quarantine (when ``strict``), and two of them that are one place on
  disk under two names (a bind mount of a directory inside a root, found in
  the mount table, ``dedupd.mounts``).  A root inside another is merged into
  it; a quarantine inside a root is excluded from watching by its real path.
* :func:`changed` says whether a file is still the version that was
  fingerprinted: device, inode, size, mtime and ctime.  Callers add the
  content hash (``dedupd.actions`` re-hashes before every action).
* :func:`same_file` says whether two paths are one file (device and inode).
* :func:`within` says whether a path, its directory resolved, lies inside
  one of some directories: what restores use to refuse a target outside the
  roots after a parent was replaced by a symlink.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterable
from pathlib import Path

import structlog

from dedupd import mounts
from dedupd.config import Config
from dedupd.errors import ConfigError, display_path
from dedupd.models import Action, FileStat, Tier

log = structlog.get_logger()


def real(path: Path) -> Path:
    """``path`` with every symlink resolved (the part that exists), absolute, normalised."""
    return Path(os.path.realpath(path))


def real_parent(path: Path) -> Path:
    """``path`` with its directory resolved but not its last component (which may be a symlink)."""
    return real(path.parent) / path.name


def is_inside(path: Path, top: Path) -> bool:
    """Is ``path`` equal to ``top`` or below it?  Both must already be resolved."""
    return path == top or path.is_relative_to(top)


def within(path: Path, dirs: Iterable[Path]) -> Path | None:
    """The deepest of ``dirs`` (resolved) holding ``path`` once its directory is resolved, or None.

    A directory that does not exist yet is resolved through its nearest
    existing ancestor, so a symlink anywhere above still counts.
    """
    where = real_parent(path)
    best: Path | None = None
    for d in dirs:
        if is_inside(where, d) and (best is None or len(d.parts) > len(best.parts)):
            best = d
    return best


# --- files ----------------------------------------------------------------------


def changed(path: Path, recorded: FileStat, what: str = "the file", *, ctime: bool = True) -> str | None:
    """Why ``path`` is no longer the version recorded (device, inode, size, mtime, ctime), or None.

    ``ctime=False`` leaves ctime out: for checks that re-hash the content
    anyway, where a ctime moved by a rename, a chmod or a hard link (dedupd's
    own, while placing a copy) must not make a file untouchable for good.
    """
    try:
        now = FileStat.from_path(path)
    except OSError:
        return f"{what} is gone or is no longer a regular file"
    if now != recorded:
        return f"{what} changed since it was fingerprinted"
    if ctime and recorded.ctime_ns and now.ctime_ns != recorded.ctime_ns:
        return f"{what} was changed in place since it was fingerprinted (its ctime moved)"
    return None


def same_file(a: Path, b: Path) -> bool:
    """Are ``a`` and ``b`` one file (the same device and inode, symlinks not followed)?"""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# --- configured directories ----------------------------------------------------------


def resolve(config: Config, *, strict: bool, quarantine_needed: bool = False) -> Config:
    """The config with every path resolved and the directories checked together.

    ``strict`` (``run``, ``check-config``): roots, and the quarantine when an action moves files, must
    exist.  ``quarantine_needed`` (``scan``, which takes its roots from the command line): the
    quarantine must.  Otherwise only what exists is checked.
    """
    src = config.source
    roots = _resolve_roots(config.roots, strict=strict, source=src)
    quarantine = None
    if config.quarantine_dir is not None:
        quarantine = real(config.quarantine_dir)
        moves = any(config.actions.for_tier(t) is not Action.LOG for t in Tier)
        if (strict or quarantine_needed) and moves and not quarantine.is_dir():
            why = "does not exist" if not os.path.lexists(quarantine) else "is not a directory"
            raise ConfigError(
                f"{display_path(config.quarantine_dir)} {why} (create it first; dedupd never "
                "creates the directory it moves files into)",
                source=src,
                key="quarantine_dir",
            )
        for root in roots:
            if quarantine == root or _same_dir(quarantine, root):
                raise ConfigError(
                    f"{display_path(config.quarantine_dir)} is the watched root {display_path(root)}: "
                    "quarantined files would be watched and moved again",
                    source=src,
                    key="quarantine_dir",
                )
            if is_inside(root, quarantine):
                raise ConfigError(
                    f"{display_path(config.quarantine_dir)} holds the watched root {display_path(root)}",
                    source=src,
                    key="quarantine_dir",
                )
            if is_inside(quarantine, root):
                log.info("quarantine_inside_root", quarantine=quarantine, root=root,
                         note="excluded from watching by its real path")
    _check_on_disk(roots, quarantine, src)
    references = tuple(dict.fromkeys(real(d) for d in config.reference_dirs))
    if quarantine is not None:
        for ref in references:
            if is_inside(ref, quarantine) or is_inside(quarantine, ref):
                raise ConfigError(
                    f"{display_path(ref)} and the quarantine_dir overlap", source=src, key="reference_dirs"
                )
    return dataclasses.replace(
        config,
        roots=roots,
        reference_dirs=references,
        quarantine_dir=quarantine,
        db=real(config.db) if isinstance(config.db, Path) else config.db,
        audit_jsonl=None if config.audit_jsonl is None else real(config.audit_jsonl),
    )


def _resolve_roots(given: tuple[Path, ...], *, strict: bool, source: Path | None) -> tuple[Path, ...]:
    resolved: list[tuple[Path, Path]] = []  # (as given, real)
    for root in given:
        r = real(root)
        if not r.is_dir():
            if strict:
                why = "does not exist" if not os.path.lexists(r) else "is not a directory"
                raise ConfigError(f"{display_path(root)} {why}", source=source, key="roots")
            resolved.append((root, r))
            continue
        resolved.append((root, r))
    out: list[Path] = []
    for given_as, r in sorted(resolved, key=lambda pair: len(pair[1].parts)):
        outer = next((o for o in out if is_inside(r, o)), None)
        if outer is not None:
            if given_as != outer:
                log.warning("roots_merged", root=given_as, into=outer,
                            reason="the same directory as, or inside, another root once symlinks are resolved")
            continue
        twin = next((o for o in out if _same_dir(r, o)), None)
        if twin is not None:
            raise ConfigError(
                f"{display_path(given_as)} is the same directory as {display_path(twin)} under another "
                "name (a bind mount?): every file would be seen twice, as its own duplicate",
                source=source,
                key="roots",
            )
        out.append(r)
    return tuple(sorted(out))


def _check_on_disk(roots: tuple[Path, ...], quarantine: Path | None, source: Path | None) -> None:
    """Refuse two configured directories that are one place on disk under two names.

    A bind mount shows a directory at a second path: neither name is inside
    the other, and the mounted directory has another device and inode than
    any directory the first name reaches only when it is the very directory
    compared.  The mount table says which directory of which device each
    mount shows (``dedupd.mounts``).
    """
    table = mounts.read()
    if not table:
        return
    places = [(r, mounts.on_disk(r, table)) for r in roots]
    for (a, pa), (b, pb) in itertools.combinations(places, 2):
        if pa is None or pb is None:
            continue
        if pa.holds(pb) or pb.holds(pa):
            (outer, po), (inner, pi) = ((a, pa), (b, pb)) if pa.holds(pb) else ((b, pb), (a, pa))
            where = "is" if po.path == pi.path else "is inside"
            raise ConfigError(
                f"{display_path(inner)} {where} the watched root {display_path(outer)} on disk, under another "
                f"name: a bind mount at {display_path(pi.mount_point)} shows {pi.path} of device {pi.device}; "
                "every file there would be seen twice, as its own duplicate",
                source=source,
                key="roots",
            )
    if quarantine is None:
        return
    pq = mounts.on_disk(quarantine, table)
    if pq is None:
        return
    for root, pr in places:
        if pr is None or is_inside(quarantine, root):
            continue  # inside by name: excluded from watching by its real path
        if pr.holds(pq) or pq.holds(pr):
            raise ConfigError(
                f"{display_path(quarantine)} and the watched root {display_path(root)} overlap on disk "
                f"(a bind mount at {display_path(pq.mount_point if pr.holds(pq) else pr.mount_point)}): "
                "quarantined files would be watched and moved again",
                source=source,
                key="quarantine_dir",
            )


def _same_dir(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
