"""The audit trail and the crash-safe record of moves ("intents").

An *intent* is written and committed before a file is moved (or put back),
naming every name the operation will use (the private name its source is
taken to, the temporary copy, the destination), and marked done in the same
transaction that appends the audit row.  On start,
:func:`dedupd.actions.resolve_intents` settles any intent a crash left
pending.  Audit rows are append-only; a row whose ``dedup_key`` is already
present is not written again, so re-running over the same files adds
nothing.  When ``audit_jsonl`` is configured each new row is also appended
to that file as one JSON line; a failure to write it is logged and retried
with the next row, never fatal (the store is the record).  The SQL itself
lives in the store ("audit and intents" section of
:class:`dedupd.store.base.SqlStore`, one for both backends).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from dedupd.models import DecisionKind, FileStat
from dedupd.store import AnyStore

log = structlog.get_logger()


def _b(path: Path | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _p(raw: bytes | None) -> Path | None:
    return None if raw is None else Path(os.fsdecode(raw))


@dataclass(frozen=True)
class Intent:
    id: int
    action: str
    state: str
    path: Path
    destination: Path
    temp: Path | None
    link_target: Path | None
    stat: FileStat
    sha256: str
    original: Path | None
    original_sha256: str | None
    audit_id: int | None
    #: the private name beside ``path`` the source is taken to (a move) or the
    #: copy is placed at before it is renamed into place (a restore)
    work: Path | None = None
    root: Path | None = None  # the watched root ``path`` was under
    original_host: str | None = None  # the original's host, when another (a store several hosts share)


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: float
    action: str
    outcome: str
    path: Path
    original: Path | None
    tier: str | None
    phash_distance: int | None
    dhash_distance: int | None
    colour_distance: float | None
    similarity: float | None
    size: int | None
    sha256: str | None
    original_sha256: str | None
    reason: str | None
    detail: str | None
    destination: Path | None
    intent_id: int | None
    restores: int | None
    #: who asked for it: None for the daemon and scans, ``cli`` for ``dedupd
    #: apply``, the browser's user agent for the review page
    decided_by: str | None = None
    #: the host that did it ('' in a store of one host), and the one the
    #: original is on when that is another (None: the same)
    host: str = ""
    original_host: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = str(value) if isinstance(value, Path) else value
        out["time"] = iso_time(self.at)
        return out


def iso_time(at: float) -> str:
    """The one time format dedupd shows, to people and in JSON: ISO 8601 in
    local time with its zone, to the second (``2026-11-30T12:05:09+01:00``)."""
    return datetime.datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


class Audit:
    """Writes and reads audit rows and intents.  Call inside ``store.atomic()``."""

    def __init__(self, store: AnyStore, jsonl: Path | None = None) -> None:
        self.store = store
        self.jsonl = jsonl
        self.unmirrored: list[int] = []  # rows the JSONL file could not take yet

    # --- audit rows ---------------------------------------------------------

    def append(
        self,
        *,
        action: str,
        outcome: str,
        path: Path,
        detail: str,
        original: Path | None = None,
        tier: str | None = None,
        distances: tuple[int, int, float] | None = None,
        similarity: float | None = None,
        size: int | None = None,
        sha256: str | None = None,
        original_sha256: str | None = None,
        reason: str | None = None,
        destination: Path | None = None,
        intent_id: int | None = None,
        restores: int | None = None,
        dedup_key: str | None = None,
        decided_by: str | None = None,
        original_host: str | None = None,
    ) -> int | None:
        """Append a row; returns its id, or None when an identical event is already recorded."""
        row = {
            "at": time.time(),
            "action": action,
            "outcome": outcome,
            "path": _b(path),
            "original": _b(original),
            "tier": tier,
            "phash_distance": distances[0] if distances else None,
            "dhash_distance": distances[1] if distances else None,
            "colour_distance": round(distances[2], 2) if distances else None,
            "similarity": similarity,
            "size": size,
            "sha256": sha256,
            "original_sha256": original_sha256,
            "reason": reason,
            "detail": detail,
            "destination": _b(destination),
            "intent_id": intent_id,
            "restores": restores,
            "dedup_key": dedup_key,
            "decided_by": decided_by,
            "original_host": original_host,
        }
        audit_id = self.store.audit_insert(row)
        if audit_id is not None:
            self._mirror(audit_id)
        return audit_id

    def _mirror(self, audit_id: int) -> None:
        """Append the row (and any earlier one that failed) to the JSONL file; never raises."""
        if self.jsonl is None:
            return
        self.unmirrored.append(audit_id)
        try:
            lines = []
            for i in self.unmirrored:
                entry = self.get(i)
                if entry is not None:
                    lines.append(json.dumps(entry.as_json()) + "\n")
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with self.jsonl.open("ab+") as f:
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")  # end a line an earlier failed write cut short
                f.write("".join(lines).encode("utf-8"))
        except OSError as exc:
            log.error("audit_jsonl_write_failed", path=self.jsonl, error=exc.strerror or str(exc),
                      waiting=len(self.unmirrored), note="the store keeps the row; retried with the next one")
            return
        self.unmirrored.clear()

    def get(self, audit_id: int) -> AuditRow | None:
        rows = self.rows(audit_id=audit_id)
        return rows[0] if rows else None

    def rows(
        self,
        *,
        audit_id: int | None = None,
        since: float | None = None,
        moves: bool = False,
        not_log: bool = False,
        newest: int | None = None,
        sha256: str | None = None,
        mine: bool = False,
    ) -> list[AuditRow]:
        """Rows in order; with ``newest=N`` only the last N, newest first; ``mine``:
        only this host's (what it may undo)."""
        out = []
        rows = self.store.audit_rows(
            audit_id=audit_id, since=since, moves=moves, not_log=not_log, newest=newest, sha256=sha256, mine=mine
        )
        for r in rows:
            values = list(r)
            for i in (4, 5, 16):
                values[i] = _p(values[i])
            out.append(AuditRow(*values))
        return out

    # --- intents ------------------------------------------------------------

    def begin(
        self,
        *,
        action: str,
        path: Path,
        destination: Path,
        stat: FileStat,
        sha256: str,
        original: Path | None,
        original_sha256: str | None,
        link_target: Path | None = None,
        work: Path | None = None,
        temp: Path | None = None,
        root: Path | None = None,
        original_host: str | None = None,
    ) -> int:
        now = time.time()
        return self.store.intent_insert(
            {
                "created_at": now,
                "updated_at": now,
                "action": action,
                "state": "pending",
                "path": _b(path),
                "destination": _b(destination),
                "temp": _b(temp),
                "link_target": _b(link_target),
                "dev": stat.dev,
                "ino": stat.ino,
                "size": stat.size,
                "mtime_ns": stat.mtime_ns,
                "ctime_ns": stat.ctime_ns,
                "sha256": sha256,
                "original": _b(original),
                "original_sha256": original_sha256,
                "audit_id": None,
                "work": _b(work),
                "root": _b(root),
                "original_host": original_host,
            }
        )

    def set_temp(self, intent_id: int, temp: Path) -> None:
        self.store.intent_update(intent_id, {"temp": _b(temp), "updated_at": time.time()})

    def relink(self, audit_id: int, intent_id: int) -> None:
        """Point a move's audit row at its intent re-created after the store lost it."""
        self.store.audit_link_intent(audit_id, intent_id)

    def finish(self, intent_id: int, state: str, audit_id: int | None) -> None:
        self.store.intent_update(intent_id, {"state": state, "audit_id": audit_id, "updated_at": time.time()})

    def intents(self, state: str) -> list[Intent]:
        return [_intent(r) for r in self.store.intent_rows(state=state)]

    def intent(self, intent_id: int) -> Intent | None:
        found = self.store.intent_rows(intent_id=intent_id)
        return _intent(found[0]) if found else None

    def intents_at(self, destination: Path) -> list[Intent]:
        """This host's intents that put a file at ``destination``, oldest first."""
        return [_intent(r) for r in self.store.intent_rows(destination=destination)]

    def intent_for_audit(self, audit_id: int) -> Intent | None:
        intent_id = self.store.intent_of_audit(audit_id)
        return None if intent_id is None else self.intent(intent_id)

    # --- ignores ------------------------------------------------------------

    def ignore(
        self,
        sha_a: str,
        path_a: Path,
        sha_b: str,
        path_b: Path,
        note: str,
        decided_by: str | None = None,
        other_host: str | None = None,
    ) -> int | None:
        """Record that these two files are not duplicates (``path_a`` this host's,
        ``path_b`` on ``other_host``, None: this one); the decision's id, or None
        if already recorded."""
        return self.store.add_decision(
            DecisionKind.NOT_DUPLICATES, sha_a, path_a, sha_b, path_b, note=note, decided_by=decided_by,
            other_host=other_host,
        )

    def keep(self, sha256: str, path: Path, note: str, decided_by: str | None = None) -> int | None:
        """Record that a person restored this file: it is not acted on again."""
        return self.store.add_decision(DecisionKind.KEEP, sha256, path, note=note, decided_by=decided_by)


def _intent(r: tuple[Any, ...]) -> Intent:
    return Intent(
        id=r[0],
        action=r[1],
        state=r[2],
        path=Path(os.fsdecode(r[3])),
        destination=Path(os.fsdecode(r[4])),
        temp=_p(r[5]),
        link_target=_p(r[6]),
        stat=FileStat(dev=r[7], ino=r[8], size=r[9], mtime_ns=r[10], ctime_ns=r[17] or 0),
        sha256=r[11],
        original=_p(r[12]),
        original_sha256=r[13],
        audit_id=r[14],
        work=_p(r[15]),
        root=_p(r[16]),
        original_host=r[18],
    )
