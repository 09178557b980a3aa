"""What is done to a duplicate, the record of it, and how it is undone.

Nothing here deletes a user's file.  ``quarantine`` moves a duplicate into
the quarantine directory (keeping its path relative to its watched root);
``symlink`` puts a copy in quarantine and atomically replaces the duplicate
with a symlink to its original.  Before acting, the file is checked to be
the very file that was fingerprinted and the original to still be there.
An intent is committed before anything moves and completed with its audit
row after; :func:`resolve_intents` settles what a crash left half done.
"""

from __future__ import annotations

import collections
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from dedupd import fileops
from dedupd.audit import Audit, AuditRow, Intent
from dedupd.config import Config
from dedupd.errors import ActionError, display_path
from dedupd.matching import is_under
from dedupd.models import Action, FileStat, Tier
from dedupd.models import Duplicate
from dedupd.store import Store

log = structlog.get_logger()


class RateBreaker:
    """Trips when more than ``limit`` actions would happen within a minute, and stays open.

    A burst of actions usually means something went wrong upstream (a share
    remounted, a sync tool rewriting a tree): a person should look.  It closes
    again on a reload (SIGHUP) or a restart.
    """

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self.times: collections.deque[float] = collections.deque()
        self.tripped_at: float | None = None

    def allow(self) -> bool:
        if self.tripped_at is not None:
            return False
        now = time.monotonic()
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            self.tripped_at = time.time()
            log.error("circuit_breaker_tripped", cause="action_rate", limit_per_minute=self.limit)
            return False
        self.times.append(now)
        return True

    def reset(self) -> None:
        self.times.clear()
        self.tripped_at = None


@dataclass(frozen=True)
class Checked:
    """What preflight found: a reason to skip, or the go-ahead."""

    skip: str | None


