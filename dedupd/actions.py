"""What is done to a duplicate, and how a crash in the middle is settled.

Nothing here deletes a user's file.  ``quarantine`` moves a duplicate into
the quarantine directory (keeping its path relative to its watched root);
``symlink`` does the same and leaves a symlink to its original in its place.

A move never acts on a path, only on a file it holds:

1. preflight: the duplicate and its original are still the versions that
   were fingerprinted (device, inode, size, mtime, ctime), are two different
   files, and the duplicate lies in a root, outside reference directories;
2. an intent naming every name the move will use is committed;
3. the duplicate is *taken*: renamed to a private name in its own directory
   (``renameat2(RENAME_NOREPLACE)``), or for a symlink swapped with a
   ready symlink (``RENAME_EXCHANGE``), so the path is never empty;
4. what was taken is checked again, by inode and by SHA-256, and so is the
   original's content; a file that is not the one checked (a newer file
   saved at the path in between) is put back without overwriting anything;
5. the quarantine record (``dedupd.sidecar``) is written, the copy placed
   (a hard link, or a copy verified by SHA-256), the taken name unlinked,
   and the audit row committed with the intent marked done.

:func:`resolve_intents` settles an intent a crash left at any of these
steps, from what it finds on disk.  Restores are in ``dedupd.restore``.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from dedupd import faults, fileops, identity, sidecar
from dedupd.audit import Audit, Intent, iso_time
from dedupd.backend import StoreBackend
from dedupd.config import Config, SymlinkStyle
from dedupd.errors import ActionError, NotTheCheckedFile
from dedupd.models import Action, Duplicate, FileStat
from dedupd.store import AnyStore

log = structlog.get_logger()


#: why a file a person restored is skipped (a restore is final)
KEPT = "a person restored this file: not acted on again ('dedupd ignores' lists the decision, 'remove ID' lifts it)"


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
class ActionResult:
    """What :meth:`Actor.handle` did to one duplicate."""

    outcome: str  # done, skipped, failed, dry_run
    detail: str  # why, in words
    audit_id: int | None  # its audit row (None for a dry run, or a finding already recorded)


@dataclass(frozen=True)
class Checked:
    """What preflight found: a reason to skip, or the go-ahead."""

    skip: str | None


@dataclass(frozen=True)
class Move:
    """A move whose intent is committed: what its file work needs, nothing of the store."""

    dup: Duplicate
    action: Action
    intent: Intent


@dataclass(frozen=True)
class Moved:
    """What the file work of a move did, for :meth:`Actor.finish` to record."""

    linked: bool = False  # a symlink to the original is at the path
    replaced: bool = False  # a newer file took the path meanwhile and was left there
    skipped: str | None = None  # not the checked file: why, nothing moved
    failed: str | None = None  # an error: what it was
    settled: bool = True  # after a skip or an error: nothing of the move is left


class Actor:
    """Applies the configured action to each duplicate the pipeline reports."""

    def __init__(
        self,
        store: AnyStore,
        config: Config,
        *,
        roots: tuple[Path, ...] = (),
        dry_run: bool = False,
    ) -> None:
        self.store = store
        self.config = config
        self.roots = tuple(identity.real(r) for r in (roots or config.roots))
        self.references = tuple(identity.real(d) for d in config.reference_dirs)
        self.quarantine = None if config.quarantine_dir is None else identity.real(config.quarantine_dir)
        self.dry_run = dry_run  # only ever on a private copy of the store (scan --dry-run): see handle()
        self.audit = Audit(store, config.audit_jsonl)
        self.breaker = RateBreaker(config.max_actions_per_minute)
        self.paused: dict[Path, str] = {}  # root -> why (set by the daemon's breaker)
        self.counts: collections.Counter[str] = collections.Counter()
        self.last_action: dict[str, object] | None = None
        #: who asked for the actions this Actor takes (None: the daemon or a
        #: scan); written into each audit row
        self.decided_by: str | None = None
        #: what the last :meth:`handle` did, in words, and its audit row
        self.last_result: ActionResult | None = None

    # --- entry point ------------------------------------------------------

    def handle(self, dup: Duplicate) -> str:
        """Act on one duplicate; returns the outcome (done, skipped, failed, dry_run).

        :attr:`last_result` says why, and names the audit row.  The three
        parts of a move, one after the other: :meth:`prepare`,
        :meth:`carry_out` and :meth:`finish`.  The daemon runs
        :meth:`carry_out` (every read and copy of a whole file) on a thread
        of its own, and the other two on its main loop.
        """
        prepared = self.prepare(dup)
        if isinstance(prepared, str):
            return prepared
        return self.finish(prepared, self.carry_out(prepared))

    def prepare(self, dup: Duplicate) -> str | Move:
        """Decide without reading any file: an outcome (recorded), or a move whose intent is committed."""
        self.last_result = None
        action = self.config.actions.for_tier(dup.match.tier)
        if dup.duplicate.host is not None:
            # another host's file (a store several hosts share): that host acts
            # on it and records it, when its daemon learns of the match
            log.info("left_to_host", host=dup.duplicate.host, path=dup.duplicate.path, original=dup.original.path)
            return "elsewhere"
        if dup.tie:
            return self._record(dup, action, "skipped", "no keep rule decided which is the original")
        if action is Action.LOG:
            return self._record(dup, action, "dry_run" if self.dry_run else "done", "logged only")
        checked = self._preflight(dup)
        if checked.skip is not None:
            return self._record(dup, action, "skipped", checked.skip)
        if self.dry_run:
            # a dry run works on a private copy of the store: there the file is gone as
            # it would be, so that a later takeover does not report it a second time
            with self.store.atomic():
                self.store.delete_file(dup.duplicate.id)
            return self._record(dup, action, "dry_run", f"would {action.value}")
        if not self.breaker.allow():
            return self._record(dup, action, "skipped", "circuit breaker open: too many actions per minute")
        return self._begin(dup, action)

    def finish(self, move: Move, moved: Moved) -> str:
        """Record what :meth:`carry_out` did: the audit row, the intent's end, the store."""
        dup, action = move.dup, move.action
        if moved.skipped is not None or moved.failed is not None:
            if moved.settled:
                with self.store.atomic():
                    self.audit.finish(move.intent.id, "abandoned", None)
            if moved.skipped is not None:
                return self._record(dup, action, "skipped", moved.skipped)
            log.error("action_failed", path=dup.duplicate.path, action=action.value, error=moved.failed)
            return self._record(dup, action, "failed", f"while moving: {moved.failed}")
        return self._done(move, moved)

        # --- checks -----------------------------------------------------------

    def root_of(self, path: Path) -> Path | None:
        return identity.within(path, self.roots)

    def _preflight(self, dup: Duplicate) -> Checked:
        path, original = dup.duplicate.path, dup.original.path
        fp, ofp = dup.duplicate.fingerprint, dup.original.fingerprint
        assert fp is not None and ofp is not None
        if self.quarantine is None:
            return Checked("no quarantine_dir configured")
        if identity.within(path, self.references) is not None:
            return Checked("in a reference directory: never acted on")
        if identity.within(path, (self.quarantine,)) is not None:
            return Checked("inside the quarantine: never acted on")
        root = self.root_of(path)
        if root is None:
            return Checked("outside the watched roots: never acted on")
        if root in self.paused:
            return Checked(f"actions on this root are paused: {self.paused[root]}")
        if self.store.is_ignored(fp.sha256, ofp.sha256, path_a=path, path_b=original, host_b=dup.original.host):
            return Checked("a person marked this pair as not duplicates")
        if self.store.is_kept(fp.sha256, path):
            return Checked(KEPT)
        here = dup.original.host is None
        if not here:
            why = self._elsewhere_original(dup)
            if why:
                return Checked(why)
        # ctime is left to the content check that follows (every tier): a ctime moved
        # by a rename, a chmod or dedupd's own hard link is not a changed picture
        checks = [(path, dup.duplicate.stat, "the file")] + ([(original, dup.original.stat, "the original")] if here else [])
        for p, recorded, what in checks:
            why = identity.changed(p, recorded, what, ctime=False)
            if why:
                return Checked(why)
        if here and (identity.same_file(path, original) or identity.real_parent(path) == identity.real_parent(original)):
            return Checked("the file and its original are one file under two names: never acted on")
        if fileops.open_for_writing(path):
            return Checked("the file is open for writing by another process")
        return Checked(None)

    def _elsewhere_original(self, dup: Duplicate) -> str | None:
        """Why a copy here of an original on another host is not acted on, or None.

        That original cannot be read from here, so its being there and its
        content are the store's word, which its host keeps: read again now.
        A quarantine stays reversible; a symlink could not point there."""
        host, ofp = dup.original.host, dup.original.fingerprint
        assert ofp is not None
        if dup.original.path == dup.duplicate.path:
            # this very file under another host's name: a host renamed (its old
            # rows), or a directory two hosts both watch
            return (f"the original is at this file's own path on host {host}: "
                    "the same file under another host name? never acted on")  # fmt: skip
        if self.config.actions.for_tier(dup.match.tier) is Action.SYMLINK:
            return f"the original is on host {host}: a symlink here cannot point at it"
        now, match = self.store.record(dup.original.id), self.store.match_of(dup.duplicate.id)
        if now is None or now.fingerprint is None or now.fingerprint.sha256 != ofp.sha256 or now.path != dup.original.path:
            return f"the original on host {host} changed or is gone since the match"
        if match is None or match[0] != dup.original.id:
            return "the file's group changed since the match"
        return None

    def _check_copy(self, dest: Path, linked: bool, dup: Duplicate) -> str | None:
        """Why the copy just placed (or the original) is not what was checked, or None.

        A hard link is the file itself: it must be the fingerprinted inode and
        hash to the fingerprint.  A copy across filesystems was verified
        against the fingerprint's SHA-256 while it was placed.
        """
        fp, ofp = dup.duplicate.fingerprint, dup.original.fingerprint
        assert fp is not None and ofp is not None
        if linked:
            try:
                now = FileStat.from_path(dest)
            except OSError:
                return "the copy placed in quarantine is gone"
            if now != dup.duplicate.stat:
                return "a different file was at the path (saved there since the check?)"
            if fileops.sha256_of(dest) != fp.sha256:
                return "the file's content no longer matches its fingerprint"
        if dup.original.host is not None:
            return None  # on another host: the store's word (see _preflight)
        if identity.changed(dup.original.path, dup.original.stat, "the original", ctime=False):
            return "the original changed since it was fingerprinted"
        if identity.same_file(dest, dup.original.path):
            return "the file and its original are one file under two names"
        try:
            original_sha = fileops.sha256_of(dup.original.path)
        except OSError:
            return "the original can no longer be read"
        if original_sha != ofp.sha256:
            return "the original's content no longer matches its fingerprint"
        return None

    # --- doing ------------------------------------------------------------

    def destination(self, path: Path) -> Path:
        """Where ``path`` goes in the quarantine: its path below the outermost root
        directory holding it (nested roots keep the whole tree; a root given as the
        file itself keeps its name only), under a free name."""
        assert self.quarantine is not None
        real = identity.real_parent(path)
        holding = [r for r in self.roots if real != r and real.is_relative_to(r)]
        outer = min(holding, key=lambda r: len(r.parts)) if holding else None
        rel = real.relative_to(outer) if outer is not None else Path(path.name)
        return fileops.free_name(self.quarantine / rel)

    def _begin(self, dup: Duplicate, action: Action) -> Move:
        """Commit the intent naming every name the move will use (the copy's temporary too)."""
        path, original = dup.duplicate.path, dup.original.path
        fp, ofp = dup.duplicate.fingerprint, dup.original.fingerprint
        assert fp is not None and ofp is not None
        dest = self.destination(path)
        link_target = link_text(original, path, self.config.symlink) if action is Action.SYMLINK else None
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
                work=fileops.temp_name(path),
                # used only when the copy crosses filesystems; named before it can exist
                temp=fileops.temp_name(dest),
                root=self.root_of(path),
                original_host=dup.original.host,
            )
            intent = self.audit.intent(intent_id)
        assert intent is not None
        return Move(dup, action, intent)

    def carry_out(self, move: Move) -> Moved:
        """The file work of a move: copy, check, take, unlink; on any error, put everything back.

        Touches files only, never the store or this Actor's state, so it may
        run on another thread than :meth:`prepare` and :meth:`finish`.
        """
        try:
            return self._carry_out(move)
        except NotTheCheckedFile as exc:
            return Moved(skipped=exc.detail, settled=self._undo(move))
        except (OSError, ActionError) as exc:
            detail = exc.message if isinstance(exc, ActionError) else f"{exc.strerror or exc}"
            return Moved(failed=detail, settled=self._undo(move))
        except BaseException:
            self._undo(move)
            raise

    def _carry_out(self, move: Move) -> Moved:
        dup, intent = move.dup, move.intent
        path, work, dest, link_target = intent.path, intent.work, intent.destination, intent.link_target
        fp = dup.duplicate.fingerprint
        assert fp is not None and work is not None and intent.original_sha256 is not None
        step = move.action.value
        linked = link_target is not None
        replaced = False
        sidecar.write(dest, self._sidecar(intent.id, None, dest, path, intent.root, step, fp.sha256, dup.original.path,
                                          intent.original_sha256, link_target, dup.original.host))
        faults.point(f"{step}.after_record", path)
        # 1. the copy, from the path: a hard link (checked to be the fingerprinted
        #    inode) or a copy verified against the fingerprint's SHA-256
        try:
            hard = fileops.place_copy(path, dest, fp.sha256, tmp=intent.temp)
        except ActionError as exc:
            raise NotTheCheckedFile(f"{exc.detail}: not moved") from exc
        why = self._check_copy(dest, hard, dup)
        if why is not None:
            raise NotTheCheckedFile(f"{why}: not moved")
        faults.point(f"{step}.after_copy", path)
        # 2. take the file from its path (never a file that arrived since the copy)
        exchanged = False
        if link_target is not None:
            os.symlink(link_target, work)
            faults.point("symlink.after_temp_link", path)
            exchanged = fileops.exchange(work, path)
            if not exchanged:  # no RENAME_EXCHANGE here: take it, then link (the path is briefly empty)
                os.unlink(work)
        if not exchanged:
            fileops.rename_no_replace(path, work)
        faults.point(f"{step}.after_take", path)
        taken = FileStat.from_path(work)
        if taken != dup.duplicate.stat and (taken.dev, taken.ino) == (dup.duplicate.stat.dev, dup.duplicate.stat.ino):
            raise NotTheCheckedFile("the file was written to while it was being moved: put back, not moved")
        if taken != dup.duplicate.stat:
            # a newer file was saved at the path after the copy was made: it goes
            # back, untouched; the checked version it replaced stays in quarantine
            put_back(work, path, link_target)
            replaced, linked = True, False
        else:
            if link_target is not None and not exchanged:
                try:
                    os.symlink(link_target, path)
                except FileExistsError:
                    linked = False  # a newer file was saved at the path meanwhile: it stays
            os.unlink(work)
        fileops.fsync_dir(path.parent)
        faults.point(f"{step}.after_unlink", path)
        return Moved(linked=linked, replaced=replaced)

    def _done(self, move: Move, moved: Moved) -> str:
        dup, action, intent = move.dup, move.action, move.intent
        with self.store.atomic():
            detail = "moved to quarantine" + (" and replaced by a symlink" if moved.linked else "")
            if moved.replaced or (intent.link_target is not None and not moved.linked):
                detail += "; a newer file was saved at its path meanwhile and was left there"
            audit_id = self._append(dup, action, "done", detail, intent.destination, intent.id)
            self.audit.finish(intent.id, "done", audit_id)
            # a duplicate is never an original, so nothing else points at its record
            self.store.delete_file(dup.duplicate.id)
        self.counts[f"{action.value}_done"] += 1
        self.last_result = ActionResult("done", detail, audit_id)
        self.last_action = {"action": action.value, "path": str(intent.path), "at": iso_time(time.time())}
        log.info(
            "file_quarantined" if action is Action.QUARANTINE else "file_symlinked",
            path=intent.path,
            original=dup.original.path,
            destination=intent.destination,
            tier=dup.match.tier.value,
            distance=dup.match.distances.phash,
            similarity=dup.match.similarity,
            audit_id=audit_id,
        )
        # it was perhaps the original of symlinks made earlier (a better copy took its
        # place): they follow to the new original rather than dangle
        from dedupd.relink import original_moved  # noqa: PLC0415 - relink imports this module

        try:
            original_moved(self.store, self.config, intent.path, dup.original.path, intent.original_sha256,
                           here=dup.original.host is None, roots=self.roots)  # fmt: skip
        except OSError as exc:  # the move itself is done and recorded; the links are left as they were
            log.error("original_moved_links_left", path=intent.path, original=dup.original.path,
                      error=exc.strerror or str(exc))  # fmt: skip
        return "done"

    @staticmethod
    def _sidecar(
        intent_id: int, audit_id: int | None, dest: Path, path: Path, root: Path | None, action: str,
        sha256: str, original: Path, original_sha256: str, link_target: Path | None, original_host: str | None,
    ) -> sidecar.QuarantineRecord:
        return sidecar.QuarantineRecord(
            file=dest.name,
            path=os.fsdecode(path),
            root=None if root is None else os.fsdecode(root),
            action=action,
            sha256=sha256,
            original=os.fsdecode(original),
            original_sha256=original_sha256,
            link_target=None if link_target is None else os.fsdecode(link_target),
            intent_id=intent_id,
            audit_id=audit_id,
            at=time.time(),
            original_host=original_host,
        )

    @staticmethod
    def _undo(move: Move) -> bool:
        """After an error at any step: put the taken file back, remove what was placed.

        True when nothing of the move is left; False when that could not be
        done: the intent then stays pending, for the next start to settle.
        """
        intent = move.intent
        try:
            return _roll_back(intent)
        except OSError as exc:
            log.error("action_undo_failed", path=intent.path, work=intent.work, destination=intent.destination,
                      error=exc.strerror or str(exc), note="left pending: settled on the next start")
            return False

    # --- recording --------------------------------------------------------

    def _record(self, dup: Duplicate, action: Action, outcome: str, detail: str) -> str:
        self.counts[f"{action.value}_{outcome}"] += 1
        if outcome == "dry_run":
            self.last_result = ActionResult(outcome, detail, None)
            log.info("would_act", action=action.value, path=dup.duplicate.path, original=dup.original.path, tier=dup.match.tier.value, detail=detail)
            return outcome
        with self.store.atomic():
            audit_id = self._append(dup, action, outcome, detail, None, None)
        self.last_result = ActionResult(outcome, detail, audit_id)
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
            if self.store.host:  # two hosts may find the same about their own files at one path
                key = f"{self.store.host}:{key}"
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
            decided_by=self.decided_by,
            original_host=dup.original.host,
        )


