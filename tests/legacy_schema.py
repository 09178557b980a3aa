"""The store's migrations as they were written before one description served both
backends (``dedupd/store/schema.py``), kept as a test fixture: SQLite's sqlite-utils
functions m001-m016 and PostgreSQL's statement lists p001-p005, word for word.

Stores built with these are what an installed dedupd has on disk; tests open them
with today's code (nothing may run again) and compare their schema with a store
built fresh from the one description (it must be the same).
"""

from __future__ import annotations

from typing import Any

import psycopg
import sqlite_utils
from sqlite_utils.migrations import Migrations

from dedupd.models import Tier

# ---------------------------------------------------------------- SQLite, m001-m016

sqlite_migrations = Migrations("dedupd")
migrations = sqlite_migrations

@migrations()
def m001_files_and_matches(db: sqlite_utils.Database) -> None:
    db.table("files").create(
        {
            "id": int,
            "path": bytes,
            "dev": int,
            "ino": int,
            "size": int,
            "mtime_ns": int,
            "seq": int,
            "sha256": str,
            "pixel_digest": str,
            "phash": int,  # signed 64-bit: SQLite integers are signed
            "dhash": int,
            "colour": bytes,
            "width": int,
            "height": int,
            "format": str,
            "detail": float,
            "error": str,  # NULL when fingerprinted, else the reason it was skipped
            "error_detail": str,
            "indexed_at": float,
        },
        pk="id",
        not_null={"path", "dev", "ino", "size", "mtime_ns", "seq"},
    )
    db.table("files").create_index(["path"], unique=True)
    db.table("files").create_index(["dev", "ino"])
    db.table("files").create_index(["sha256"])
    db.table("files").create_index(["pixel_digest"])
    db.table("matches").create(
        {
            "file_id": int,  # the duplicate
            "original_id": int,  # its original, the root of the group
            "tier": str,
            "phash_distance": int,
            "dhash_distance": int,
            "colour_distance": float,
            "similarity": float,
            "orientation": str,
            "reason": str,
            "tie": int,  # 1: no keep rule decided which is the original
            "matched_at": float,
        },
        pk="file_id",
        foreign_keys=[("file_id", "files", "id"), ("original_id", "files", "id")],
    )
    db.table("matches").create_index(["original_id"])

#: Is the action on the match of file {file} to original {original} owed, as far as
#: the audit says: no row for the pair yet, or its last row failed or was held back
#: by a breaker.  Kept in ``matches.owed`` by the triggers of m014.
_OWED_BY_AUDIT = (
    "COALESCE((SELECT a.outcome = 'failed' OR (a.outcome = 'skipped' AND ("
    "    a.detail LIKE 'circuit breaker%' OR a.detail LIKE 'actions on this root are paused%'))"
    "  FROM files d JOIN files o ON o.id = {original}"
    "  JOIN audit a ON a.sha256 = d.sha256 AND a.original_sha256 = o.sha256 AND a.path = d.path"
    "  WHERE d.id = {file} ORDER BY a.id DESC LIMIT 1), 1)"
)

@migrations()
def m002_audit_intents_ignores(db: sqlite_utils.Database) -> None:
    # Append-only: one row per thing done (or not done) to a file.  Never updated.
    db.table("audit").create(
        {
            "id": int,
            "at": float,
            "action": str,  # log, quarantine, symlink, restore, ignore
            "outcome": str,  # done, skipped, failed, dry_run
            "path": bytes,
            "original": bytes,
            "tier": str,
            "phash_distance": int,
            "dhash_distance": int,
            "colour_distance": float,
            "similarity": float,
            "size": int,
            "sha256": str,
            "original_sha256": str,
            "reason": str,  # why it matched, in words
            "detail": str,  # why it was done or skipped, in words
            "destination": bytes,  # where the file went
            "intent_id": int,
            "restores": int,  # for a restore: the audit id it undid
            "dedup_key": str,  # the same event twice is recorded once
        },
        pk="id",
    )
    db.table("audit").create_index(["dedup_key"], unique=True)
    db.table("audit").create_index(["at"])
    # Mutable: what is being moved right now, so a crash can be resolved on start.
    db.table("intents").create(
        {
            "id": int,
            "created_at": float,
            "action": str,
            "state": str,  # pending, done, abandoned, restored
            "path": bytes,
            "destination": bytes,
            "temp": bytes,  # the copy being written across filesystems, if any
            "link_target": bytes,  # for symlink: what the link points to
            "dev": int,
            "ino": int,
            "size": int,
            "mtime_ns": int,
            "sha256": str,
            "original": bytes,
            "original_sha256": str,
            "audit_id": int,
            "updated_at": float,
        },
        pk="id",
    )
    db.table("intents").create_index(["state"])
    # Pairs a person decided are not to be deduplicated (by content, so renames keep it).
    db.table("ignores").create(
        {"sha_a": str, "sha_b": str, "decided_at": float, "note": str},
        pk=("sha_a", "sha_b"),
    )


