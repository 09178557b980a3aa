"""The real CLI against a real PostgreSQL store: ``--db postgresql://...`` selects it
for scan, groups, status and audit, with the same results as a SQLite store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

import helpers as H
from helpers import RunCli


def _tree(root: Path) -> None:
    a = H.save(H.photo(50), root / "a.jpg")
    shutil.copyfile(a, root / "a_copy.jpg")
    H.save(H.photo(51), root / "b.png")
    H.save(H.photo(51).resize((192, 144), Image.Resampling.LANCZOS), root / "sub" / "b_small.jpg", quality=80)
    H.save(H.photo(52), root / "c.png")


def _groups(run_cli: RunCli, db: object, root: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    proc = run_cli("groups", "--format", "json", db=db)
    assert proc.returncode == 0, proc.stderr
    rel = lambda p: str(Path(p).relative_to(root))  # noqa: E731
    return [(rel(g["original"]), [(rel(d["path"]), d["tier"]) for d in g["duplicates"]]) for g in json.loads(proc.stdout)]


def test_scan_groups_status_and_audit_against_postgresql(tmp_path: Path, run_cli: RunCli, pg_url: str) -> None:
    """A scan with --db postgresql://... groups as a scan into SQLite does; a rescan reads
    nothing; status and audit read the same store; a deleted file is removed from it."""
    root = tmp_path / "photos"
    _tree(root)
    first = run_cli("scan", root, db=pg_url)
    assert first.returncode == 0, first.stderr
    lite = run_cli("scan", root)  # the same tree into this test's SQLite store
    assert lite.returncode == 0, lite.stderr
    expected = [("a.jpg", [("a_copy.jpg", "exact")]), ("b.png", [("sub/b_small.jpg", "near")])]
    assert _groups(run_cli, pg_url, root) == expected == _groups(run_cli, None, root)
    again = run_cli("scan", root, db=pg_url)
    assert again.returncode == 0 and "0 fingerprinted, 5 unchanged" in again.stdout, again.stdout + again.stderr
    status = run_cli("status", "--format", "json", db=pg_url)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert (data["files"], data["groups"], data["duplicates"]) == (5, 2, 2), data
    audit = run_cli("audit", "--format", "json", db=pg_url)
    assert audit.returncode == 0, audit.stderr
    assert sorted(Path(r["path"]).name for r in json.loads(audit.stdout)) == ["a_copy.jpg", "b_small.jpg"]
    (root / "c.png").unlink()
    assert run_cli("scan", root, db=pg_url).returncode == 0
    assert json.loads(run_cli("status", "--format", "json", db=pg_url).stdout)["files"] == 4


def test_an_unreachable_postgresql_store_is_exit_74_with_the_url_and_no_password(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """A server that is not there: one error line naming the store (password hidden), exit 74."""
    url = f"postgresql://dedupd:s3cret@/nowhere?host={tmp_path}&port=1"
    proc = run_cli("status", db=url)
    assert proc.returncode == 74, proc.stdout + proc.stderr
    assert "postgresql://dedupd:***@/nowhere" in proc.stderr and "s3cret" not in proc.stdout + proc.stderr


def test_migrate_copies_a_sqlite_store_into_postgresql(tmp_path: Path, run_cli: RunCli, pg_url: str) -> None:
    """dedupd migrate copies files, groups, audit and intents: groups, status and audit
    read the same from both stores, a rescan against PostgreSQL reads nothing, a restore
    from it brings the quarantined copy back; a second migrate into it is refused (74)."""
    root, quarantine = tmp_path / "photos", tmp_path / "q"
    _tree(root)
    config = tmp_path / "c.yaml"
    config.write_text(f"quarantine_dir: {quarantine}\nactions: {{exact: quarantine}}\n")
    assert run_cli("scan", root, "--config", config).returncode == 0
    assert not (root / "a_copy.jpg").exists()
    moved = run_cli("migrate", "--to", pg_url, "--config", config)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "files: 4, matches: 1" in moved.stdout and "audit: 2, intents: 1" in moved.stdout, moved.stdout
    for command in (("groups", "--format", "json"), ("audit", "--format", "json")):
        lite, pg = run_cli(*command, "--config", config), run_cli(*command, "--config", config, db=pg_url)
        assert lite.returncode == pg.returncode == 0, pg.stderr
        assert json.loads(pg.stdout) == json.loads(lite.stdout)
    status = [json.loads(run_cli("status", "--format", "json", db=db).stdout) for db in (None, pg_url)]
    assert [{k: s[k] for k in ("files", "groups", "duplicates", "actions")} for s in status] == [
        {k: status[0][k] for k in ("files", "groups", "duplicates", "actions")}
    ] * 2
    again = run_cli("scan", root, "--config", config, db=pg_url)
    assert again.returncode == 0 and "0 fingerprinted" in again.stdout, again.stdout + again.stderr
    restored = run_cli("restore", "--all", "--config", config, db=pg_url)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert (root / "a_copy.jpg").read_bytes() == (root / "a.jpg").read_bytes()
    refused = run_cli("migrate", "--to", pg_url, "--config", config)
    assert refused.returncode == 74 and "not empty" in refused.stderr, refused.stderr