def link_text(target: Path, link: Path, style: SymlinkStyle) -> Path:
    """What a symlink at ``link`` holds to reach ``target``: ``target`` with its
    directory resolved, as a path from the link's (resolved) directory, or
    absolute.  Compared as text wherever dedupd checks a link is its own."""
    real_target = identity.real_parent(target)
    if style is SymlinkStyle.ABSOLUTE:
        return real_target
    return Path(os.path.relpath(real_target, identity.real(link.parent)))


# --- crash recovery ---------------------------------------------------------------


def act_on_unhandled(store: AnyStore, actor: Actor) -> int:
    """Handle duplicates whose match was stored but whose action never ran (a crash in between)."""
    found = unhandled(store)
    for dup in found:
        actor.handle(dup)
    if found:
        log.warning("interrupted_actions_retried", count=len(found))
    return len(found)


def unhandled(store: StoreBackend, ids: Iterable[int] | None = None) -> list[Duplicate]:
    """The duplicates (of ``ids``, or all) whose action is still owed, as the store has them now."""
    out = []
    for file_id in store.unacted_matches() if ids is None else store.unacted_matches(file_ids=ids):
        dup = current_form(store, file_id, "retried: its action was interrupted")
        if dup is not None:
            out.append(dup)
    return out


def current_form(store: StoreBackend, file_id: int, rule: str) -> Duplicate | None:
    """File ``file_id`` as the duplicate the store says it is now, or None if it is none."""
    dup_rec = store.record(file_id)
    found = store.match_of(file_id)
    if dup_rec is None or found is None:
        return None
    original_id, match, tie = found
    orig_rec = store.record(original_id)
    if orig_rec is None or dup_rec.fingerprint is None or orig_rec.fingerprint is None:
        return None
    return Duplicate(dup_rec, orig_rec, match, tie, rule)