@migrations()
def m003_daemon_status(db: sqlite_utils.Database) -> None:
    # One row per store: what the running daemon last said about itself.
    db.table("daemon").create(
        {"id": int, "pid": int, "started_at": float, "heartbeat_at": float, "state": str, "data": str},
        pk="id",
    )


@migrations()
def m004_audit_sha_index(db: sqlite_utils.Database) -> None:
    db.table("audit").create_index(["sha256", "original_sha256"])


@migrations()
def m005_orientation_variants(db: sqlite_utils.Database) -> None:
    # the hashes of the seven other orientations, so that re-matching from the
    # store (after an original is deleted or replaced) still finds turned copies
    db.table("files").add_column("variants", bytes)


@migrations()
def m006_verify_crop_keys(db: sqlite_utils.Database) -> None:
    # pHashes of crop windows and of the content box, the index keys that
    # propose cropped and padded copies to the verifier; NULL for files
    # fingerprinted before (they are found as before, uncropped)
    db.table("files").add_column("crop_keys", bytes)


# --- grouping: seniority and counts in O(1) ------------------------------------


@migrations()
def m008_grouping_seq_index_and_counters(db: sqlite_utils.Database) -> None:
    # next_seq() is MAX(seq): with an index that is one b-tree descent, not a scan
    db.table("files").create_index(["seq"])
    # status counts kept by triggers, so that reading them costs the same at
    # ten files and at ten million (COUNT(*) scans)
    db.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    names = ["files", "errors", "groups", "duplicates", *(f"duplicates_{t.value}" for t in Tier)]
    for name in names:
        db.execute("INSERT INTO counters (name, n) VALUES (?, 0)", [name])
    for trigger in _COUNTER_TRIGGERS.split("\nEND;")[:-1]:  # each trigger ends on its own line
        db.execute(trigger + "\nEND;")
    db.execute(
        "UPDATE counters SET n = (SELECT COUNT(*) FROM files WHERE error IS NULL) WHERE name = 'files'"
    )
    db.execute(
        "UPDATE counters SET n = (SELECT COUNT(*) FROM files WHERE error IS NOT NULL) WHERE name = 'errors'"
    )
    db.execute("UPDATE counters SET n = (SELECT COUNT(DISTINCT original_id) FROM matches) WHERE name = 'groups'")
    db.execute("UPDATE counters SET n = (SELECT COUNT(*) FROM matches) WHERE name = 'duplicates'")
    db.execute(
        "UPDATE counters SET n = (SELECT COUNT(*) FROM matches WHERE 'duplicates_' || tier = counters.name)"
        " WHERE name LIKE 'duplicates_%'"
    )


_COUNTER_TRIGGERS = """
CREATE TRIGGER counters_files_insert AFTER INSERT ON files BEGIN
  UPDATE counters SET n = n + 1 WHERE name = CASE WHEN NEW.error IS NULL THEN 'files' ELSE 'errors' END;
END;
CREATE TRIGGER counters_files_delete AFTER DELETE ON files BEGIN
  UPDATE counters SET n = n - 1 WHERE name = CASE WHEN OLD.error IS NULL THEN 'files' ELSE 'errors' END;
END;
CREATE TRIGGER counters_files_update AFTER UPDATE OF error ON files
WHEN (OLD.error IS NULL) != (NEW.error IS NULL) BEGIN
  UPDATE counters SET n = n - 1 WHERE name = CASE WHEN OLD.error IS NULL THEN 'files' ELSE 'errors' END;
  UPDATE counters SET n = n + 1 WHERE name = CASE WHEN NEW.error IS NULL THEN 'files' ELSE 'errors' END;
END;
CREATE TRIGGER counters_matches_insert AFTER INSERT ON matches BEGIN
  UPDATE counters SET n = n + 1 WHERE name IN ('duplicates', 'duplicates_' || NEW.tier);
  UPDATE counters SET n = n + 1 WHERE name = 'groups'
    AND (SELECT COUNT(*) FROM matches WHERE original_id = NEW.original_id) = 1;
END;
CREATE TRIGGER counters_matches_delete AFTER DELETE ON matches BEGIN
  UPDATE counters SET n = n - 1 WHERE name IN ('duplicates', 'duplicates_' || OLD.tier);
  UPDATE counters SET n = n - 1 WHERE name = 'groups'
    AND NOT EXISTS (SELECT 1 FROM matches WHERE original_id = OLD.original_id);
END;
CREATE TRIGGER counters_matches_update AFTER UPDATE OF tier, original_id ON matches BEGIN
  UPDATE counters SET n = n - 1 WHERE name = 'duplicates_' || OLD.tier;
  UPDATE counters SET n = n + 1 WHERE name = 'duplicates_' || NEW.tier;
  UPDATE counters SET n = n - 1 WHERE name = 'groups' AND OLD.original_id != NEW.original_id
    AND NOT EXISTS (SELECT 1 FROM matches WHERE original_id = OLD.original_id);
  UPDATE counters SET n = n + 1 WHERE name = 'groups' AND OLD.original_id != NEW.original_id
    AND (SELECT COUNT(*) FROM matches WHERE original_id = NEW.original_id) = 1;
END;
"""


