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

Several files go back in batches of up to :data:`BATCH`, each step for the
whole batch before the next: the intents of the batch are committed in one
transaction; the copies are placed and renamed home one by one; each
directory the files went to is synced once (a rename is durable before any
quarantined copy is removed); the copies and records are removed and their
directories synced once; the audit rows are committed in one transaction.
The order of steps per file is the one above, so a kill anywhere leaves
each file of the batch at one of them, settled as for a single file.

``--from-quarantine`` restores from the records beside quarantined files
(``dedupd.sidecar``) when the store that knew about them is lost.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from dedupd import faults, fileops, identity, sidecar
from dedupd.audit import Audit, AuditRow, Intent
from dedupd.errors import ActionError, display_path
from dedupd.models import FileStat
from dedupd.store import AnyStore

log = structlog.get_logger()

#: files put back per batch: one transaction for their intents, one sync per
#: directory, one transaction for their audit rows (dedupd restore --all of
#: 500 files: bench/restore_all.py).  At most this many restores are left
#: pending by a kill, each settled by the next restore.
BATCH = 100


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
    move_state: str | None = None  # that intent's state (done, restored...), when known
    original_host: str | None = None  # the original's host, when another (a store several hosts share)

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
            move_state=intent.state,
            original_host=intent.original_host,
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
    return restore_rows(store, audit, [row], roots=roots, dry_run=dry_run, decided_by=decided_by)[0]


def restore_rows(
    store: AnyStore,
    audit: Audit,
    rows: Iterable[AuditRow],
    *,
    roots: tuple[Path, ...] = (),
    dry_run: bool = False,
    decided_by: str | None = None,
    pending_only: bool = False,
) -> list[RestoreResult]:
    """Restore the files of several audited moves, in batches; a result per row, in order.

    ``pending_only``: leave out, without a word, the rows whose move is not
    (or no longer) a done move to undo (``restore --all`` and ``--since``)."""
    todo: list[Home | RestoreResult] = []
    seen: set[int | None] = set()
    for row in rows:
        found = _home_of(audit, row)
        if isinstance(found, Home) and found.move_intent in seen:
            found = "already restored"  # named twice: restored by the first
        if isinstance(found, Home):
            seen.add(found.move_intent)
            if not pending_only or found.move_state == "done":
                todo.append(found)
        elif not pending_only:
            todo.append(_refuse(row.id, row.path, found))
    homes = [h for h in todo if isinstance(h, Home)]
    placed = iter(put_homes(store, audit, homes, roots=roots, dry_run=dry_run, decided_by=decided_by))
    return [next(placed) if isinstance(h, Home) else h for h in todo]


def _home_of(audit: Audit, row: AuditRow) -> Home | str:
    """Where the file of the move ``row`` goes back to, or why it does not."""
    if row.action not in ("quarantine", "symlink") or row.outcome != "done" or row.intent_id is None:
        return "not a completed move: nothing to restore"
    if row.host != audit.store.host:  # its paths name files on that host (a store several hosts share)
        return f"a move made on host {row.host}: restore it there"
    intent = audit.intent_for_audit(row.id)
    if intent is None:
        return "no record of where the file went"
    if intent.state == "restored":
        return "already restored"
    return Home.of_move(intent, row.id)


def restore_from_quarantine(
    store: AnyStore, audit: Audit, top: Path, *, roots: tuple[Path, ...] = (), dry_run: bool = False
) -> list[RestoreResult]:
    """Restore every file under ``top`` that has a quarantine record, without the store's help."""
    homes = []
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
        homes.append(home)
    return put_homes(store, audit, homes, roots=roots, dry_run=dry_run)


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
    return put_homes(
        store, audit, [home], roots=roots, dry_run=dry_run, by_person=by_person, reason=reason, decided_by=decided_by
    )[0]


def put_homes(
    store: AnyStore,
    audit: Audit,
    homes: Sequence[Home],
    *,
    roots: tuple[Path, ...] = (),
    dry_run: bool = False,
    by_person: bool = True,
    reason: str | None = None,
    decided_by: str | None = None,
) -> list[RestoreResult]:
    """:func:`put_home` for each of ``homes``, in batches of :data:`BATCH`; a result each, in order."""
    out: list[RestoreResult] = []
    for start in range(0, len(homes), BATCH):
        batch = homes[start : start + BATCH]
        out += _put_batch(store, audit, batch, roots, dry_run, by_person, reason, decided_by)
    return out


@dataclass(frozen=True)
class _Started:
    """A file of a batch whose restore intent is committed."""

    index: int  # its place in the batch
    home: Home
    tmp: Path  # the private name its copy is placed at, beside the target
    replace_link: bool  # our own symlink is at the target: swapped, not refused
    intent: int