def is_own_symlink(store: AnyStore, path: Path) -> bool:
    """Is ``path`` the symlink a completed symlink action left there?"""
    if not os.path.islink(path):
        return False
    for row in store.intent_rows(state="done", path=path):
        intent = Audit(store).intent(int(row[0]))
        if intent is not None and intent.action == "symlink" and fileops.is_our_symlink(path, intent.link_target):
            return True
    return False


def resolve_intents(store: AnyStore, audit: Audit) -> int:
    """Settle every intent a crash left pending; returns how many there were.

    Each file ends either where it was (the copy in quarantine, provably
    redundant, is removed) or in quarantine with its audit row and record;
    no private or temporary name is left behind.
    """
    from dedupd.restore import resolve_restore  # noqa: PLC0415 - restore imports this module

    pending = audit.intents("pending")
    for intent in pending:
        if intent.temp is not None and os.path.lexists(intent.temp):
            os.unlink(intent.temp)  # a partial copy; the source was never touched
        try:
            if intent.action == "restore":
                resolve_restore(store, audit, intent)
            else:
                _resolve_move(store, audit, intent)
        except OSError as exc:
            log.error("intent_unresolved", path=intent.path, destination=intent.destination,
                      reason=f"{exc.strerror or exc} while settling it; left for the next start")
    return len(pending)