@migrations()
def m008_grouping_crashes(db: sqlite_utils.Database) -> None:
    # worker deaths per file, so that a file that kills workers is skipped after a restart
    db.table("crashes").create(
        {"path": bytes, "size": int, "mtime_ns": int, "count": int, "at": float}, pk="path"
    )


@migrations()
def m008_grouping_audit_counters(db: sqlite_utils.Database) -> None:
    # `dedupd status` shows audit rows per action and outcome: counted as they are written
    db.execute(
        "INSERT INTO counters (name, n) SELECT 'audit:' || action || '_' || outcome, COUNT(*)"
        " FROM audit GROUP BY 1"
    )
    db.execute(
        "CREATE TRIGGER counters_audit_insert AFTER INSERT ON audit BEGIN"
        " INSERT INTO counters (name, n) VALUES ('audit:' || NEW.action || '_' || NEW.outcome, 1)"
        " ON CONFLICT (name) DO UPDATE SET n = n + 1;"
        " END"
    )


@migrations()
def m009_similar_pairs(db: sqlite_utils.Database) -> None:
    # Pairs that look alike but may be different captures: kept apart from
    # `matches`, so that a similar pair never makes a file a group member (its
    # own copies keep it as their original) and never reaches an action.
    db.execute(
        "CREATE TABLE similar_pairs ("
        " file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,"
        " other_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,"
        " tier TEXT NOT NULL, phash_distance INTEGER, dhash_distance INTEGER,"
        " colour_distance FLOAT, similarity FLOAT, orientation TEXT, reason TEXT,"
        " matched_at FLOAT, PRIMARY KEY (file_id, other_id))"
    )
    db.execute("CREATE INDEX similar_pairs_other ON similar_pairs (other_id)")
    # similar verdicts recorded as group members before this table existed
    db.execute(
        "INSERT OR IGNORE INTO similar_pairs (file_id, other_id, tier, phash_distance,"
        " dhash_distance, colour_distance, similarity, orientation, reason, matched_at)"
        " SELECT file_id, original_id, tier, phash_distance, dhash_distance, colour_distance,"
        " similarity, orientation, reason, matched_at FROM matches WHERE tier = 'similar'"
    )
    db.execute("DELETE FROM matches WHERE tier = 'similar'")


@migrations()
def m010_review_chosen_originals(db: sqlite_utils.Database) -> None:
    # Contents a person chose as their group's original (``dedupd review``):
    # by SHA-256 like ignores, so a rename or a rescan keeps the choice; the
    # keep rules are asked only between files nobody chose
    db.execute("CREATE TABLE chosen_originals (sha256 TEXT PRIMARY KEY, decided_at FLOAT, note TEXT)")


@migrations()
def m007_safety_identity_and_steps(db: sqlite_utils.Database) -> None:
    # ctime: a file rewritten in place with its size and mtime put back is
    # another version; work: the private name a move takes its source to (and
    # a restore its copy), so that a crash at any step can be settled; root:
    # the watched root the file was under, which a restore must stay inside
    db.table("files").add_column("ctime_ns", int)
    db.table("intents").add_column("work", bytes)
    db.table("intents").add_column("root", bytes)
    db.table("intents").add_column("ctime_ns", int)
    # the quarantine records are matched to their moves at every start, and a
    # symlink seen arriving is looked up by its path
    db.table("intents").create_index(["destination"])
    db.table("intents").create_index(["path"])


@migrations()
def m010_apply_roots_and_deciders(db: sqlite_utils.Database) -> None:
    # the directories a scan was given: `dedupd apply` acts on files a scan
    # found, after the fact, and must know the roots they were found under
    # (a root is what a move keeps relative paths to, and what a restore must
    # stay inside)
    db.execute("CREATE TABLE scanned_roots (path BLOB PRIMARY KEY, scanned_at FLOAT NOT NULL)")
    # who asked for an action: NULL for the daemon and scans, 'cli' for
    # `dedupd apply`, the browser's user agent for the review page
    db.table("audit").add_column("decided_by", str)


@migrations()
def m011_decisions(db: sqlite_utils.Database) -> None:
    # What a person decided, by file (content and path), replacing `ignores`
    # (by content alone, which ignored every copy of either picture). Old
    # ignores are kept with no paths: they still hold for any file with that
    # content, as they did.
    db.execute(
        "CREATE TABLE decisions (id INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
        " sha_a TEXT NOT NULL, path_a BLOB, sha_b TEXT, path_b BLOB,"
        " decided_at FLOAT NOT NULL, decided_by TEXT, note TEXT)"
    )
    db.execute("CREATE INDEX decisions_a ON decisions (sha_a, sha_b)")
    db.execute("CREATE INDEX decisions_path_a ON decisions (path_a)")
    db.execute("CREATE INDEX decisions_path_b ON decisions (path_b)")
    db.execute(
        "INSERT INTO decisions (kind, sha_a, sha_b, decided_at, note)"
        " SELECT 'not_duplicates', sha_a, sha_b, decided_at, note FROM ignores ORDER BY decided_at"
    )
    db.execute("DROP TABLE ignores")