class Actor:
    """Applies the configured action to each duplicate the pipeline reports."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        roots: tuple[Path, ...] = (),
        dry_run: bool = False,
    ) -> None:
        self.store = store
        self.config = config
        self.roots = tuple(Path(os.path.realpath(r)) for r in (roots or config.roots))
        self.dry_run = dry_run
        self.audit = Audit(store, config.audit_jsonl)
        self.breaker = RateBreaker(config.max_actions_per_minute)
        self.paused: dict[Path, str] = {}  # root -> why (set by the daemon's breaker)
        self.counts: collections.Counter[str] = collections.Counter()
        self.last_action: dict[str, object] | None = None

    # --- entry point ------------------------------------------------------

    def handle(self, dup: Duplicate) -> str:
        """Act on one duplicate; returns the outcome (done, skipped, failed, dry_run)."""
        action = self.config.actions.for_tier(dup.match.tier)
        if dup.tie:
            return self._record(dup, action, "skipped", "no keep rule decided which is the original")
        if action is Action.LOG:
            return self._record(dup, action, "dry_run" if self.dry_run else "done", "logged only")
        checked = self._preflight(dup)
        if checked.skip is not None:
            return self._record(dup, action, "skipped", checked.skip)
        if self.dry_run:
            return self._record(dup, action, "dry_run", f"would {action.value}")
        if not self.breaker.allow():
            return self._record(dup, action, "skipped", "circuit breaker open: too many actions per minute")
        try:
            return self._move(dup, action)
        except (OSError, ActionError) as exc:
            detail = exc.message if isinstance(exc, ActionError) else f"{exc.strerror or exc}"
            log.error("action_failed", path=dup.duplicate.path, action=action.value, error=detail)
            return self._record(dup, action, "failed", f"while moving: {detail}")

    # --- checks -----------------------------------------------------------

    def root_of(self, path: Path) -> Path | None:
        real_parent = Path(os.path.realpath(path.parent))
        best = None
        for root in self.roots:
            if real_parent == root or real_parent.is_relative_to(root):
                if best is None or len(root.parts) > len(best.parts):
                    best = root
        return best

    def _preflight(self, dup: Duplicate) -> Checked:
        path, original = dup.duplicate.path, dup.original.path
        fp, ofp = dup.duplicate.fingerprint, dup.original.fingerprint
        assert fp is not None and ofp is not None
        if self.config.quarantine_dir is None:
            return Checked("no quarantine_dir configured")
        if is_under(path, self.config.reference_dirs):
            return Checked("in a reference directory: never acted on")
        root = self.root_of(path)
        if root is None:
            return Checked("outside the watched roots: never acted on")
        if root in self.paused:
            return Checked(f"actions on this root are paused: {self.paused[root]}")
        if self.store.is_ignored(fp.sha256, ofp.sha256):
            return Checked("a person marked this pair as not duplicates")
        changed = _changed(path, dup.duplicate.stat, "the file")
        if changed:
            return Checked(changed)
        if fileops.open_for_writing(path):
            return Checked("the file is open for writing by another process")
        changed = _changed(original, dup.original.stat, "the original")
        if changed:
            return Checked(changed)
        if dup.match.tier is Tier.EXACT:
            if fileops.sha256_of(path) != fp.sha256 or fileops.sha256_of(original) != ofp.sha256:
                return Checked("the content no longer matches its fingerprint")
        return Checked(None)

    # --- doing ------------------------------------------------------------

    def destination(self, path: Path) -> Path:
        assert self.config.quarantine_dir is not None
        root = self.root_of(path)
        real = Path(os.path.realpath(path.parent)) / path.name
        rel = real.relative_to(root) if root is not None else Path(path.name)
        return fileops.free_name(self.config.quarantine_dir / rel)

    def _move(self, dup: Duplicate, action: Action) -> str:
        path, original = dup.duplicate.path, dup.original.path
        fp, ofp = dup.duplicate.fingerprint, dup.original.fingerprint
        assert fp is not None and ofp is not None
        dest = self.destination(path)
        link_target = Path(os.path.abspath(original)) if action is Action.SYMLINK else None
        with self.store.atomic():
            intent_id = self.audit.begin(
                action=action.value,
                path=path,
                destination=dest,
                stat=dup.duplicate.stat,
                sha256=fp.sha256,
                original=original,
                original_sha256=ofp.sha256,
                link_target=link_target,
            )

        def remember_temp(tmp: Path) -> None:
            with self.store.atomic():
                self.audit.set_temp(intent_id, tmp)

        try:
            fileops.place_copy(path, dest, fp.sha256, on_temp=remember_temp)
            if FileStat.from_path(path) != dup.duplicate.stat:
                fileops.remove_copy(dest, path, fp.sha256)
                raise ActionError(f"{display_path(path)} changed while it was being moved: left in place")
            if link_target is not None:
                tmp_link = fileops.temp_name(path)
                os.symlink(link_target, tmp_link)
                os.rename(tmp_link, path)  # atomic: the path is never missing
            else:
                os.unlink(path)
            fileops.fsync_dir(path.parent)
        except BaseException:
            with self.store.atomic():
                self.audit.finish(intent_id, "abandoned", None)
            raise
        with self.store.atomic():
            detail = "moved to quarantine" + (" and replaced by a symlink" if link_target else "")
            audit_id = self._append(dup, action, "done", detail, dest, intent_id)
            self.audit.finish(intent_id, "done", audit_id)
            # a duplicate is never an original, so nothing else points at its record
            self.store.delete_file(dup.duplicate.id)
        self.counts[f"{action.value}_done"] += 1
        self.last_action = {"action": action.value, "path": str(path), "at": time.time()}
        log.info(
            "file_quarantined" if action is Action.QUARANTINE else "file_symlinked",
            path=path,
            original=original,
            destination=dest,
            tier=dup.match.tier.value,
            distance=dup.match.distances.phash,
            similarity=dup.match.similarity,
            audit_id=audit_id,
        )
        return "done"

    # --- recording --------------------------------------------------------

    def _record(self, dup: Duplicate, action: Action, outcome: str, detail: str) -> str:
        self.counts[f"{action.value}_{outcome}"] += 1
        if outcome == "dry_run":
            log.info("would_act", action=action.value, path=dup.duplicate.path, original=dup.original.path, tier=dup.match.tier.value, detail=detail)
            return outcome
        with self.store.atomic():
            self._append(dup, action, outcome, detail, None, None)
        if outcome == "skipped":
            log.info("action_skipped", action=action.value, path=dup.duplicate.path, original=dup.original.path, reason=detail)
        return outcome

    def _append(
        self, dup: Duplicate, action: Action, outcome: str, detail: str, dest: Path | None, intent_id: int | None
    ) -> int | None:
        fp, ofp = dup.duplicate.fingerprint, dup.original.fingerprint
        assert fp is not None and ofp is not None
        d = dup.match.distances
        key = None
        if outcome != "done" or action is Action.LOG:
            # the same finding about the same two files is recorded once
            key = f"{action.value}:{outcome}:{fp.sha256}:{ofp.sha256}:{os.fsencode(dup.duplicate.path).hex()}:{detail}"
        return self.audit.append(
            action=action.value,
            outcome=outcome,
            path=dup.duplicate.path,
            original=dup.original.path,
            tier=dup.match.tier.value,
            distances=(d.phash, d.dhash, d.colour),
            similarity=dup.match.similarity,
            size=dup.duplicate.stat.size,
            sha256=fp.sha256,
            original_sha256=ofp.sha256,
            reason=dup.match.reason,
            detail=detail,
            destination=dest,
            intent_id=intent_id,
            dedup_key=key,
        )


def _changed(path: Path, recorded: FileStat, what: str) -> str | None:
    """Why ``path`` is no longer the file that was fingerprinted, or None."""
    try:
        now = FileStat.from_path(path)
    except OSError:
        return f"{what} is gone or is no longer a regular file"
    return None if now == recorded else f"{what} changed since it was fingerprinted"


# --- crash recovery ---------------------------------------------------------------


def act_on_unhandled(store: Store, actor: Actor) -> int:
    """Handle duplicates whose match was stored but whose action never ran (a crash in between)."""

    ids = store.unacted_matches()
    for file_id in ids:
        dup_rec = store.record(file_id)
        found = store.match_of(file_id)
        if dup_rec is None or found is None:
            continue
        original_id, match, tie = found
        orig_rec = store.record(original_id)
        if orig_rec is None or dup_rec.fingerprint is None or orig_rec.fingerprint is None:
            continue
        actor.handle(Duplicate(dup_rec, orig_rec, match, tie, "retried: its action was interrupted"))
    if ids:
        log.warning("interrupted_actions_retried", count=len(ids))
    return len(ids)



def resolve_intents(store: Store, audit: Audit) -> int:
    """Settle every intent a crash left pending; returns how many there were.

    Each file ends either where it was (the copy in quarantine, provably
    redundant, is removed) or in quarantine with its audit row.
    """
    pending = audit.intents("pending")
    for intent in pending:
        if intent.temp is not None and os.path.lexists(intent.temp):
            os.unlink(intent.temp)  # a partial copy; the source was never touched
        if intent.action == "restore":
            _resolve_restore(store, audit, intent)
        else:
            _resolve_move(store, audit, intent)
    return len(pending)


def _source_intact(intent: Intent) -> bool:
    try:
        return FileStat.from_path(intent.path) == intent.stat
    except OSError:
        return False


def _resolve_move(store: Store, audit: Audit, intent: Intent) -> None:
    dest_exists = os.path.lexists(intent.destination)
    if _source_intact(intent):
        # the move did not complete: undo the copy, if any, and leave the file where it was
        if dest_exists and not fileops.remove_copy(intent.destination, intent.path, intent.sha256):
            log.error("intent_unresolved", path=intent.path, destination=intent.destination,
                      reason="source and quarantine copy both exist and differ; left both")
            return
        with store.atomic():
            audit.finish(intent.id, "abandoned", None)
        log.warning("intent_rolled_back", path=intent.path, action=intent.action)
        return
    if dest_exists:
        if intent.action == "symlink" and not os.path.lexists(intent.path) and intent.link_target:
            tmp = fileops.temp_name(intent.path)
            os.symlink(intent.link_target, tmp)
            fileops.rename_no_replace(tmp, intent.path)
        with store.atomic():
            audit_id = audit.append(
                action=intent.action,
                outcome="done",
                path=intent.path,
                original=intent.original,
                size=intent.stat.size,
                sha256=intent.sha256,
                original_sha256=intent.original_sha256,
                detail="completed after an interruption (found in quarantine on start)",
                destination=intent.destination,
                intent_id=intent.id,
            )
            audit.finish(intent.id, "done", audit_id)
            moved = store.record_for_path(intent.path)
            if moved is not None and moved.stat == intent.stat:
                store.delete_file(moved.id)
        log.warning("intent_completed", path=intent.path, destination=intent.destination)
        return
    log.error("intent_unresolved", path=intent.path, destination=intent.destination,
              reason="neither the file nor its quarantine copy is where it was recorded")


def _resolve_restore(store: Store, audit: Audit, intent: Intent) -> None:
    # for a restore, ``path`` is the quarantine copy and ``destination`` where it goes back
    back = intent.destination
    if os.path.lexists(back) and fileops.is_regular(back) and os.path.lexists(intent.path):
        if fileops.remove_copy(intent.path, back, intent.sha256):
            with store.atomic():
                audit.finish(intent.id, "done", None)
            return
    with store.atomic():
        audit.finish(intent.id, "abandoned", None)


# --- undo -------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    audit_id: int
    path: Path | None
    ok: bool
    detail: str


def restore(store: Store, audit: Audit, row: AuditRow, *, dry_run: bool = False) -> RestoreResult:
    """Put the file of one audited move back, byte-identical, never over another file."""

    def fail(detail: str) -> RestoreResult:
        log.warning("restore_refused", audit_id=row.id, path=row.path, reason=detail)
        return RestoreResult(row.id, row.path, False, detail)

    if row.action not in ("quarantine", "symlink") or row.outcome != "done" or row.intent_id is None:
        return fail("not a completed move: nothing to restore")
    intent = audit.intent_for_audit(row.id)
    if intent is None:
        return fail("no record of where the file went")
    if intent.state == "restored":
        return fail("already restored")
    quarantined = intent.destination
    if not fileops.is_regular(quarantined):
        return fail(f"the quarantined copy is missing: {display_path(quarantined)}")
    if fileops.sha256_of(quarantined) != intent.sha256:
        return fail("the quarantined copy no longer matches its recorded SHA-256")
    target = intent.path
    replace_link = intent.action == "symlink" and fileops.is_our_symlink(target, intent.link_target)
    if os.path.lexists(target) and not replace_link:
        return fail(f"a file now exists at {display_path(target)}: not overwritten")
    if dry_run:
        return RestoreResult(row.id, target, True, f"would restore from {display_path(quarantined)}")
    with store.atomic():
        restore_intent = audit.begin(
            action="restore",
            path=quarantined,
            destination=target,
            stat=FileStat.from_path(quarantined),
            sha256=intent.sha256,
            original=intent.original,
            original_sha256=intent.original_sha256,
        )
    tmp = fileops.temp_name(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fileops.place_copy(quarantined, tmp, intent.sha256)
    if replace_link:
        os.rename(tmp, target)  # atomically replaces our own symlink
    else:
        try:
            fileops.rename_no_replace(tmp, target)
        except FileExistsError:
            os.unlink(tmp)
            with store.atomic():
                audit.finish(restore_intent, "abandoned", None)
            return fail(f"a file appeared at {display_path(target)}: not overwritten")
    fileops.fsync_dir(target.parent)
    if fileops.sha256_of(target) != intent.sha256:  # pragma: no cover - place_copy verified it
        raise ActionError(f"restored {display_path(target)} does not verify")
    fileops.remove_copy(quarantined, target, intent.sha256)
    with store.atomic():
        audit_id = audit.append(
            action="restore",
            outcome="done",
            path=target,
            original=intent.original,
            size=intent.stat.size,
            sha256=intent.sha256,
            original_sha256=intent.original_sha256,
            detail=f"restored from {display_path(quarantined)}; pair marked as not duplicates",
            destination=target,
            intent_id=restore_intent,
            restores=row.id,
        )
        audit.finish(restore_intent, "done", audit_id)
        audit.finish(intent.id, "restored", None)
        if intent.original_sha256:
            audit.ignore(intent.sha256, intent.original_sha256, f"restored audit #{row.id}")
    log.info("file_restored", path=target, from_=quarantined, audit_id=row.id)
    return RestoreResult(row.id, target, True, "restored")