def _put_batch(
    store: AnyStore,
    audit: Audit,
    batch: Sequence[Home],
    roots: tuple[Path, ...],
    dry_run: bool,
    by_person: bool,
    reason: str | None,
    decided_by: str | None,
) -> list[RestoreResult]:
    results: dict[int, RestoreResult] = {}
    ready: list[tuple[int, Home, bool]] = []
    for i, home in enumerate(batch):
        why, replace_link = _check(home, roots)
        if why is not None:
            results[i] = _refuse(home.audit_id, home.target, why)
        elif dry_run:
            results[i] = RestoreResult(home.audit_id, home.target, True, f"would restore from {display_path(home.quarantined)}")
        else:
            ready.append((i, home, replace_link))
    if not ready:
        return [results[i] for i in range(len(batch))]
    # 1. the intents, with the decisions, in one transaction
    started: list[_Started] = []
    with store.atomic():
        for i, home, replace_link in ready:
            tmp = fileops.temp_name(home.target)
            started.append(_Started(i, home, tmp, replace_link, _begin(audit, home, tmp, by_person, decided_by)))
    # 2. each copy placed beside its target and renamed onto it
    home_now: list[_Started] = []
    for one in started:
        faults.point("restore.after_intent", one.home.target)
        why = _place(one, roots)
        if why is None:
            home_now.append(one)
            continue
        with store.atomic():
            audit.finish(one.intent, "abandoned", None)
        results[one.index] = _refuse(one.home.audit_id, one.home.target, why)
    # 3. the renames made durable, once per directory, before any quarantined copy goes
    _sync_dirs(one.home.target.parent for one in home_now)
    for one in home_now:
        home = one.home
        faults.point("restore.after_rename", home.target)
        if fileops.sha256_of(home.target) != home.sha256:  # pragma: no cover - the copy was verified
            raise ActionError(f"restored {display_path(home.target)} does not verify")
        fileops.remove_copy(home.quarantined, home.target, home.sha256, sync=False)
        sidecar.remove(home.quarantined, sync=False)
        faults.point("restore.after_unlink", home.target)
    # 4. the removals made durable, then the audit rows in one transaction
    _sync_dirs(one.home.quarantined.parent for one in home_now)
    with store.atomic():
        for one in home_now:
            _record(audit, one.intent, one.home, reason, decided_by)
    for one in home_now:
        log.info("file_restored", path=one.home.target, from_=one.home.quarantined, audit_id=one.home.audit_id)
        results[one.index] = RestoreResult(one.home.audit_id, one.home.target, True, "restored")
    return [results[i] for i in range(len(batch))]


def _check(home: Home, roots: tuple[Path, ...]) -> tuple[str | None, bool]:
    """Why ``home`` may not be restored (or None), and whether our own symlink holds its target."""
    target, quarantined = home.target, home.quarantined
    if not fileops.is_regular(quarantined):
        return f"the quarantined copy is missing: {display_path(quarantined)}", False
    if fileops.sha256_of(quarantined) != home.sha256:
        return "the quarantined copy no longer matches its recorded SHA-256", False
    why = _outside(home, roots)
    if why is not None:
        return why, False
    replace_link = fileops.is_our_symlink(target, home.link_target)
    if os.path.lexists(target) and not replace_link:
        return f"a file now exists at {display_path(target)}: not overwritten", False
    return None, replace_link


def _begin(audit: Audit, home: Home, tmp: Path, by_person: bool, decided_by: str | None) -> int:
    """Record the restore's intent (inside the caller's transaction); returns its id."""
    intent = audit.begin(
        action="restore",
        path=home.quarantined,
        destination=home.target,
        stat=FileStat.from_path(home.quarantined),
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
        audit.keep(home.sha256, home.target, note, decided_by=decided_by)
    if by_person and home.original_sha256 and home.original is not None:
        audit.ignore(home.sha256, home.target, home.original_sha256, home.original, note, decided_by=decided_by,
                     other_host=home.original_host)  # fmt: skip
    return intent


def _place(one: _Started, roots: tuple[Path, ...]) -> str | None:
    """Place the copy at its private name and rename it onto the target; why not (all undone), or None.

    The target's directory is synced by the caller, once for the batch."""
    home, tmp = one.home, one.tmp
    target, quarantined = home.target, home.quarantined
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        why = _outside(home, roots)  # again, now that the directory exists
        if why is not None:
            raise ActionError(why)
        fileops.link_or_copy(quarantined, tmp, home.sha256, sync=False)
        faults.point("restore.after_copy", target)
        if not _rename_home(tmp, target, home.link_target if one.replace_link else None):
            raise FileExistsError(f"a file appeared at {display_path(target)}: not overwritten")
    except (OSError, ActionError) as exc:
        if os.path.lexists(tmp) and not fileops.is_our_symlink(tmp, home.link_target):
            fileops.remove_copy(tmp, quarantined, home.sha256)
        if isinstance(exc, FileExistsError):
            return str(exc)
        return exc.message if isinstance(exc, ActionError) else str(exc.strerror or exc)
    return None


def _sync_dirs(dirs: Iterable[Path]) -> None:
    """fsync each directory once, however many files of the batch it holds."""
    for d in sorted(set(dirs)):
        fileops.fsync_dir(d)


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
    with store.atomic():
        _record(audit, restore_intent, home, why, decided_by)


def _record(audit: Audit, restore_intent: int, home: Home, why: str | None, decided_by: str | None) -> None:
    """The audit row of a restore done, its intent done, the move's intent restored (in the caller's transaction)."""
    detail = f"restored from {display_path(home.quarantined)}; kept: not acted on again"
    if why is not None:
        detail = f"put back from {display_path(home.quarantined)}: {why}"
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
        rows = [row for row in audit.rows(moves=True, sha256=rec.sha256, mine=True) if row.destination == quarantined]
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
                    original_host=rec.original_host,
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
                    original_host=rec.original_host,
                )
            audit.finish(intent_id, "done", audit_id)
        adopted += 1
        log.warning(
            "quarantine_record_adopted", path=path, destination=quarantined, audit_id=audit_id,
            lost="intent and audit row" if not intents and not rows else "intent" if not intents else "audit row",
        )
    return adopted