@migrations()
def m012_intents_by_original(db: sqlite_utils.Database) -> None:
    # when an original is deleted, the symlinks that point at it are found by it
    db.table("intents").create_index(["original"])


@migrations()
def m013_crash_causes(db: sqlite_utils.Database) -> None:
    # an exception while working on a file counts like a worker's death: which one it was
    db.table("crashes").add_column("cause", str)


@migrations()
def m014_matches_owed(db: sqlite_utils.Database) -> None:
    # Which matches still owe their action, kept as they change, so that a start
    # finds them through an index instead of a pass over every match (1.3 s at
    # 50,000).  A match's flag is computed when it is made or re-pointed, when an
    # audit row is written for its pair (the newest row decides), and when its
    # file's path or content changes (the audit names both).
    owed = _OWED_BY_AUDIT.format(file="matches.file_id", original="matches.original_id")
    last_failed = (
        "(NEW.outcome = 'failed' OR (NEW.outcome = 'skipped' AND ("
        "NEW.detail LIKE 'circuit breaker%' OR NEW.detail LIKE 'actions on this root are paused%')))"
    )
    db.execute("ALTER TABLE matches ADD COLUMN owed INTEGER NOT NULL DEFAULT 1")
    db.execute(f"UPDATE matches SET owed = {owed}")
    db.execute("CREATE INDEX matches_owed ON matches (file_id) WHERE owed = 1")
    triggers = f"""
CREATE TRIGGER matches_owed_insert AFTER INSERT ON matches BEGIN
    UPDATE matches SET owed = {owed} WHERE file_id = NEW.file_id;
END;
CREATE TRIGGER matches_owed_update AFTER UPDATE OF file_id, original_id ON matches BEGIN
    UPDATE matches SET owed = {owed} WHERE file_id = NEW.file_id;
END;
CREATE TRIGGER matches_owed_audit AFTER INSERT ON audit
WHEN NEW.sha256 IS NOT NULL AND NEW.original_sha256 IS NOT NULL BEGIN
    UPDATE matches SET owed = {last_failed}
    WHERE file_id IN (SELECT id FROM files WHERE path = NEW.path AND sha256 = NEW.sha256)
    AND original_id IN (SELECT id FROM files WHERE sha256 = NEW.original_sha256);
END;
CREATE TRIGGER matches_owed_files AFTER UPDATE OF path, sha256 ON files BEGIN
    UPDATE matches SET owed = {owed} WHERE file_id = NEW.id OR original_id = NEW.id;
END;
"""
    for trigger in triggers.split("\nEND;")[:-1]:  # each trigger ends on its own line
        db.execute(trigger + "\nEND;")


@migrations()
def m015_matches_owed_audit_never_null(db: sqlite_utils.Database) -> None:
    # m014's audit trigger computed the flag from the new row alone, without the
    # COALESCE of _OWED_BY_AUDIT: a skipped row with no detail gave NULL, and the
    # insert failed on owed NOT NULL.  The same rule as the pass over every match
    # (and as PostgreSQL's p003): an outcome that says nothing leaves the action owed.
    last_failed = (
        "COALESCE(NEW.outcome = 'failed' OR (NEW.outcome = 'skipped' AND ("
        "NEW.detail LIKE 'circuit breaker%' OR NEW.detail LIKE 'actions on this root are paused%')), 1)"
    )
    db.execute("DROP TRIGGER matches_owed_audit")
    db.execute(
        f"""CREATE TRIGGER matches_owed_audit AFTER INSERT ON audit
WHEN NEW.sha256 IS NOT NULL AND NEW.original_sha256 IS NOT NULL BEGIN
    UPDATE matches SET owed = {last_failed}
    WHERE file_id IN (SELECT id FROM files WHERE path = NEW.path AND sha256 = NEW.sha256)
    AND original_id IN (SELECT id FROM files WHERE sha256 = NEW.original_sha256);
END;"""
    )


