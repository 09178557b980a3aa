"""``dedupd apply``: act, when a person asks, on duplicates recorded earlier.

The careful way to start is to scan with every action on ``log``, look at
``dedupd groups``, then set the actions and let dedupd act.  A second scan
does not act then: nothing changed, so nothing is matched again.  This module
is the step between: :func:`plan` lists every recorded duplicate that has no
completed action and that the current config would move, and :func:`execute`
hands each one to the same :class:`~dedupd.actions.Actor` the daemon and the
scan use, so every safety rule holds (the file and its original checked
again before the move, intents, quarantine records, audit rows, the rate
breaker, the root breakers of a running daemon).

The CLI command and the review page both call these two functions::

    items = plan(store, config, tiers={Tier.EXACT})
    results = execute(items, store, config, decided_by="cli")

Neither takes a lock: the caller opens the store and calls
``store.lock_writer_or_share()`` first (the writes are short transactions
that take turns with a running daemon's).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from dedupd import identity
from dedupd.actions import Actor
from dedupd.config import Config
from dedupd.errors import ConfigError, display_path
from dedupd.models import Action, Duplicate, Tier
from dedupd.store import AnyStore, read_daemon_status

log = structlog.get_logger()


@dataclass(frozen=True)
class PlannedAction:
    """One duplicate the current config would move, as the store knows it now."""

    file_id: int  # the duplicate's record
    path: Path
    original_id: int  # the original of its group
    original_path: Path
    tier: Tier
    similarity: float  # percent, 100 = identical
    action: Action  # quarantine or symlink (a tier on 'log' is never planned)
    bytes_freed: int  # the duplicate's size: what leaves the library
    reason: str  # why the two matched, in words


#: the Actor's reason when the rate breaker held an action back
BREAKER = "circuit breaker open"


@dataclass(frozen=True)
class Applied:
    """What :func:`execute` did with one planned action."""

    item: PlannedAction
    outcome: str  # done, skipped, failed
    detail: str  # why, in words
    audit_id: int | None  # the audit row written (None when the same finding was already recorded)

    @property
    def done(self) -> bool:
        return self.outcome == "done"


def plan(
    store: AnyStore,
    config: Config,
    tiers: Collection[Tier] | None = None,
    group_ids: Collection[int] | None = None,
    file_ids: Collection[int] | None = None,
) -> list[PlannedAction]:
    """Every recorded duplicate without a completed action that ``config`` would move.

    Left out: pairs a person restored or marked as not duplicates, pairs no
    keep rule decided (a tie: neither file is the original), and tiers whose
    action is ``log``.  ``tiers`` keeps only those tiers; ``group_ids`` only
    the groups whose original has one of these ids; ``file_ids`` only these
    duplicates.  Ordered by the original's path, then the duplicate's.
    Reads only; nothing is checked on disk yet (:func:`execute` does that).
    """
    out: list[PlannedAction] = []
    ids = store.unacted_matches(logged=True, original_ids=group_ids, file_ids=file_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found_matches = store.matches_of(chunk)
        records = store.records([*chunk, *(m[0] for m in found_matches.values())])
        for file_id in chunk:
            found = found_matches.get(file_id)
            dup = records.get(file_id)
            if found is None or dup is None or dup.fingerprint is None:
                continue
            original_id, match, tie = found
            if tie or (tiers is not None and match.tier not in tiers):
                continue
            action = config.actions.for_tier(match.tier)
            if action is Action.LOG:
                continue
            original = records.get(original_id)
            if original is None:
                continue
            out.append(
                PlannedAction(
                    file_id=file_id,
                    path=dup.path,
                    original_id=original_id,
                    original_path=original.path,
                    tier=match.tier,
                    similarity=match.similarity,
                    action=action,
                    bytes_freed=dup.stat.size,
                    reason=match.reason,
                )
            )
    out.sort(key=lambda p: (os.fsencode(p.original_path), os.fsencode(p.path)))
    return out


def roots_for(store: AnyStore, config: Config) -> tuple[Path, ...]:
    """The directories actions may happen in: the config's roots and every
    directory ``dedupd scan`` was given that still exists, resolved."""
    found = [identity.real(r) for r in config.roots]
    found += [identity.real(r) for r in store.scanned_roots() if r.is_dir()]
    return tuple(dict.fromkeys(found))


def execute(
    items: Sequence[PlannedAction],
    store: AnyStore,
    config: Config,
    *,
    roots: tuple[Path, ...] | None = None,
    decided_by: str | None = None,
) -> list[Applied]:
    """Apply each planned action through the Actor; one result per item, in order.

    Each item is looked up again first: a file that is no longer a duplicate
    of the same original (regrouped, changed, gone, restored or ignored since
    the plan was made) is skipped and says so.  The Actor then checks the
    file and its original on disk, and skips rather than act on doubt.
    ``roots`` defaults to :func:`roots_for`; a root whose circuit breaker a
    running daemon tripped (an unmounted share) is paused here too.
    ``decided_by`` is written into every audit row (``cli``, a user agent).
    Raises ConfigError (exit 78) when there is no quarantine directory to move into.
    """
    if items and (config.quarantine_dir is None or not config.quarantine_dir.is_dir()):
        raise ConfigError(
            "the quarantine_dir must exist before anything is moved (dedupd never creates "
            "the directory it moves files into)",
            source=config.source,
            key="quarantine_dir",
        )
    actor = Actor(store, config, roots=roots if roots is not None else roots_for(store, config))
    actor.decided_by = decided_by
    actor.paused.update(_daemon_breakers(store))
    owed = set(store.unacted_matches(logged=True, file_ids=[i.file_id for i in items]))
    results: list[Applied] = []
    for item in items:
        dup = _current(store, item, owed)
        if isinstance(dup, str):
            results.append(Applied(item, "skipped", dup, None))
            log.info("apply_skipped", path=item.path, original=item.original_path, reason=dup)
            continue
        outcome = actor.handle(dup)
        last = actor.last_result
        detail = last.detail if last is not None else outcome
        results.append(Applied(item, outcome, detail, last.audit_id if last is not None else None))
    done = sum(r.done for r in results)
    log.info("apply_finished", planned=len(items), done=done, not_done=len(items) - done, decided_by=decided_by)
    return results


def _current(store: AnyStore, item: PlannedAction, owed: set[int]) -> Duplicate | str:
    """The duplicate as the store knows it now, or why it is no longer to be acted on."""
    if item.file_id not in owed:
        return "no longer owed an action (moved, restored or marked as not duplicates since the plan)"
    dup = store.record(item.file_id)
    found = store.match_of(item.file_id)
    if dup is None or found is None or dup.path != item.path:
        return "no longer a recorded duplicate (changed or gone since the plan)"
    original_id, match, tie = found
    if original_id != item.original_id:
        return f"its group changed since the plan: now a copy of another original (record {original_id})"
    original = store.record(original_id)
    if original is None or dup.fingerprint is None or original.fingerprint is None:
        return "the file or its original can no longer be read"
    return Duplicate(dup, original, match, tie, f"applied on request: {display_path(item.original_path)} kept")


def _daemon_breakers(store: AnyStore) -> dict[Path, str]:
    """Roots whose breaker the running daemon has tripped (actions there are paused)."""
    status = read_daemon_status(store)
    pid = store.writer_pid()
    if status is None or pid is None or status.get("pid") != pid or status.get("state") != "running":
        return {}
    paused: dict[Path, str] = {}
    for root in status.get("roots", []):
        why = root.get("circuit_breaker")
        if why:
            paused[identity.real(Path(root["path"]))] = f"the running daemon's circuit breaker: {why}"
    return paused
