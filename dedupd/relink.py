"""Symlinks that stay valid when their original goes.

The ``symlink`` action leaves, at a duplicate's path, a symlink to its
original, and the duplicate's bytes in quarantine.  When that original is
then deleted, or moved out of the watched roots, every such symlink
dangles and the picture survives only in quarantine.  :func:`original_gone`
repairs that: the quarantined copy of the first symlink (the oldest move)
is put back in that symlink's place (through :func:`dedupd.restore.put_home`,
so with an intent, a verified copy and an audit row), and every other
symlink to the gone original is re-pointed at it.  When the original was
renamed inside a root, :func:`original_renamed` re-points its symlinks at
the new path.  Each repair is a warning in the log and rows in the audit.

Only symlinks dedupd made and that are still its own (the link at the path
holds exactly the text it wrote) are touched; a link a person replaced or
removed is left alone.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from dedupd import fileops, sidecar
from dedupd.actions import link_text
from dedupd.audit import Audit, Intent
from dedupd.config import Config
from dedupd.errors import display_path
from dedupd.restore import Home, put_home
from dedupd.store import AnyStore

log = structlog.get_logger()


@dataclass(frozen=True)
class Repair:
    """What was done for one gone original."""

    original: Path
    restored: Path | None  # the symlink's path that holds the picture again
    relinked: tuple[Path, ...]  # symlinks now pointing at ``restored`` (or at the renamed original)
    failed: tuple[Path, ...]  # symlinks that could not be repaired (left as they were, in the log)


def _links_to(store: AnyStore, audit: Audit, original: Path) -> list[Intent]:
    """Completed symlink moves whose original is ``original`` and whose link is still ours."""
    out = []
    for row in store.intent_rows(state="done", original=original):
        intent = audit.intent(int(row[0]))
        if intent is not None and intent.action == "symlink" and fileops.is_our_symlink(intent.path, intent.link_target):
            out.append(intent)
    return out


def original_gone(store: AnyStore, config: Config, original: Path, *, roots: tuple[Path, ...] = ()) -> Repair | None:
    """``original`` is gone: put its first symlink's copy back there and re-point the others.

    None when no symlink of ours points at it (or something is at its path again).
    """
    audit = Audit(store, config.audit_jsonl)
    links = _links_to(store, audit, original)
    if not links or os.path.lexists(original):
        return None
    failed: list[Path] = []
    restored: Intent | None = None
    for candidate in links:  # the oldest whose copy can go back
        home = Home.of_move(candidate, candidate.audit_id)
        result = put_home(
            store, audit, home, roots=roots, by_person=False,
            reason=f"its original {display_path(original)} is gone; put back in place of its symlink",
        )  # fmt: skip
        if result.ok:
            restored = candidate
            break
        failed.append(candidate.path)
    if restored is None:
        log.error("original_gone_links_left", original=original, links=[str(p) for p in failed],
                  note="no quarantined copy could be put back; the symlinks dangle, the copies are in quarantine")
        return Repair(original, None, (), tuple(failed))
    others = [other for other in links if other.id != restored.id and other.path not in failed]
    relinked, left = _repoint_all(store, audit, config, others, restored.path, restored.sha256,
                                  f"its original {display_path(original)} is gone; now points at "
                                  f"{display_path(restored.path)}, the copy put back in its place")
    failed += left
    log.warning("original_gone_links_repaired", original=original, restored=restored.path,
                relinked=[str(p) for p in relinked], failed=[str(p) for p in failed])
    return Repair(original, restored.path, tuple(relinked), tuple(failed))


def original_renamed(store: AnyStore, config: Config, old: Path, new: Path) -> Repair | None:
    """``old`` was renamed to ``new`` inside a root: re-point the symlinks to it."""
    audit = Audit(store, config.audit_jsonl)
    links = _links_to(store, audit, old)
    if not links:
        return None
    # the same bytes at a new name: each link keeps the content it names
    relinked, failed = _repoint_all(store, audit, config, links, new, None,
                                    f"its original was renamed from {display_path(old)} to {display_path(new)}")
    log.warning("original_renamed_links_repaired", original=new, old=old,
                relinked=[str(p) for p in relinked], failed=[str(p) for p in failed])
    return Repair(new, None, tuple(relinked), tuple(failed))


def original_moved(
    store: AnyStore, config: Config, moved: Path, new_original: Path, new_sha: str | None, *,
    here: bool = True, roots: tuple[Path, ...] = (),
) -> Repair | None:
    """``moved`` was the original of symlinks dedupd made, and was itself moved away
    (quarantined, or replaced by a symlink) as a copy of ``new_original``: a better
    copy took its place.  Its symlinks are re-pointed at ``new_original``, so none
    dangles and none leads through another link.  ``here`` False (the new original
    is another host's, which a symlink cannot reach): the first link's copy is put
    back instead, as when an original is gone."""
    if not here:
        return original_gone(store, config, moved, roots=roots)
    audit = Audit(store, config.audit_jsonl)
    links = _links_to(store, audit, moved)
    if not links:
        return None
    relinked, failed = _repoint_all(store, audit, config, links, new_original, new_sha,
                                    f"its original {display_path(moved)} was moved away as a copy of "
                                    f"{display_path(new_original)}; now points there")
    log.warning("original_moved_links_repaired", original=new_original, moved=moved,
                relinked=[str(p) for p in relinked], failed=[str(p) for p in failed])
    return Repair(new_original, None, tuple(relinked), tuple(failed))


def _repoint_all(
    store: AnyStore, audit: Audit, config: Config, links: list[Intent], target: Path, target_sha: str | None,
    why: str,
) -> tuple[list[Path], list[Path]]:
    """:func:`_repoint` each of ``links`` at ``target`` (``target_sha`` None: the
    content each link names already); the links re-pointed, and those left."""
    relinked, failed = [], []
    for link in links:
        if _repoint(store, audit, config, link, target, target_sha or link.original_sha256, why):
            relinked.append(link.path)
        else:
            failed.append(link.path)
    return relinked, failed


def _repoint(store: AnyStore, audit: Audit, config: Config, intent: Intent, target: Path, target_sha: str | None,
             why: str) -> bool:
    """Swap the symlink of ``intent`` for one to ``target``, atomically, only while it is ours.

    The move's intent and its quarantine record then name the new link and
    original, so that a later restore still recognises the link as its own.
    """
    text = link_text(target, intent.path, config.symlink)
    tmp = fileops.temp_name(intent.path)
    try:
        os.symlink(text, tmp)
        if fileops.exchange(tmp, intent.path):
            if not fileops.is_our_symlink(tmp, intent.link_target):
                fileops.exchange(tmp, intent.path)  # someone replaced our link meanwhile: theirs goes back
                os.unlink(tmp)
                return False
            os.unlink(tmp)
        elif fileops.is_our_symlink(intent.path, intent.link_target):
            os.replace(tmp, intent.path)  # replaces only our own symlink (checked just above)
        else:
            os.unlink(tmp)
            return False
        fileops.fsync_dir(intent.path.parent)
    except OSError as exc:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        log.error("relink_failed", path=intent.path, target=target, error=exc.strerror or str(exc))
        return False
    with store.atomic():
        store.intent_update(intent.id, {
            "link_target": os.fsencode(text), "original": os.fsencode(target), "original_sha256": target_sha,
        })  # fmt: skip
        audit.append(action="relink", outcome="done", path=intent.path, original=target, sha256=intent.sha256,
                     original_sha256=target_sha, destination=intent.destination, detail=why)
    record = sidecar.read(sidecar.record_path(intent.destination))
    if record is not None and record.intent_id == intent.id:
        sidecar.write(intent.destination, dataclasses.replace(
            record, link_target=os.fsdecode(text), original=os.fsdecode(target), original_sha256=target_sha,
        ))  # fmt: skip
    return True