def _taken(intent: Intent) -> bool:
    """Is the private name holding the file the intent took (its recorded inode)?"""
    work = intent.work
    if work is None or not fileops.is_regular(work):
        return False
    try:
        return FileStat.from_path(work) == intent.stat
    except OSError:
        return False


def _roll_back(intent: Intent) -> bool:
    """Undo a move that did not complete: the file back at its path, no private name left.

    Returns True when nothing of the move remains (the copy placed in
    quarantine was provably redundant and is removed); False when the copy
    must stay: it is then the only copy of the checked version (a newer file
    was saved over it at the path), and the move is to be completed instead.
    """
    work, dest = intent.work, intent.destination
    if work is not None and fileops.is_our_symlink(work, intent.link_target):
        os.unlink(work)  # the symlink was made but never swapped in
    here = intent.path
    ours = False
    if work is not None and fileops.is_regular(work):
        st = os.lstat(work)
        ours = (st.st_dev, st.st_ino) == (intent.stat.dev, intent.stat.ino)
        here = put_back(work, intent.path, intent.link_target)
        log.warning("file_put_back", path=intent.path, at=here, action=intent.action)
    elif _source_intact(intent):
        ours = True
    if not os.path.lexists(dest):
        sidecar.remove(dest, intent.id)
        return True
    if ours or fileops.remove_copy(dest, here, intent.sha256):
        # the checked file is still at its path (maybe written to since): the copy is not needed
        if os.path.lexists(dest):
            os.unlink(dest)
            fileops.fsync_dir(dest.parent)
        sidecar.remove(dest, intent.id)
        return True
    return False


