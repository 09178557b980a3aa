"""Undo: put a quarantined file back where it was, byte-identical, never over another file.

Every step is inside an intent, so a kill anywhere leaves no stray file and
running the restore again finishes the job:

1. checks: the quarantined copy still hashes to its recorded SHA-256; the
   target's directory, with symlinks resolved, lies inside the file's
   watched root (a parent replaced by a symlink to elsewhere is refused);
   nothing but our own symlink is at the target;
2. an intent naming the private name the copy is placed at is committed,
   with the pair marked "not duplicates" and the file marked as kept, so
   that a running daemon does not act on it again when it reappears
   (whichever group it joins then; ``dedupd ignores remove ID`` lifts it);
3. the copy is placed at the private name beside the target (a hard link,
   or a copy verified by SHA-256);
4. it is renamed onto the target without replacing anything
   (``RENAME_NOREPLACE``), or swapped atomically with our own symlink;
5. the quarantined copy and its record are removed, and the audit row is
   committed.

``--from-quarantine`` restores from the records beside quarantined files
(``dedupd.sidecar``) when the store that knew about them is lost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from dedupd import faults, fileops, identity, sidecar
from dedupd.audit import Audit, AuditRow, Intent
from dedupd.errors import ActionError, display_path
from dedupd.models import FileStat
from dedupd.store import AnyStore

log = structlog.get_logger()


@dataclass(frozen=True)
class RestoreResult:
    audit_id: int | None
    path: Path | None
    ok: bool
    detail: str


@dataclass(frozen=True)
class Home:
    """Where a quarantined file goes back to, and what it must be."""

    quarantined: Path
    target: Path
    root: Path | None
    sha256: str
    original: Path | None
    original_sha256: str | None
    link_target: Path | None
    move_intent: int | None  # the store's intent of the move, when the store knows it
    audit_id: int | None

    @classmethod
    def of_move(cls, intent: Intent, audit_id: int | None) -> Home:
        """Where the move ``intent`` took a file from, to put it back there."""
        return cls(
            quarantined=intent.destination,
            target=intent.path,
            root=intent.root,
            sha256=intent.sha256,
            original=intent.original,
            original_sha256=intent.original_sha256,
            link_target=intent.link_target,
            move_intent=intent.id,
            audit_id=audit_id,
        )


def restore(
    store: AnyStore,
    audit: Audit,
    row: AuditRow,
    *,
    roots: tuple[Path, ...] = (),
    dry_run: bool = False,
    decided_by: str | None = None,
) -> RestoreResult:
    """Restore the file of one audited move; ``decided_by`` (``cli``, a user agent) goes into the audit."""
    if row.action not in ("quarantine", "symlink") or row.outcome != "done" or row.intent_id is None:
        return _refuse(row.id, row.path, "not a completed move: nothing to restore")
    intent = audit.intent_for_audit(row.id)
    if intent is None:
        return _refuse(row.id, row.path, "no record of where the file went")
    if intent.state == "restored":
        return _refuse(row.id, row.path, "already restored")
    home = Home.of_move(intent, row.id)
    return put_home(store, audit, home, roots=roots, dry_run=dry_run, decided_by=decided_by)


def restore_from_quarantine(
    store: AnyStore, audit: Audit, top: Path, *, roots: tuple[Path, ...] = (), dry_run: bool = False
) -> list[RestoreResult]:
    """Restore every file under ``top`` that has a quarantine record, without the store's help."""
    out = []
    for quarantined, rec in sidecar.walk(top):
        home = Home(
            quarantined=quarantined,
            target=Path(os.fsdecode(rec.path)),
            root=None if rec.root is None else Path(rec.root),
            sha256=rec.sha256,
            original=None if rec.original is None else Path(rec.original),
            original_sha256=rec.original_sha256,
            link_target=None if rec.link_target is None else Path(rec.link_target),
            move_intent=None,
            audit_id=rec.audit_id,
        )
        # the store may still know this move (it was only the records that were asked for)
        if rec.audit_id is not None:
            known = audit.intent_for_audit(rec.audit_id)
            if known is not None and known.destination == quarantined and known.sha256 == rec.sha256:
                if known.state == "restored":
                    continue
                home = Home(**{**home.__dict__, "move_intent": known.id})
        out.append(put_home(store, audit, home, roots=roots, dry_run=dry_run))
    return out


