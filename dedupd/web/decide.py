"""The review page's decisions, by record id, each with the audit row that records it.

Each goes through the same code as the command of the same meaning:
"not duplicates" through the ignores and :meth:`~dedupd.grouping.Grouping.ignored` (``dedupd ignore``), a restore
through :func:`dedupd.restore.restore` (``dedupd restore``).  Choosing
another original is new: the choice is kept by content, like an ignore, so
that a rescan or a rename keeps it, and grouping asks it before the keep
rules.  ``by`` names who decided (the review page gives the browser's user
agent) and goes into the audit row's detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from dedupd.audit import Audit
from dedupd.config import Config
from dedupd.errors import display_path
from dedupd.grouping import Grouping
from dedupd.identity import resolve
from dedupd.restore import resolve_pending_restores
from dedupd.restore import restore as restore_one
from dedupd.store import Store

log = structlog.get_logger()

#: a user agent is cut to this many characters before it goes into the audit
MAX_AGENT = 200


@dataclass(frozen=True)
class Decided:
    """What came of a decision: done or refused, in words."""

    ok: bool
    detail: str


def by_review(user_agent: str | None) -> str:
    """``by`` for a decision made on the review page: its user agent, as safe text."""
    agent = display_path((user_agent or "unknown").strip() or "unknown")[:MAX_AGENT]
    return f"in dedupd review, user agent: {agent}"


def not_duplicates(store: Store, config: Config, duplicate_id: int, original_id: int, *, by: str) -> Decided:
    """Keep both: the pair is recorded as not duplicates, as ``dedupd ignore`` does, and leaves its group."""
    with store.atomic():
        dup, orig = store.record(duplicate_id), store.record(original_id)
        if dup is None or orig is None or dup.fingerprint is None or orig.fingerprint is None:
            return Decided(False, "one of the files is no longer in the store")
        sha_d, sha_o = dup.fingerprint.sha256, orig.fingerprint.sha256
        trail = Audit(store, config.audit_jsonl)
        new = trail.ignore(sha_o, orig.path, sha_d, dup.path, by, decided_by=by)
        if new is not None:
            trail.append(action="ignore", outcome="done", path=dup.path, original=orig.path, sha256=sha_d,
                         original_sha256=sha_o, detail=f"a person marked these as not duplicates {by}",
                         decided_by=by)
        regrouped = Grouping(store, config).ignored(sha_o, orig.path, sha_d, dup.path)
    log.info("pair_kept", path=dup.path, original=orig.path, regrouped=len(regrouped), by=by)
    return Decided(True, "kept both: not duplicates" if new is not None else "already recorded as not duplicates")


def keep_all(store: Store, config: Config, original_id: int, *, by: str) -> Decided:
    """Every duplicate of a group is not a duplicate of its original."""
    members = store.duplicates_of(original_id)
    if not members:
        return Decided(False, "this group has no duplicates any more")
    done = [not_duplicates(store, config, member, original_id, by=by) for member in members]
    kept = sum(d.ok for d in done)
    return Decided(kept > 0, f"kept all: {kept} pairs marked as not duplicates")


def choose_original(store: Store, config: Config, original_id: int, chosen_id: int, *, by: str) -> Decided:
    """Make ``chosen_id``, a duplicate in the group of ``original_id``, its original.

    The former original becomes a duplicate of it: nothing is moved now;
    ``dedupd apply`` (or the daemon at its next start) acts on it like on
    any duplicate whose action is owed.
    """
    with store.atomic():
        chosen, old = store.record(chosen_id), store.record(original_id)
        if chosen is None or old is None or chosen.fingerprint is None or old.fingerprint is None:
            return Decided(False, "one of the files is no longer in the store")
        if chosen.original_id != original_id:
            return Decided(False, "not a duplicate in this group any more (the group changed): reload the page")
        if store.is_chosen(old.fingerprint.sha256):
            store.remove_chosen(old.fingerprint.sha256)
        store.add_chosen(chosen.fingerprint.sha256, by)
        Audit(store, config.audit_jsonl).append(
            action="choose_original",
            outcome="done",
            path=chosen.path,
            original=old.path,
            sha256=chosen.fingerprint.sha256,
            original_sha256=old.fingerprint.sha256,
            detail=f"a person chose this file as the original instead of {display_path(old.path)} {by}",
        )
        regrouped = Grouping(store, config).rerooted(chosen_id)
    log.info("original_chosen", path=chosen.path, instead_of=old.path, regrouped=len(regrouped), by=by)
    return Decided(True, f"{display_path(chosen.path.name)} is now the original")


def restore_move(store: Store, config: Config, audit_id: int, *, by: str) -> Decided:
    """Undo one audited move, as ``dedupd restore ID`` does."""
    roots = resolve(config, strict=False).roots
    trail = Audit(store, config.audit_jsonl)
    resolve_pending_restores(store, trail)
    row = trail.get(audit_id)
    if row is None:
        return Decided(False, f"no audit entry #{audit_id}")
    result = restore_one(store, trail, row, roots=roots)
    if result.ok:
        log.info("move_restored", audit_id=audit_id, path=result.path, by=by)
    return Decided(result.ok, result.detail)
