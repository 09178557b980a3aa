"""The audit trail and the crash-safe record of moves ("intents").

An *intent* is written and committed before a file is moved, and marked
done in the same transaction that appends the audit row for the move.  On
start, :func:`dedupd.actions.resolve_intents` settles any intent a crash
left pending.  Audit rows are append-only; a row whose ``dedup_key`` is
already present is not written again, so re-running over the same files
adds nothing.  When ``audit_jsonl`` is configured each new row is also
appended to that file as one JSON line.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dedupd.models import FileStat
from dedupd.store import Store


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

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = str(value) if isinstance(value, Path) else value
        out["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at))
        return out


_AUDIT_COLUMNS = (
    "id, at, action, outcome, path, original, tier, phash_distance, dhash_distance,"
    " colour_distance, similarity, size, sha256, original_sha256, reason, detail,"
    " destination, intent_id, restores"
)


class Audit:
    """Writes and reads audit rows and intents.  Call inside ``store.atomic()``."""

    def __init__(self, store: Store, jsonl: Path | None = None) -> None:
        self.store = store
        self.jsonl = jsonl

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
        }
        if dedup_key is not None:
            hit = self.store.db.execute("SELECT id FROM audit WHERE dedup_key = ?", [dedup_key]).fetchone()
            if hit:
                return None
        audit_id = int(self.store.db.table("audit").insert(row).last_pk)  # type: ignore[arg-type]
        if self.jsonl is not None:
            entry = self.get(audit_id)
            assert entry is not None
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with self.jsonl.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry.as_json()) + "\n")
        return audit_id

    def get(self, audit_id: int) -> AuditRow | None:
        rows = self.rows("id = ?", [audit_id])
        return rows[0] if rows else None

    def rows(
        self, where: str = "1", params: list[Any] | None = None, *, newest: int | None = None
    ) -> list[AuditRow]:
        """Rows in order; with ``newest=N`` only the last N, newest first."""
        sql = f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE {where} ORDER BY id"
        if newest is not None:
            sql += f" DESC LIMIT {int(newest)}"
        out = []
        for r in self.store.db.execute(sql, params or []).fetchall():
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
    ) -> int:
        now = time.time()
        return int(
            self.store.db.table("intents")
            .insert(
                {
                    "created_at": now,
                    "updated_at": now,
                    "action": action,
                    "state": "pending",
                    "path": _b(path),
                    "destination": _b(destination),
                    "temp": None,
                    "link_target": _b(link_target),
                    "dev": stat.dev,
                    "ino": stat.ino,
                    "size": stat.size,
                    "mtime_ns": stat.mtime_ns,
                    "sha256": sha256,
                    "original": _b(original),
                    "original_sha256": original_sha256,
                    "audit_id": None,
                }
            )
            .last_pk  # type: ignore[arg-type]
        )

    def set_temp(self, intent_id: int, temp: Path) -> None:
        self.store.db.execute(
            "UPDATE intents SET temp = ?, updated_at = ? WHERE id = ?", [_b(temp), time.time(), intent_id]
        )

    def finish(self, intent_id: int, state: str, audit_id: int | None) -> None:
        self.store.db.execute(
            "UPDATE intents SET state = ?, audit_id = COALESCE(?, audit_id), updated_at = ? WHERE id = ?",
            [state, audit_id, time.time(), intent_id],
        )

    def intents(self, state: str) -> list[Intent]:
        return self._intents("state = ?", [state])

    def _intents(self, where: str, params: list[Any]) -> list[Intent]:
        out = []
        for r in self.store.db.execute(
            "SELECT id, action, state, path, destination, temp, link_target, dev, ino, size,"
            f" mtime_ns, sha256, original, original_sha256, audit_id FROM intents WHERE {where}"
            " ORDER BY id",
            params,
        ).fetchall():
            out.append(
                Intent(
                    id=r[0],
                    action=r[1],
                    state=r[2],
                    path=Path(os.fsdecode(r[3])),
                    destination=Path(os.fsdecode(r[4])),
                    temp=_p(r[5]),
                    link_target=_p(r[6]),
                    stat=FileStat(dev=r[7], ino=r[8], size=r[9], mtime_ns=r[10]),
                    sha256=r[11],
                    original=_p(r[12]),
                    original_sha256=r[13],
                    audit_id=r[14],
                )
            )
        return out

    def intent_for_audit(self, audit_id: int) -> Intent | None:
        row = self.store.db.execute("SELECT intent_id FROM audit WHERE id = ?", [audit_id]).fetchone()
        if row is None or row[0] is None:
            return None
        found = self._intents("id = ?", [row[0]])
        return found[0] if found else None

    # --- ignores ------------------------------------------------------------

    def ignore(self, sha_a: str, sha_b: str, note: str) -> bool:
        a, b = sorted((sha_a, sha_b))
        if self.store.is_ignored(a, b):
            return False
        self.store.db.table("ignores").insert({"sha_a": a, "sha_b": b, "decided_at": time.time(), "note": note})
        return True