def _refuse(audit_id: int | None, path: Path | None, detail: str) -> RestoreResult:
    log.warning("restore_refused", audit_id=audit_id, path=path, reason=detail)
    return RestoreResult(audit_id, path, False, detail)


def _outside(home: Home, roots: tuple[Path, ...]) -> str | None:
    """Why the target may not be written to, or None.  Its directory is resolved first."""
    target = home.target
    if home.root is not None:
        if identity.real(home.root) != home.root:
            return f"its root {display_path(home.root)} is now reached through a symlink: not written to"
        allowed: tuple[Path, ...] = (home.root,)
    else:
        allowed = tuple(identity.real(r) for r in roots)
    if allowed:
        if identity.within(target, allowed) is None:
            return (f"{display_path(target.parent)} now resolves to {display_path(identity.real(target.parent))}, "
                    "outside the watched roots: not written to")
        return None
    # no root known: the directory must be reached without a symlink at all
    if identity.real(target.parent) != Path(os.path.normpath(target.parent)):
        return f"{display_path(target.parent)} is reached through a symlink: not written to"
    return None


def put_home(
    store: AnyStore,
    audit: Audit,
    home: Home,
    *,
    roots: tuple[Path, ...] = (),
    dry_run: bool = False,
    by_person: bool = True,
    reason: str | None = None,
    decided_by: str | None = None,
) -> RestoreResult:
    """Put ``home.quarantined`` back at ``home.target``; see the module docstring for the steps.

    ``by_person`` False (dedupd repairing the symlinks of a deleted original)
    records no decision: the file is not a person's choice, only a copy put
    back; ``reason`` then says why in the audit."""
    target, quarantined = home.target, home.quarantined
    if not fileops.is_regular(quarantined):
        return _refuse(home.audit_id, target, f"the quarantined copy is missing: {display_path(quarantined)}")
    if fileops.sha256_of(quarantined) != home.sha256:
        return _refuse(home.audit_id, target, "the quarantined copy no longer matches its recorded SHA-256")
    why = _outside(home, roots)
    if why is not None:
        return _refuse(home.audit_id, target, why)
    replace_link = fileops.is_our_symlink(target, home.link_target)
    if os.path.lexists(target) and not replace_link:
        return _refuse(home.audit_id, target, f"a file now exists at {display_path(target)}: not overwritten")
    if dry_run:
        return RestoreResult(home.audit_id, target, True, f"would restore from {display_path(quarantined)}")
    tmp = fileops.temp_name(target)
    with store.atomic():
        restore_intent = audit.begin(
            action="restore",
            path=quarantined,
            destination=target,
            stat=FileStat.from_path(quarantined),
            sha256=home.sha256,
            original=home.original,
            original_sha256=home.original_sha256,
            link_target=home.link_target,
            work=tmp,
            root=home.root,
        )
        # a restore is final: the file is left alone from now on (not only
        # against this original: a group can change), and the pair is not
        # paired again
        note = f"restored audit #{home.audit_id}" if home.audit_id is not None else "restored from quarantine"
        if by_person:
            audit.keep(home.sha256, target, note, decided_by=decided_by)
        if by_person and home.original_sha256 and home.original is not None:
            audit.ignore(home.sha256, target, home.original_sha256, home.original, note, decided_by=decided_by)
    faults.point("restore.after_intent", target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        why = _outside(home, roots)  # again, now that the directory exists
        if why is not None:
            raise ActionError(why)
        fileops.link_or_copy(quarantined, tmp, home.sha256)
        faults.point("restore.after_copy", target)
        if not _rename_home(tmp, target, home.link_target if replace_link else None):
            raise FileExistsError(f"a file appeared at {display_path(target)}: not overwritten")
        fileops.fsync_dir(target.parent)
        faults.point("restore.after_rename", target)
    except (OSError, ActionError) as exc:
        if os.path.lexists(tmp) and not fileops.is_our_symlink(tmp, home.link_target):
            fileops.remove_copy(tmp, quarantined, home.sha256)
        with store.atomic():
            audit.finish(restore_intent, "abandoned", None)
        detail = exc.message if isinstance(exc, ActionError) else str(exc.strerror or exc)
        if isinstance(exc, FileExistsError):
            detail = str(exc)
        return _refuse(home.audit_id, target, detail)
    if fileops.sha256_of(target) != home.sha256:  # pragma: no cover - the copy was verified
        raise ActionError(f"restored {display_path(target)} does not verify")
    fileops.remove_copy(quarantined, target, home.sha256)
    sidecar.remove(quarantined)
    faults.point("restore.after_unlink", target)
    _finish(store, audit, restore_intent, home, reason, decided_by)
    log.info("file_restored", path=target, from_=quarantined, audit_id=home.audit_id)
    return RestoreResult(home.audit_id, target, True, "restored")


def _rename_home(tmp: Path, target: Path, our_link: Path | None) -> bool:
    """Move the placed copy onto ``target``: never over a file, only over our own symlink."""
    if our_link is None:
        try:
            fileops.rename_no_replace(tmp, target)
        except FileExistsError:
            return False
        return True
    if fileops.exchange(tmp, target):
        if fileops.is_our_symlink(tmp, our_link):
            os.unlink(tmp)
            return True
        fileops.exchange(tmp, target)  # a newer file had replaced our symlink: give it its place back
        return False
    if not fileops.is_our_symlink(target, our_link):
        return False
    os.rename(tmp, target)  # replaces our own symlink, checked just above
    return True


def _finish(
    store: AnyStore, audit: Audit, restore_intent: int, home: Home, why: str | None = None, decided_by: str | None = None
) -> None:
    detail = f"restored from {display_path(home.quarantined)}; kept: not acted on again"
    if why is not None:
        detail = f"put back from {display_path(home.quarantined)}: {why}"
    with store.atomic():
        audit_id = audit.append(
            action="restore",
            outcome="done",
            path=home.target,
            original=home.original,
            size=os.lstat(home.target).st_size,
            sha256=home.sha256,
            original_sha256=home.original_sha256,
            detail=detail,
            destination=home.target,
            intent_id=restore_intent,
            restores=home.audit_id,
            decided_by=decided_by,
        )
        audit.finish(restore_intent, "done", audit_id)
        if home.move_intent is not None:
            audit.finish(home.move_intent, "restored", None)


def resolve_restore(store: AnyStore, audit: Audit, intent: Intent) -> None:
    """Settle a restore a crash interrupted: finish it if the file is home, else undo it."""
    quarantined, target, tmp = intent.path, intent.destination, intent.work
    if tmp is not None and os.path.lexists(tmp):
        if fileops.is_our_symlink(tmp, intent.link_target):
            os.unlink(tmp)  # our symlink, swapped out of the way
        elif fileops.is_partial_copy(tmp, quarantined):  # a copy (or a link) of ours, whole or cut short
            os.unlink(tmp)
        elif not fileops.remove_copy(tmp, target, intent.sha256):
            log.error("intent_unresolved", path=target, work=tmp,
                      reason="the restore's private copy differs from the quarantined file; left it")
            return
    home_ok = fileops.is_regular(target) and fileops.sha256_of(target) == intent.sha256
    if not home_ok:
        with store.atomic():
            audit.finish(intent.id, "abandoned", None)
        log.warning("restore_rolled_back", path=target, note="run the restore again to finish it")
        return
    fileops.remove_copy(quarantined, target, intent.sha256)
    sidecar.remove(quarantined)
    move = store.intent_rows(state="done", destination=quarantined)
    move_intent = audit.intent(int(move[-1][0])) if move else None
    home = Home(
        quarantined=quarantined,
        target=target,
        root=intent.root,
        sha256=intent.sha256,
        original=intent.original,
        original_sha256=intent.original_sha256,
        link_target=intent.link_target,
        move_intent=None if move_intent is None else move_intent.id,
        audit_id=None if move_intent is None else move_intent.audit_id,
    )
    _finish(store, audit, intent.id, home)
    log.warning("restore_completed", path=target, note="completed after an interruption")


def resolve_pending_restores(store: AnyStore, audit: Audit) -> int:
    """Settle restores an earlier ``dedupd restore`` left half done (killed); returns how many.

    Only restores: moves belong to the daemon or scan that started them.
    """
    pending = [i for i in audit.intents("pending") if i.action == "restore"]
    for intent in pending:
        resolve_restore(store, audit, intent)
    return len(pending)


def adopt_records(store: AnyStore, audit: Audit, quarantine: Path | None) -> int:
    """Re-record moves the store lost (a deleted WAL, a store rebuilt) from the quarantine records.

    A move the store knows has two rows: its intent (with the destination and
    SHA-256) and a ``done`` audit row naming that intent; ``restore --all``
    needs both.  A store that lost its WAL may hold either, both or neither
    of them: a checkpoint interrupted by a kill writes some pages of the
    main file and not others, so the audit row of a move can be there
    without its intent, or the intent without its audit row.  For each
    quarantined file with a record, whatever is missing is re-created (an
    audit row that is already there is linked to the re-created intent, not
    written twice), so every move ends with exactly one of each, whichever
    pages were checkpointed.  Returns how many moves were repaired.

    A move whose intent is still pending (one ``resolve_intents`` could not
    settle) is left alone.
    """
    if quarantine is None or not quarantine.is_dir():
        return 0
    adopted = 0
    for quarantined, rec in sidecar.walk(quarantine):
        if not fileops.is_regular(quarantined):
            continue
        # an earlier move to the same place, since restored, is over: not this one
        intents = [
            r for r in store.intent_rows(destination=quarantined)
            if r[11] == rec.sha256 and r[2] not in ("abandoned", "restored")
        ]
        if any(r[2] != "done" for r in intents):
            continue
        intent_ids = {int(r[0]) for r in intents}
        rows = [row for row in audit.rows(moves=True, sha256=rec.sha256) if row.destination == quarantined]
        if any(row.intent_id in intent_ids for row in rows):
            continue  # known: a done intent and its audit row
        # a row whose intent is gone is this move's; one whose intent is there belongs to another
        rows = [row for row in rows if row.intent_id is None or audit.intent(row.intent_id) is None]
        path = Path(rec.path)
        original = None if rec.original is None else Path(rec.original)
        with store.atomic():
            st = FileStat.from_path(quarantined)
            if intents:
                intent_id = int(intents[0][0])
            else:
                intent_id = audit.begin(
                    action=rec.action,
                    path=path,
                    destination=quarantined,
                    stat=st,
                    sha256=rec.sha256,
                    original=original,
                    original_sha256=rec.original_sha256,
                    link_target=None if rec.link_target is None else Path(rec.link_target),
                    root=None if rec.root is None else Path(rec.root),
                )
            if rows:  # the audit row survived, its intent did not: linked, not written again
                audit_id: int | None = rows[-1].id
                audit.relink(rows[-1].id, intent_id)
            else:
                audit_id = audit.append(
                    action=rec.action,
                    outcome="done",
                    path=path,
                    original=original,
                    size=st.size,
                    sha256=rec.sha256,
                    original_sha256=rec.original_sha256,
                    detail="re-recorded from its quarantine record: the store had lost this move",
                    destination=quarantined,
                    intent_id=intent_id,
                )
            audit.finish(intent_id, "done", audit_id)
        adopted += 1
        log.warning(
            "quarantine_record_adopted", path=path, destination=quarantined, audit_id=audit_id,
            lost="intent and audit row" if not intents and not rows else "intent" if not intents else "audit row",
        )
    return adopted