@migrations()
def m016_hosts(db: sqlite_utils.Database) -> None:
    # A store several hosts share (PostgreSQL, p005) names each file, intent,
    # audit row, crash count, scanned root and daemon row by its host as well as
    # its path: two hosts may both have /srv/photos/a.jpg.  A SQLite store is
    # one host's, and every row of it has host '' (`dedupd migrate` gives them
    # the host's name in the shared store); the columns are here so that the
    # two backends keep one schema and one set of queries.
    for table in ("files", "audit", "intents", "daemon"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN host TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE audit ADD COLUMN original_host TEXT")  # NULL: the original is on `host`
    db.execute("ALTER TABLE intents ADD COLUMN original_host TEXT")  # the same, for a move's record
    db.execute("DROP INDEX idx_files_path")
    db.execute("CREATE UNIQUE INDEX idx_files_host_path ON files (host, path)")
    # every host's files in path order (the review page's keyset, with the id)
    db.execute("CREATE INDEX idx_files_path ON files (path)")
    db.execute("CREATE UNIQUE INDEX idx_daemon_host ON daemon (host)")
    for table in ("crashes", "scanned_roots"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN host TEXT NOT NULL DEFAULT ''")
        db.table(table).transform(pk=("host", "path"))
    # a decision names each file by content, path and host (NULL: any host, as
    # one recorded without a path names any file with that content)
    for side in ("a", "b"):
        db.execute(f"ALTER TABLE decisions ADD COLUMN host_{side} TEXT")
        db.execute(f"UPDATE decisions SET host_{side} = '' WHERE path_{side} IS NOT NULL")


# ---------------------------------------------------------------- PostgreSQL, p001-p005

LOCK_CLASS = 0x64647064
WRITE_LOCK = 1

_COUNTER_NAMES = ["files", "errors", "groups", "duplicates", *(f"duplicates_{t.value}" for t in Tier)]


def _counter_triggers() -> list[str]:
    """Statement-level triggers over transition tables that keep ``counters``."""
    out = []
    for table, delta in (
        (
            "files",
            # files / errors: +1 per new row, -1 per old row, by its error column
            "UPDATE counters c SET n = c.n + d.delta FROM ("
            " SELECT CASE WHEN error IS NULL THEN 'files' ELSE 'errors' END AS name, SUM(s) AS delta"
            " FROM ({changes}) ch GROUP BY 1) d WHERE c.name = d.name AND d.delta <> 0;",
        ),
        (
            "matches",
            # duplicates and duplicates_<tier> by row; groups by original: one that
            # has members now and had none before the statement (or the reverse)
            "UPDATE counters c SET n = c.n + d.delta FROM ("
            " SELECT 'duplicates_' || tier AS name, SUM(s) AS delta FROM ({changes}) ch GROUP BY 1"
            " UNION ALL SELECT 'duplicates', SUM(s) FROM ({changes}) ch) d"
            " WHERE c.name = d.name AND d.delta <> 0;"
            " UPDATE counters SET n = n + (SELECT COALESCE(SUM((now.cnt > 0)::int - ((now.cnt - now.net) > 0)::int), 0)"
            " FROM (SELECT ids.net, (SELECT COUNT(*) FROM matches m WHERE m.original_id = ids.original_id) AS cnt"
            " FROM (SELECT original_id, SUM(s) AS net FROM ({changes}) ch GROUP BY original_id) ids) now)"
            " WHERE name = 'groups';",
        ),
    ):
        for event, changes in (
            ("INSERT", "SELECT *, 1 AS s FROM new_rows"),
            ("DELETE", "SELECT *, -1 AS s FROM old_rows"),
            ("UPDATE", "SELECT *, 1 AS s FROM new_rows UNION ALL SELECT *, -1 AS s FROM old_rows"),
        ):
            name = f"counters_{table}_{event.lower()}"
            tables = {
                "INSERT": "NEW TABLE AS new_rows",
                "DELETE": "OLD TABLE AS old_rows",
                "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
            }[event]
            out.append(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                + delta.format(changes=changes)
                + " RETURN NULL; END $$"
            )
            out.append(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {tables}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
    return out


#: Is the action on the match of file {file} to original {original} owed, as far
#: as the audit says (SQLite's ``_OWED_BY_AUDIT``, with PostgreSQL's booleans)
_PG_OWED_BY_AUDIT = (
    "COALESCE((SELECT (a.outcome = 'failed' OR (a.outcome = 'skipped' AND ("
    "    a.detail LIKE 'circuit breaker%' OR a.detail LIKE 'actions on this root are paused%')))::int"
    "  FROM files d JOIN files o ON o.id = {original}"
    "  JOIN audit a ON a.sha256 = d.sha256 AND a.original_sha256 = o.sha256 AND a.path = d.path"
    "  WHERE d.id = {file} ORDER BY a.id DESC LIMIT 1), 1)"
)

#: :data:`_PG_OWED_BY_AUDIT` where an audit row names its file by host and path
_PG_OWED_BY_AUDIT_HOST = _PG_OWED_BY_AUDIT.replace("AND a.path = d.path", "AND a.host = d.host AND a.path = d.path")


def _feed_triggers() -> list[str]:
    """Statement-level triggers that append to ``file_changes`` what a statement
    wrote to ``files`` or ``matches`` (see p005)."""
    out = []
    lock = f"PERFORM pg_advisory_xact_lock({LOCK_CLASS}, {WRITE_LOCK});"
    by = "current_setting('dedupd.host', true)"
    for table, rows in (
        ("files", "SELECT id, host, 'file', {by} FROM {rows}"),
        # a match names its duplicate; the feed names the duplicate's host,
        # which acts on it (a file gone with its match: '')
        ("matches", "SELECT r.file_id, COALESCE((SELECT f.host FROM files f WHERE f.id = r.file_id), ''),"
                    " 'match', {by} FROM {rows} r"),
    ):
        for event, ref, source in (
            ("INSERT", "NEW TABLE AS new_rows", "new_rows"),
            ("UPDATE", "NEW TABLE AS new_rows", "new_rows"),
            ("DELETE", "OLD TABLE AS old_rows", "old_rows"),
        ):
            name = f"file_changes_{table}_{event.lower()}"
            select = rows.format(by=by, rows=source)
            out.append(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {lock}"
                f" INSERT INTO file_changes (file_id, host, kind, by_host) {select}; RETURN NULL; END $$"
            )
            out.append(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {ref}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
    return out


#: The schema, in order; each entry is applied once, in one transaction, and
#: recorded in ``dedupd_migrations``.  The first is the SQLite store's schema as
#: its migrations m001-m012 leave it; a change to one backend's schema is made
#: to the other's in the same commit (``test_both_backends_have_one_schema``).
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "p001_schema_of_sqlite_m012",
        [
            "CREATE TABLE files ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, path BYTEA NOT NULL,"
            " dev BIGINT NOT NULL, ino BIGINT NOT NULL, size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL,"
            " seq BIGINT NOT NULL, sha256 TEXT, pixel_digest TEXT, phash BIGINT, dhash BIGINT, colour BYTEA,"
            " width INTEGER, height INTEGER, format TEXT, detail DOUBLE PRECISION, error TEXT,"
            " error_detail TEXT, indexed_at DOUBLE PRECISION, variants BYTEA, crop_keys BYTEA, ctime_ns BIGINT)",
            "CREATE UNIQUE INDEX idx_files_path ON files (path)",
            "CREATE INDEX idx_files_dev_ino ON files (dev, ino)",
            "CREATE INDEX idx_files_sha256 ON files (sha256)",
            "CREATE INDEX idx_files_pixel_digest ON files (pixel_digest)",
            "CREATE INDEX idx_files_seq ON files (seq)",
            "CREATE TABLE matches ("
            " file_id BIGINT PRIMARY KEY REFERENCES files (id), original_id BIGINT REFERENCES files (id),"
            " tier TEXT, phash_distance INTEGER, dhash_distance INTEGER, colour_distance DOUBLE PRECISION,"
            " similarity DOUBLE PRECISION, orientation TEXT, reason TEXT, tie INTEGER, matched_at DOUBLE PRECISION)",
            "CREATE INDEX idx_matches_original_id ON matches (original_id)",
            "CREATE TABLE audit ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at DOUBLE PRECISION, action TEXT,"
            " outcome TEXT, path BYTEA, original BYTEA, tier TEXT, phash_distance INTEGER,"
            " dhash_distance INTEGER, colour_distance DOUBLE PRECISION, similarity DOUBLE PRECISION,"
            " size BIGINT, sha256 TEXT, original_sha256 TEXT, reason TEXT, detail TEXT, destination BYTEA,"
            " intent_id BIGINT, restores BIGINT, dedup_key TEXT, decided_by TEXT)",
            "CREATE UNIQUE INDEX idx_audit_dedup_key ON audit (dedup_key)",
            "CREATE INDEX idx_audit_at ON audit (at)",
            "CREATE INDEX idx_audit_sha256_original_sha256 ON audit (sha256, original_sha256)",
            "CREATE TABLE intents ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, created_at DOUBLE PRECISION,"
            " action TEXT, state TEXT, path BYTEA, destination BYTEA, temp BYTEA, link_target BYTEA,"
            " dev BIGINT, ino BIGINT, size BIGINT, mtime_ns BIGINT, sha256 TEXT, original BYTEA,"
            " original_sha256 TEXT, audit_id BIGINT, updated_at DOUBLE PRECISION, work BYTEA, root BYTEA,"
            " ctime_ns BIGINT)",
            "CREATE INDEX idx_intents_state ON intents (state)",
            "CREATE INDEX idx_intents_destination ON intents (destination)",
            "CREATE INDEX idx_intents_path ON intents (path)",
            "CREATE INDEX idx_intents_original ON intents (original)",
            "CREATE TABLE daemon (id INTEGER PRIMARY KEY, pid INTEGER, started_at DOUBLE PRECISION,"
            " heartbeat_at DOUBLE PRECISION, state TEXT, data TEXT)",
            "CREATE TABLE counters (name TEXT PRIMARY KEY, n BIGINT NOT NULL)",
            "CREATE TABLE crashes (path BYTEA PRIMARY KEY, size BIGINT, mtime_ns BIGINT, count INTEGER,"
            " at DOUBLE PRECISION)",
            "CREATE TABLE similar_pairs ("
            " file_id BIGINT NOT NULL REFERENCES files (id) ON DELETE CASCADE,"
            " other_id BIGINT NOT NULL REFERENCES files (id) ON DELETE CASCADE,"
            " tier TEXT NOT NULL, phash_distance INTEGER, dhash_distance INTEGER,"
            " colour_distance DOUBLE PRECISION, similarity DOUBLE PRECISION, orientation TEXT, reason TEXT,"
            " matched_at DOUBLE PRECISION, PRIMARY KEY (file_id, other_id))",
            "CREATE INDEX similar_pairs_other ON similar_pairs (other_id)",
            "CREATE TABLE chosen_originals (sha256 TEXT PRIMARY KEY, decided_at DOUBLE PRECISION, note TEXT)",
            "CREATE TABLE scanned_roots (path BYTEA PRIMARY KEY, scanned_at DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE decisions ("
            " id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, kind TEXT NOT NULL,"
            " sha_a TEXT NOT NULL, path_a BYTEA, sha_b TEXT, path_b BYTEA,"
            " decided_at DOUBLE PRECISION NOT NULL, decided_by TEXT, note TEXT)",
            "CREATE INDEX decisions_a ON decisions (sha_a, sha_b)",
            "CREATE INDEX decisions_path_a ON decisions (path_a)",
            "CREATE INDEX decisions_path_b ON decisions (path_b)",
            "INSERT INTO counters (name, n) SELECT unnest(%(names)s::text[]), 0",
            *_counter_triggers(),
            # audit rows by action and outcome, for `dedupd status`
            "CREATE FUNCTION counters_audit_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO counters (name, n) VALUES ('audit:' || NEW.action || '_' || NEW.outcome, 1)"
            " ON CONFLICT (name) DO UPDATE SET n = counters.n + 1; RETURN NULL; END $$",
            "CREATE TRIGGER counters_audit_insert AFTER INSERT ON audit FOR EACH ROW"
            " EXECUTE FUNCTION counters_audit_insert()",
        ],
    ),
    # SQLite's m013: which exception a crash was (NULL: a worker's death)
    ("p002_crash_causes", ["ALTER TABLE crashes ADD COLUMN cause TEXT"]),
    # SQLite's m014: which matches still owe their action, kept as they change
    # (see there); here a BEFORE trigger sets a match's own flag as it is written
    (
        "p003_matches_owed",
        [
            "ALTER TABLE matches ADD COLUMN owed INTEGER NOT NULL DEFAULT 1",
            "UPDATE matches SET owed = " + _PG_OWED_BY_AUDIT.format(file="matches.file_id", original="matches.original_id"),
            "CREATE INDEX matches_owed ON matches (file_id) WHERE owed = 1",
            "CREATE FUNCTION matches_owed_own() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " NEW.owed := " + _PG_OWED_BY_AUDIT.format(file="NEW.file_id", original="NEW.original_id") + ";"
            " RETURN NEW; END $$",
            "CREATE TRIGGER matches_owed_own BEFORE INSERT OR UPDATE OF file_id, original_id ON matches"
            " FOR EACH ROW EXECUTE FUNCTION matches_owed_own()",
            # the newest audit row of a pair decides (a skipped row without a
            # detail: owed, as the pass over every match says; SQLite's trigger
            # would write NULL there and fail)
            "CREATE FUNCTION matches_owed_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " UPDATE matches SET owed = COALESCE((NEW.outcome = 'failed' OR (NEW.outcome = 'skipped' AND ("
            " NEW.detail LIKE 'circuit breaker%' OR NEW.detail LIKE 'actions on this root are paused%')))::int, 1)"
            " WHERE file_id IN (SELECT id FROM files WHERE path = NEW.path AND sha256 = NEW.sha256)"
            " AND original_id IN (SELECT id FROM files WHERE sha256 = NEW.original_sha256);"
            " RETURN NULL; END $$",
            "CREATE TRIGGER matches_owed_audit AFTER INSERT ON audit FOR EACH ROW"
            " WHEN (NEW.sha256 IS NOT NULL AND NEW.original_sha256 IS NOT NULL)"
            " EXECUTE FUNCTION matches_owed_audit()",
            "CREATE FUNCTION matches_owed_files() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " UPDATE matches SET owed = "
            + _PG_OWED_BY_AUDIT.format(file="matches.file_id", original="matches.original_id")
            + " WHERE file_id = NEW.id OR original_id = NEW.id; RETURN NULL; END $$",
            "CREATE TRIGGER matches_owed_files AFTER UPDATE OF path, sha256 ON files FOR EACH ROW"
            " EXECUTE FUNCTION matches_owed_files()",
        ],
    ),
    # The audit counters once per statement, from its transition table, like
    # the other counters.  Once per row, every audit row of one transaction
    # updated the same counter row again, and each update walked the chain of
    # versions the transaction had left before it: quadratic, so that copying
    # 10,000 audit rows in one transaction (dedupd migrate) took minutes.
    (
        "p004_audit_counters_per_statement",
        [
            "DROP TRIGGER counters_audit_insert ON audit",
            "CREATE OR REPLACE FUNCTION counters_audit_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " INSERT INTO counters (name, n) SELECT 'audit:' || action || '_' || outcome, COUNT(*) FROM new_rows"
            " GROUP BY 1 ON CONFLICT (name) DO UPDATE SET n = counters.n + excluded.n; RETURN NULL; END $$",
            "CREATE TRIGGER counters_audit_insert AFTER INSERT ON audit REFERENCING NEW TABLE AS new_rows"
            " FOR EACH STATEMENT EXECUTE FUNCTION counters_audit_insert()",
        ],
    ),
    # Several hosts in one store (SQLite's m016 adds the same columns).  Files,
    # intents, audit rows, crash counts, scanned roots and daemon rows are named
    # by host and path.  What a store held before was one host's: the host that
    # opens it first after the upgrade takes it (``%(host)s``).  The owed flag's
    # functions compare hosts as well as paths.  And ``file_changes``, the feed
    # through which each host's in-memory index learns of the others' files.
    (
        "p005_hosts",
        [
            *(
                statement
                for table in ("files", "audit", "intents", "daemon", "crashes", "scanned_roots")
                for statement in (
                    f"ALTER TABLE {table} ADD COLUMN host TEXT NOT NULL DEFAULT ''",
                    f"UPDATE {table} SET host = %(host)s",
                )
            ),
            "ALTER TABLE audit ADD COLUMN original_host TEXT",
            "ALTER TABLE intents ADD COLUMN original_host TEXT",
            # a decision names each file by content, path and host (NULL: any host)
            "ALTER TABLE decisions ADD COLUMN host_a TEXT",
            "ALTER TABLE decisions ADD COLUMN host_b TEXT",
            "UPDATE decisions SET host_a = %(host)s WHERE path_a IS NOT NULL",
            "UPDATE decisions SET host_b = %(host)s WHERE path_b IS NOT NULL",
            "DROP INDEX idx_files_path",
            "CREATE UNIQUE INDEX idx_files_host_path ON files (host, path)",
            # every host's files in path order (the review page's keyset, with the id)
            "CREATE INDEX idx_files_path ON files (path, id)",
            "CREATE UNIQUE INDEX idx_daemon_host ON daemon (host)",
            "ALTER TABLE crashes DROP CONSTRAINT crashes_pkey",
            "ALTER TABLE crashes ADD PRIMARY KEY (host, path)",
            "ALTER TABLE scanned_roots DROP CONSTRAINT scanned_roots_pkey",
            "ALTER TABLE scanned_roots ADD PRIMARY KEY (host, path)",
            "CREATE OR REPLACE FUNCTION matches_owed_own() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " NEW.owed := " + _PG_OWED_BY_AUDIT_HOST.format(file="NEW.file_id", original="NEW.original_id") + ";"
            " RETURN NEW; END $$",
            "CREATE OR REPLACE FUNCTION matches_owed_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " UPDATE matches SET owed = COALESCE((NEW.outcome = 'failed' OR (NEW.outcome = 'skipped' AND ("
            " NEW.detail LIKE 'circuit breaker%' OR NEW.detail LIKE 'actions on this root are paused%')))::int, 1)"
            " WHERE file_id IN (SELECT id FROM files WHERE host = NEW.host AND path = NEW.path AND sha256 = NEW.sha256)"
            " AND original_id IN (SELECT id FROM files WHERE sha256 = NEW.original_sha256);"
            " RETURN NULL; END $$",
            "CREATE OR REPLACE FUNCTION matches_owed_files() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " UPDATE matches SET owed = "
            + _PG_OWED_BY_AUDIT_HOST.format(file="matches.file_id", original="matches.original_id")
            + " WHERE file_id = NEW.id OR original_id = NEW.id; RETURN NULL; END $$",
            # The feed: one row per file row or match written, numbered in the
            # order the writes committed.  Its triggers take the store's write
            # lock before they number (every writer's transaction already holds
            # it: this covers any that does not), and the lock is held to the
            # commit, so a transaction that numbers after another commits after
            # it: a reader that has seen number n has seen everything before n.
            "CREATE TABLE file_changes (rev BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " file_id BIGINT NOT NULL, host TEXT NOT NULL, kind TEXT NOT NULL, by_host TEXT,"
            " at DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM clock_timestamp()))",
            *_feed_triggers(),
            # the feed's rows below this were dropped (a host whose mark is below it reads its index afresh)
            "CREATE TABLE file_changes_pruned (below BIGINT NOT NULL)",
            "INSERT INTO file_changes_pruned (below) VALUES (0)",
        ],
    ),
]



def apply_postgres(url: str, *, host: str = "", upto: int = len(MIGRATIONS)) -> None:
    """Build a PostgreSQL store at ``url`` as the old ``PostgresStore._migrate`` did,
    with the first ``upto`` steps of :data:`MIGRATIONS`."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS dedupd_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)"
        )
        for name, statements in MIGRATIONS[:upto]:
            for statement in statements:
                if "%(" in statement:
                    params: dict[str, Any] = {"names": _COUNTER_NAMES, "host": host}
                    conn.execute(statement, params)
                else:
                    conn.execute(statement.encode())
            conn.execute("INSERT INTO dedupd_migrations (name, applied_at) VALUES (%s, 0)", [name])
