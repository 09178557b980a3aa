"""What people decide about files, recorded so that dedupd does not undo it.

Two kinds (:class:`~dedupd.models.DecisionKind`): a pair of files marked
"not duplicates" (``dedupd ignore A B``, "keep all" on the review page), and
a file kept because a person restored it (recorded by the restore itself).
A file is named by its content and its path together; see
:meth:`dedupd.store.Store.is_ignored` for why.  The CLI and the review page
call these functions; the caller opens the store and calls
``store.lock_writer_or_share()`` first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dedupd.audit import Audit
from dedupd.config import Config
from dedupd.errors import InputPathError
from dedupd.fileops import sha256_of
from dedupd.grouping import Grouping
from dedupd.identity import real_parent
from dedupd.models import Decision, DecisionKind, Duplicate, Record
from dedupd.store import AnyStore


@dataclass(frozen=True)
class Decided:
    """The outcome of recording or removing a decision."""

    decision_id: int | None  # None when the same decision was already recorded
    regrouped: tuple[Duplicate, ...]  # matches made or moved as a result (for the Actor, or a count)


def stored_path(path: Path) -> Path:
    """``path`` as the store names files: absolute, its directory resolved (as a walk of a resolved root finds it)."""
    return real_parent(Path(os.path.abspath(path)))


def ignore_pair(store: AnyStore, config: Config, a: Path, b: Path, *, decided_by: str | None = None) -> Decided:
    """Record that files ``a`` and ``b`` are not duplicates, audit it, and undo their pairing.

    Their content is read now (SHA-256); raises OSError when a file cannot be read.
    """
    path_a, path_b = stored_path(a), stored_path(b)
    sha_a, sha_b = sha256_of(path_a), sha256_of(path_b)
    trail = Audit(store, config.audit_jsonl)
    with store.atomic():
        new = trail.ignore(sha_a, path_a, sha_b, path_b, "marked as not duplicates", decided_by=decided_by)
        if new is not None:
            trail.append(action="ignore", outcome="done", path=path_b, original=path_a, sha256=sha_b,
                         original_sha256=sha_a, detail=f"a person marked these as not duplicates (decision #{new})",
                         decided_by=decided_by)  # fmt: skip
        # what they join instead is acted on by 'dedupd apply', or by the daemon at its next start or reload
        regrouped = Grouping(store, config).ignored(sha_a, path_a, sha_b, path_b)
    return Decided(new, tuple(regrouped))


def ignore_across_hosts(store: AnyStore, config: Config, mine: Record, theirs: Record, *,
                        decided_by: str | None = None) -> Decided:  # fmt: skip
    """Record that ``mine``, a file of this host, and ``theirs``, another host's
    (a store several hosts share), are not duplicates; audit it, and undo their
    pairing.  This host's file is read now (SHA-256; OSError when it cannot be);
    the other is named as the store knows it, since it cannot be read here."""
    assert mine.host is None and theirs.host is not None and theirs.fingerprint is not None
    sha_a, sha_b = sha256_of(mine.path), theirs.fingerprint.sha256
    trail = Audit(store, config.audit_jsonl)
    with store.atomic():
        new = trail.ignore(sha_a, mine.path, sha_b, theirs.path, "marked as not duplicates",
                           decided_by=decided_by, other_host=theirs.host)  # fmt: skip
        if new is not None:
            trail.append(action="ignore", outcome="done", path=mine.path, original=theirs.path, sha256=sha_a,
                         original_sha256=sha_b, detail=f"a person marked these as not duplicates (decision #{new})",
                         decided_by=decided_by, original_host=theirs.host)  # fmt: skip
        regrouped = Grouping(store, config).unpaired(mine.id, theirs.id)
    return Decided(new, tuple(regrouped))


def remove(store: AnyStore, config: Config, decision_id: int, *, decided_by: str | None = None) -> Decided:
    """Take back a decision; the files it named may be grouped and acted on again.

    Raises InputPathError (exit 66) when there is no such decision.
    """
    found = store.decisions(decision_id)
    if not found:
        raise InputPathError(f"no decision #{decision_id} (see 'dedupd ignores list')")
    decision: Decision = found[0]
    trail = Audit(store, config.audit_jsonl)
    with store.atomic():
        store.remove_decision(decision_id)
        trail.append(action="unignore", outcome="done", path=decision.path or Path("-"),
                     original=decision.other_path, sha256=decision.sha256,
                     original_sha256=decision.other_sha256, decided_by=decided_by,
                     detail=f"a person took back decision #{decision_id} ({decision.kind.value})")  # fmt: skip
        regrouped: list[Duplicate] = []
        if decision.kind is DecisionKind.NOT_DUPLICATES:
            paths = [p for p in (decision.path, decision.other_path) if p is not None]
            regrouped = Grouping(store, config).unignored(paths)
    return Decided(decision_id, tuple(regrouped))