def put_back(work: Path, path: Path, link_target: Path | None) -> Path:
    """Return a taken file from ``work`` to ``path``, never over another file; returns where it went.

    Our own symlink at ``path`` is swapped back atomically.  If a newer file
    holds the path, it stays, and the taken file goes beside it under a free name.
    """
    if link_target is not None and fileops.is_our_symlink(path, link_target):
        if fileops.exchange(work, path):
            if fileops.is_our_symlink(work, link_target):
                os.unlink(work)
            fileops.fsync_dir(path.parent)
            return path
        os.rename(work, path)  # replaces only our own symlink (checked just above)
        fileops.fsync_dir(path.parent)
        return path
    try:
        fileops.rename_no_replace(work, path)
        where = path
    except FileExistsError:
        where = fileops.free_name(path)
        fileops.rename_no_replace(work, where)
        log.warning("file_put_back_beside", path=path, at=where,
                    reason="a newer file was saved at its path meanwhile; both kept")
    fileops.fsync_dir(path.parent)
    return where


def _source_intact(intent: Intent) -> bool:
    try:
        return FileStat.from_path(intent.path) == intent.stat
    except OSError:
        return False


def _resolve_move(store: AnyStore, audit: Audit, intent: Intent) -> None:
    dest = intent.destination
    taken = _taken(intent)
    dest_ok = fileops.is_regular(dest) and fileops.sha256_of(dest) == intent.sha256
    if taken and dest_ok:
        # killed after the take: finish (the copy is verified, the file is ours)
        assert intent.work is not None
        if intent.link_target is not None and not os.path.lexists(intent.path):
            os.symlink(intent.link_target, intent.path)
        os.unlink(intent.work)
        fileops.fsync_dir(intent.path.parent)
        _complete(store, audit, intent)
        return
    if _roll_back(intent):
        with store.atomic():
            audit.finish(intent.id, "abandoned", None)
        log.warning("intent_rolled_back", path=intent.path, action=intent.action)
        return
    if dest_ok:
        # the file is no longer at its path as recorded, its verified copy is in
        # quarantine: the move completed but for its record
        if intent.link_target is not None and not os.path.lexists(intent.path):
            os.symlink(intent.link_target, intent.path)
        _complete(store, audit, intent)
        return
    log.error("intent_unresolved", path=intent.path, destination=dest,
              reason="something that is not a copy of the file is at its quarantine destination; left it")


def _complete(store: AnyStore, audit: Audit, intent: Intent) -> None:
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
            original_host=intent.original_host,
        )
        audit.finish(intent.id, "done", audit_id)
        moved = store.record_for_path(intent.path)
        if moved is not None and moved.stat == intent.stat:
            store.delete_file(moved.id)
    log.warning("intent_completed", path=intent.path, destination=intent.destination)
