"""The review page's decisions: record ids in, the shared code of the command line called.

"Not duplicates" is :func:`dedupd.decisions.ignore_pair` (``dedupd ignore``),
applying is :func:`dedupd.apply.plan` and :func:`dedupd.apply.execute`
(``dedupd apply``), a restore is :func:`dedupd.restore.restore` (``dedupd
restore``).  Choosing another original is the page's own: the choice is
kept by content (``chosen_originals``), so a rescan or a rename keeps it,
and grouping asks it before the keep rules.  ``by`` names who decided (the
browser's user agent); it is each audit row's ``decided_by``.  The caller
opens the store for writing and calls ``store.lock_writer_or_share()``.
"""

from __future__ import annotations

import collections
from collections.abc import Collection
from dataclasses import dataclass

import structlog

from dedupd import apply, decisions
from dedupd.audit import Audit
from dedupd.config import Config
from dedupd.errors import display_path
from dedupd.grouping import Grouping
from dedupd.identity import resolve
from dedupd.models import Record
from dedupd.restore import resolve_pending_restores
from dedupd.restore import restore as restore_one
from dedupd.store import AnyStore

log = structlog.get_logger()

#: a user agent is cut to this many characters before it goes into the audit
MAX_AGENT = 200


@dataclass(frozen=True)
class Decided:
    """What came of a decision: done or refused, in words."""

    ok: bool
    detail: str


def by_review(user_agent: str | None) -> str:
    """``decided_by`` for a decision made on the review page: its user agent, as safe text."""
    agent = display_path((user_agent or "unknown").strip() or "unknown")[:MAX_AGENT]
    return f"review: {agent}"


def not_duplicates(store: AnyStore, config: Config, duplicate_id: int, original_id: int, *, by: str) -> Decided:
    """Keep both: the two files are recorded as not duplicates, as ``dedupd ignore A B`` does."""
    dup, orig = store.record(duplicate_id), store.record(original_id)
    if dup is None or orig is None or dup.fingerprint is None or orig.fingerprint is None:
        return Decided(False, "one of the files is no longer in the store")
    mine, theirs = (dup, orig) if dup.host is None else (orig, dup)
    if mine.host is not None:
        return Decided(False, _elsewhere(mine) or "")
    try:
        if theirs.host is not None:  # one file here, one on another host: decided here, for this host's file
            done = decisions.ignore_across_hosts(store, config, mine, theirs, decided_by=by)
        else:
            done = decisions.ignore_pair(store, config, orig.path, dup.path, decided_by=by)
    except OSError as exc:
        return Decided(False, f"{display_path(exc.filename or dup.path)}: {exc.strerror or exc}")
    log.info("pair_kept", path=dup.path, original=orig.path, regrouped=len(done.regrouped), by=by)
    if done.decision_id is None:
        return Decided(True, "already recorded as not duplicates")
    return Decided(True, f"kept both: not duplicates (decision #{done.decision_id})")


def _elsewhere(*records: Record) -> str | None:
    """Why a decision about these files is not this host's to make: one is
    another host's (a store several hosts share), whose files are read and
    named only there.  None when all are this host's."""
    for record in records:
        if record.host is not None:
            return f"{display_path(record.path.name)} is on host {record.host}: decide on that host's review page"
    return None


def keep_all(store: AnyStore, config: Config, original_id: int, *, by: str) -> Decided:
    """Every duplicate of a group is not a duplicate of its original."""
    members = store.duplicates_of(original_id)
    if not members:
        return Decided(False, "this group has no duplicates any more")
    done = [not_duplicates(store, config, member, original_id, by=by) for member in members]
    return kept_all(done)


def kept_all(done: list[Decided]) -> Decided:
    """What "keep all" came to: how many pairs were marked, and why the others were not."""
    kept = sum(d.ok for d in done)
    refused = sorted({d.detail for d in done if not d.ok})
    why = f" ({'; '.join(refused)})" if refused else ""
    return Decided(kept > 0, f"kept all: {kept} pairs marked as not duplicates{why}")


def choose_original(store: AnyStore, config: Config, original_id: int, chosen_id: int, *, by: str) -> Decided:
    """Make ``chosen_id``, a duplicate in the group of ``original_id``, its original.

    The former original becomes a duplicate of it: nothing is moved now;
    "apply" (or ``dedupd apply``) acts on it like on any duplicate whose
    action is owed.
    """
    with store.atomic():
        chosen, old = store.record(chosen_id), store.record(original_id)
        if chosen is None or old is None or chosen.fingerprint is None or old.fingerprint is None:
            return Decided(False, "one of the files is no longer in the store")
        if chosen.original_id != original_id:
            return Decided(False, "not a duplicate in this group any more (the group changed): reload the page")
        elsewhere = _elsewhere(chosen, old)
        if elsewhere:
            return Decided(False, elsewhere)
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
            detail=f"a person chose this file as the original instead of {display_path(old.path)}",
            decided_by=by,
        )
        regrouped = Grouping(store, config).rerooted(chosen_id)
    log.info("original_chosen", path=chosen.path, instead_of=old.path, regrouped=len(regrouped), by=by)
    return Decided(True, f"{display_path(chosen.path.name)} is now the original")


def apply_files(
    store: AnyStore, config: Config, *, by: str, group_ids: Collection[int] | None = None, file_ids: Collection[int] | None = None
) -> Decided:
    """Apply the configured action to the duplicates named (by group or by file) that are owed one,
    as ``dedupd apply`` does: planned, then each checked again and moved by the Actor."""
    items = apply.plan(store, config, group_ids=group_ids, file_ids=file_ids)
    if not items:
        return Decided(False, "nothing to apply: no duplicate here is owed an action under the current config "
                              "(its tier's action is log, no rule decided the original, or it was acted on or decided)")  # fmt: skip
    results = apply.execute(items, store, config, decided_by=by)
    outcomes = collections.Counter(r.outcome for r in results)
    freed = sum(r.item.bytes_freed for r in results if r.done)
    words = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
    why = "; ".join(sorted({f"{display_path(r.item.path.name)}: {r.detail}" for r in results if not r.done}))
    detail = f"applied: {words}; {freed / 1e6:.1f} MB freed" + (f" ({why})" if why else "")
    if outcomes.get("done"):
        detail += "; 'Moved files' undoes it"
    return Decided(outcomes.get("done", 0) > 0, detail)


def restore_move(store: AnyStore, config: Config, audit_id: int, *, by: str) -> Decided:
    """Undo one audited move, as ``dedupd restore ID`` does."""
    roots = resolve(config, strict=False).roots
    trail = Audit(store, config.audit_jsonl)
    resolve_pending_restores(store, trail)
    row = trail.get(audit_id)
    if row is None:
        return Decided(False, f"no audit entry #{audit_id}")
    result = restore_one(store, trail, row, roots=roots, decided_by=by)
    return Decided(result.ok, result.detail)
