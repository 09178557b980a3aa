"""The real CLI against a real PostgreSQL store: ``--db postgresql://...`` selects it
for scan, groups, status and audit, with the same results as a SQLite store."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

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


def test_scan_groups_and_status_against_postgresql(tmp_path: Path, run_cli: RunCli, pg_url: str) -> None:
    """A scan with --db postgresql://... finds the exact and the near copy; a rescan reads
    nothing; status reads the counts from the same store."""
    root = tmp_path / "photos"
    _tree(root)
    first = run_cli("scan", root, db=pg_url)
    assert first.returncode == 0, first.stderr
    assert _groups(run_cli, pg_url, root) == [("a.jpg", [("a_copy.jpg", "exact")]), ("b.png", [("sub/b_small.jpg", "near")])]
    again = run_cli("scan", root, db=pg_url)
    assert again.returncode == 0 and "0 fingerprinted, 5 unchanged" in again.stdout, again.stdout + again.stderr
    status = run_cli("status", "--format", "json", db=pg_url)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert (data["files"], data["groups"], data["duplicates"], data["actions"]) == (5, 2, 2, {"log_done": 2}), data


def test_an_unreachable_postgresql_store_is_exit_74_with_the_url_and_no_password(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """A server that is not there: one error line naming the store (password hidden), exit 74."""
    url = f"postgresql://dedupd:s3cret@/nowhere?host={tmp_path}&port=1"
    proc = run_cli("status", db=url)
    assert proc.returncode == 74, proc.stdout + proc.stderr
    assert "postgresql://dedupd:***@/nowhere" in proc.stderr and "s3cret" not in proc.stdout + proc.stderr


def test_migrate_copies_a_sqlite_store_into_postgresql(tmp_path: Path, run_cli: RunCli, pg_url: str) -> None:
    """dedupd migrate copies every record, match, audit row and intent with its id, and the
    counters; a restore from the PostgreSQL store brings the quarantined copy back; a second
    migrate into it is refused (74)."""
    from dedupd.models import PostgresUrl
    from dedupd.store import open_store

    root, quarantine = tmp_path / "photos", tmp_path / "q"
    _tree(root)
    config = tmp_path / "c.yaml"
    config.write_text(f"quarantine_dir: {quarantine}\nactions: {{exact: quarantine}}\n")
    quarantine.mkdir(parents=True, exist_ok=True)
    assert run_cli("scan", root, "--config", config).returncode == 0
    assert not (root / "a_copy.jpg").exists()
    moved = run_cli("migrate", "--to", pg_url, "--config", config)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "files: 4, audit: 2, intents: 1" in moved.stdout and "matches: 1" in moved.stdout, moved.stdout
    lite, pg = open_store(tmp_path / "state" / "dedupd.db", readonly=True), open_store(PostgresUrl(pg_url), readonly=True)
    try:
        ids = [i for i, _ in lite.ids_under(root)]
        assert len(ids) == 4 and pg.records(ids) == lite.records(ids)
        assert list(pg.groups()) == list(lite.groups())
        assert (pg.counts(), pg.action_counts()) == (lite.counts(), lite.action_counts())
        # a SQLite store is one host's (host ''); copied, its rows are the migrating host's
        hostless = [(r[:20], r[21]) for r in pg.audit_rows()]
        assert hostless == [(r[:20], r[21]) for r in lite.audit_rows()]
        assert {r[20] for r in pg.audit_rows()} == {socket.gethostname()} and pg.host == socket.gethostname()
        assert pg.intent_rows() == lite.intent_rows()
        assert pg.unacted_matches() == lite.unacted_matches() and pg.unacted_matches(logged=True) == [ids[-1]]
        assert pg.scanned_roots() == lite.scanned_roots() == [root]
    finally:
        lite.close()
        pg.close()
    restored = run_cli("restore", "--all", "--config", config, db=pg_url)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert (root / "a_copy.jpg").read_bytes() == (root / "a.jpg").read_bytes()
    refused = run_cli("migrate", "--to", pg_url, "--config", config)
    assert refused.returncode == 74 and "this host shares it already" in refused.stderr, refused.stderr


def test_the_daemon_against_postgresql(tmp_path: Path, pg_url: str) -> None:
    """dedupd run --db postgresql://... quarantines a copy dropped into its root (one done
    audit row), status shows it running; restored beside it, the copy stays; it stops with 0."""
    from daemon_helpers import daemon_env, picture, sha256, wait_until, write

    with daemon_env(tmp_path, db=pg_url) as env:  # type: ignore[arg-type]  # --db takes the URL as it takes a path
        original = write(env.root / "a.jpg", picture(1))
        daemon = env.start()
        daemon.wait_event("catch_up_finished")
        copy = env.root / "copy of a.jpg"
        shutil.copy(original, copy)
        wait_until(lambda: not copy.exists() and (env.quarantine / copy.name).exists(), "the copy quarantined")
        [row] = env.moves()
        assert (row["path"], row["original"], row["tier"]) == (str(copy), str(original), "exact")
        status = env.status()
        assert status["daemon"]["pid"] == daemon.proc.pid and status["actions"] == {"quarantine_done": 1}, status
        env.restore_all()
        daemon.wait_event("pair_ignored", path=copy)
        assert sha256(copy) == sha256(picture(1)) and len(env.moves()) == 1
        assert daemon.stop() == 0


def test_the_daemon_pauses_while_postgresql_is_down_and_loses_nothing(tmp_path: Path, pg_cluster: Any) -> None:
    """PostgreSQL stopped under a running daemon: it logs store_unavailable, stays up
    (same pid) and touches nothing; files that arrive meanwhile are handled once the
    server is back (store_available), each copy quarantined with one done row."""
    from daemon_helpers import daemon_env, picture, sha256, wait_until, write

    with daemon_env(tmp_path, db=pg_cluster.new_database()) as env:
        original = write(env.root / "a.jpg", picture(1))
        daemon = env.start()
        daemon.wait_event("catch_up_finished")
        copy_a = env.root / "copy of a.jpg"
        shutil.copy(original, copy_a)
        wait_until(lambda: (env.quarantine / copy_a.name).exists(), "the first copy quarantined")
        pg_cluster.halt()
        try:
            daemon.wait_event("store_unavailable")
            second = write(env.root / "b.png", picture(2, "PNG"))
            copy_b = env.root / "copy of b.png"
            shutil.copy(second, copy_b)
            later = time.monotonic() + 2.0  # settle_seconds is 0.5 in daemon_env: time to act, were it not paused
            wait_until(lambda: time.monotonic() >= later, "a few settle windows")
            assert daemon.alive() and copy_b.exists() and not (env.quarantine / copy_b.name).exists()
        finally:
            pg_cluster.resume()
        daemon.wait_event("store_available")
        wait_until(lambda: not copy_b.exists() and (env.quarantine / copy_b.name).exists(), "the second copy quarantined")
        moves = sorted((row["path"], row["original"]) for row in env.moves())
        assert moves == [(str(copy_a), str(original)), (str(copy_b), str(second))], moves
        assert sha256(env.quarantine / copy_b.name) == sha256(second) and second.exists() and original.exists()
        assert env.status()["daemon"]["pid"] == daemon.proc.pid
        assert daemon.stop() == 0


def test_a_daemon_paused_for_postgresql_stops_on_sigterm(tmp_path: Path, pg_cluster: Any) -> None:
    """SIGTERM while the daemon waits for PostgreSQL ends it at once with exit 0
    (systemctl stop during an outage), and it said that it stopped while paused."""
    from daemon_helpers import daemon_env

    with daemon_env(tmp_path, db=pg_cluster.new_database()) as env:
        daemon = env.start()
        pg_cluster.halt()
        try:
            daemon.wait_event("store_unavailable")
            assert daemon.stop(timeout=10) == 0
            assert daemon.events("daemon_stopped", while_paused=True)
        finally:
            pg_cluster.resume()


def test_scan_dry_run_against_postgresql_changes_no_file_and_no_row(tmp_path: Path, run_cli: RunCli, pg_url: str) -> None:
    """scan --dry-run on a PostgreSQL store works on a private SQLite copy of it: it
    reports the duplicates and the moves it would make, and neither the files nor
    the database change (the matches found before are still there, no new one)."""
    root = tmp_path / "photos"
    _tree(root)
    assert run_cli("scan", root / "sub", db=pg_url).returncode == 0  # the database holds something already
    quarantine = tmp_path / "quarantine"
    config = tmp_path / "dedupd.yaml"
    config.write_text(f"quarantine_dir: {quarantine}\nactions:\n  exact: quarantine\n  near: quarantine\n")
    before = H.file_state(root)
    rows_before = _rows(pg_url)
    dry = run_cli("scan", root, "--config", config, "--dry-run", db=pg_url)
    assert dry.returncode == 0, dry.stderr
    # the copy holds what the database held: the file scanned before is not read again
    # (nor counted unchanged: b.png, walked first, takes its place and it would move)
    assert "5 files seen, 4 fingerprinted, 0 unchanged" in dry.stdout, dry.stdout
    assert "duplicates found: exact: 1, near: 1; actions: quarantine_dry_run: 2" in dry.stdout, dry.stdout
    assert H.file_state(root) == before and not quarantine.exists()
    assert _rows(pg_url) == rows_before


def _rows(url: str) -> dict[str, int]:
    import psycopg  # noqa: PLC0415 - only the PostgreSQL tests need it

    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("files", "matches", "audit", "intents")}  # type: ignore[index]


def test_ignore_and_apply_against_postgresql(tmp_path: Path, run_cli: RunCli, pg_url: str) -> None:
    """After a log-only scan into PostgreSQL, ignore takes the near pair out of the groups
    and apply quarantines the exact copy, the one action still owed."""
    root, quarantine = tmp_path / "photos", tmp_path / "q"
    _tree(root)
    quarantine.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(f"quarantine_dir: {quarantine}\nactions: {{exact: quarantine, near: quarantine}}\n")
    quarantine.mkdir(parents=True, exist_ok=True)
    assert run_cli("scan", root, db=pg_url).returncode == 0  # no config: log only
    ignored = run_cli("ignore", root / "b.png", root / "sub" / "b_small.jpg", db=pg_url)
    assert ignored.returncode == 0, ignored.stderr
    assert _groups(run_cli, pg_url, root) == [("a.jpg", [("a_copy.jpg", "exact")])]
    applied = run_cli("apply", "--format", "json", "--config", config, db=pg_url)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert [(Path(a["path"]).name, a["outcome"]) for a in json.loads(applied.stdout)["actions"]] == [("a_copy.jpg", "done")]
    assert not (root / "a_copy.jpg").exists() and (root / "sub" / "b_small.jpg").exists()


def _host_configs(tmp_path: Path, roots: dict[str, Path], near: dict[str, str] | None = None) -> dict[str, Path]:
    """A config per host: its name, its root, its quarantine and its SQLite store (what
    ``migrate`` copies); exact and near copies quarantined, unless ``near`` says otherwise
    for a host."""
    configs = {}
    for host, root in roots.items():
        configs[host] = tmp_path / f"{host}.yaml"
        (tmp_path / f"{host}-quarantine").mkdir(exist_ok=True)
        configs[host].write_text(
            f"host: {host}\nroots: [{root}]\nquarantine_dir: {tmp_path / (host + '-quarantine')}\n"
            f"db: {tmp_path / (host + '.db')}\nactions:\n  exact: quarantine\n"
            f"  near: {(near or {}).get(host, 'quarantine')}\n"
        )
    return configs


def test_scans_on_two_hosts_verify_a_copy_on_the_pixels_the_other_host_shares(
    tmp_path: Path, run_cli: RunCli, pg_url: str
) -> None:
    """``dedupd scan`` on beta finds a half-size copy of alpha's picture only similar
    (alpha's file is not read on beta) and asks alpha for its pixels; alpha's next scan
    shares them; beta's next scan places the copy again, verified on them: near, and
    quarantined by beta (``near: quarantine``), the audit naming alpha's original; ``status``
    says what waits for which host's pixels, and what a host has yet to answer."""
    roots = {host: tmp_path / host for host in ("alpha", "beta")}
    picture = H.photo(60, size=(1024, 768))
    H.save(picture, roots["alpha"] / "picture.jpg", quality=92)
    small = H.save(picture.resize((512, 384), Image.Resampling.LANCZOS), roots["beta"] / "small.jpg", quality=85)
    configs = _host_configs(tmp_path, roots)

    def scan(host: str) -> str:
        proc = run_cli("scan", roots[host], "--config", configs[host], db=pg_url)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def pixels(host: str) -> dict[str, Any]:
        proc = run_cli("status", "--format", "json", "--config", configs[host], db=pg_url)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["pixels"]  # type: ignore[no-any-return]

    scan("alpha")
    first = scan("beta")
    assert "duplicates found: none" in first and small.exists(), first  # similar: listed for review
    assert pixels("beta") == {"waiting": {"alpha": 1}, "to_answer": 0}
    assert pixels("alpha") == {"waiting": {}, "to_answer": 1}
    text = run_cli("status", "--config", configs["beta"], db=pg_url).stdout
    assert "files here waiting for another host's pixels: 1 on alpha" in text, text
    scan("alpha")  # shares what beta asked for
    assert pixels("alpha") == {"waiting": {}, "to_answer": 0}
    second = scan("beta")
    assert "near: 1" in second and "quarantine_done: 1" in second, second
    assert not small.exists() and (tmp_path / "beta-quarantine" / "small.jpg").exists()
    assert pixels("beta") == {"waiting": {}, "to_answer": 0}
    audit = run_cli("audit", "--format", "json", "--config", configs["beta"], db=pg_url)
    assert audit.returncode == 0, audit.stderr
    (row,) = [r for r in json.loads(audit.stdout) if r["action"] == "quarantine"]
    assert row["original"] == str(roots["alpha"] / "picture.jpg") and row["original_host"] == "alpha", row
    assert "on host alpha" not in row["reason"], row  # verified on pixels, not on hashes


def test_migrate_into_a_store_another_host_shares(
    tmp_path: Path, run_cli: RunCli, pg_url: str, cli_env: dict[str, str]
) -> None:
    """Beta's SQLite store migrates into the PostgreSQL store alpha fills already (files,
    a quarantine move with its audit row and intent): beta's ids and seniority move past
    alpha's and every reference with them (audit to intent and back, a restore to the
    move it undid, a match, a similar pair), and a person's decision still holds (the
    restored copy is not moved again). Beta's quarantined copy restores from the shared
    store. Beta's files are placed among alpha's: an exact copy of alpha's picture joins
    its group at once, a half-size copy once alpha has shared its pixels (a scan on each
    host), then quarantined by beta. A move a crash cut short is settled before the copy,
    and the quarantine records name their moves' new ids."""
    import psycopg  # noqa: PLC0415 - only the PostgreSQL tests need it

    from dedupd import sidecar

    from dedupd.models import PostgresUrl
    from dedupd.store import open_store

    roots = {host: tmp_path / host for host in ("alpha", "beta")}
    p, q, r = (H.photo(n, size=(800, 600)) for n in (70, 71, 72))
    H.save(p, roots["alpha"] / "p.jpg", quality=92)
    shutil.copyfile(roots["alpha"] / "p.jpg", roots["alpha"] / "p_dup.jpg")
    H.save(q, roots["alpha"] / "q.jpg", quality=92)
    H.save(r, roots["beta"] / "r.jpg", quality=92)
    for name in ("p2.jpg",):
        shutil.copyfile(roots["alpha"] / "p.jpg", roots["beta"] / name)
    for name in ("r2.jpg", "r3.jpg"):
        shutil.copyfile(roots["beta"] / "r.jpg", roots["beta"] / name)
    H.save(r.resize((400, 300), Image.Resampling.LANCZOS), roots["beta"] / "r_half.jpg", quality=85)
    # strongly recoloured: similar, listed for review
    H.save(r.convert("L").convert("RGB"), roots["beta"] / "r_grey.jpg", quality=92)
    half = H.save(q.resize((400, 300), Image.Resampling.LANCZOS), roots["beta"] / "q_half.jpg", quality=85)
    configs = _host_configs(tmp_path, roots, near={"beta": "log"})
    first = run_cli("scan", roots["alpha"], "--config", configs["alpha"], db=pg_url)
    assert first.returncode == 0 and "quarantine_done: 1" in first.stdout, first.stdout + first.stderr
    lite = tmp_path / "beta.db"
    first = run_cli("scan", roots["beta"], "--config", configs["beta"], db=lite)
    assert first.returncode == 0 and "quarantine_done: 2" in first.stdout, first.stdout + first.stderr
    moves = {Path(r["path"]).name: r["id"] for r in json.loads(run_cli("audit", "--format", "json", db=lite).stdout)
             if r["action"] == "quarantine"}  # fmt: skip
    assert sorted(moves) == ["r2.jpg", "r3.jpg"], moves
    assert run_cli("restore", str(moves["r2.jpg"]), "--config", configs["beta"], db=lite).returncode == 0
    assert (roots["beta"] / "r2.jpg").exists()
    # a move killed after its copy: a pending intent and a record in quarantine
    shutil.copyfile(roots["beta"] / "r.jpg", roots["beta"] / "r4.jpg")
    killed = H.run_dedupd("scan", roots["beta"], "--config", configs["beta"], db=lite, cwd=tmp_path,
                          env={**cli_env, "DEDUPD_FAULT": "quarantine.after_copy:kill:r4.jpg"})  # fmt: skip
    assert killed.returncode == -9, killed.stdout + killed.stderr
    moved = run_cli("migrate", "--to", pg_url, "--config", configs["beta"], db=lite)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "settled 1 move(s)" in moved.stdout, moved.stdout
    assert "placed among the other hosts' files: 1 grouped" in moved.stdout, moved.stdout
    with psycopg.connect(pg_url) as conn:
        alpha_top = conn.execute("SELECT MAX(id) FROM audit WHERE host = 'alpha'").fetchone()[0]
        audit = {row[0]: row for row in conn.execute(
            "SELECT id, action, path, intent_id, restores FROM audit WHERE host = 'beta'")}  # fmt: skip
        intents = {row[0]: row for row in conn.execute("SELECT id, path, audit_id FROM intents WHERE host = 'beta'")}
        decided = conn.execute("SELECT host_a, host_b FROM decisions").fetchall()
        pending = conn.execute("SELECT COUNT(*) FROM intents WHERE state = 'pending'").fetchone()[0]
        moves_to = {Path(os.fsdecode(row[1])): row[0] for row in conn.execute(
            "SELECT id, destination FROM intents WHERE host = 'beta' AND action = 'quarantine'")}  # fmt: skip
    assert pending == 0
    # each record beside a quarantined file names its move as the shared store numbers it
    records = {Path(rec.path).name: (at, rec) for at, rec in sidecar.walk(tmp_path / "beta-quarantine")}
    assert "r3.jpg" in records and "r2.jpg" not in records, records
    for at, rec in records.values():
        assert rec.intent_id == moves_to[at], (rec, moves_to)
    assert (roots["beta"] / "r4.jpg").exists() or "r4.jpg" in records  # where it was, or moved with its record
    assert alpha_top is not None and min(audit) > alpha_top and min(intents) > alpha_top
    by_path = {(row[1], Path(os.fsdecode(row[2])).name): row for row in audit.values()}
    undone = by_path[("quarantine", "r2.jpg")]
    assert by_path[("restore", "r2.jpg")][4] == undone[0]  # the restore names the move it undid
    for name in ("r2.jpg", "r3.jpg"):
        row = by_path[("quarantine", name)]
        assert intents[row[3]][2] == row[0] and Path(os.fsdecode(intents[row[3]][1])).name == name
    assert decided and all(h in (None, "beta") for pair in decided for h in pair), decided
    stores = {host: open_store(PostgresUrl(pg_url), readonly=True, host=host) for host in roots}
    try:
        alpha, beta = stores["alpha"], stores["beta"]
        theirs = {name: alpha.record_for_path(roots["alpha"] / name) for name in ("p.jpg", "q.jpg")}
        ours = {n: beta.record_for_path(roots["beta"] / n) for n in ("r.jpg", "r_half.jpg", "r_grey.jpg", "p2.jpg", "q_half.jpg")}
        assert min(rec.id for rec in ours.values()) > max(rec.id for rec in theirs.values())
        assert min(rec.seq for rec in ours.values()) > max(rec.seq for rec in theirs.values())
        assert beta.match_of(ours["r_half.jpg"].id)[0] == ours["r.jpg"].id
        # r, and the exact copies of it the last scan saw here (r2 restored, r4 rolled back)
        copies = [beta.record_for_path(roots["beta"] / name) for name in ("r.jpg", "r2.jpg", "r4.jpg")]
        similar = [other for other, _ in beta.similar_of(ours["r_grey.jpg"].id)]
        assert ours["r.jpg"].id in similar and set(similar) <= {rec.id for rec in copies if rec}, similar
        groups = {str(orig): [(str(path), m.tier.value) for path, m, _ in members] for orig, members in beta.groups()}
        # the exact copy of alpha's picture: in its group at once (no pixels needed)
        assert groups.get(f"alpha:{roots['alpha'] / 'p.jpg'}") == [(str(roots["beta"] / "p2.jpg"), "exact")], groups
        # the half-size copy: similar until alpha shares its pixels
        assert ours["q_half.jpg"].original_id is None and beta.similar_of(ours["q_half.jpg"].id) != []
    finally:
        for store in stores.values():
            store.close()
    # beta's move came along whole: restored from the shared store
    restored = run_cli("restore", "--all", "--config", configs["beta"], db=pg_url)
    assert restored.returncode == 0 and (roots["beta"] / "r3.jpg").exists(), restored.stdout + restored.stderr
    assert run_cli("scan", roots["alpha"], "--config", configs["alpha"], db=pg_url).returncode == 0  # shares
    beta_q = tmp_path / "beta-quarantine"
    configs["beta"].write_text(configs["beta"].read_text().replace("near: log", "near: quarantine"))
    last = run_cli("scan", roots["beta"], "--config", configs["beta"], db=pg_url)
    assert last.returncode == 0, last.stdout + last.stderr
    assert not half.exists() and (beta_q / half.name).exists(), last.stdout
    # the person's restore holds across the move: r2 stays; r3, restored by --all, too
    assert (roots["beta"] / "r2.jpg").exists() and (roots["beta"] / "r3.jpg").exists(), last.stdout


def test_a_dry_run_on_a_shared_store_judges_with_the_pixels_other_hosts_shared(
    tmp_path: Path, run_cli: RunCli, pg_url: str
) -> None:
    """Alpha has shared its picture's pixels for a copy beta asked about; beta's
    ``scan --dry-run`` then works on a copy of the store that holds them: the copy that
    waited and a new one are both near, and would be quarantined, as the real scan's
    would; nothing moves and the store does not change."""
    roots = {host: tmp_path / host for host in ("alpha", "beta")}
    picture = H.photo(61, size=(1024, 768))
    H.save(picture, roots["alpha"] / "picture.jpg", quality=92)
    H.save(picture.resize((512, 384), Image.Resampling.LANCZOS), roots["beta"] / "small.jpg", quality=85)
    configs = _host_configs(tmp_path, roots)
    for host in ("alpha", "beta", "alpha"):  # beta asks, alpha shares
        assert run_cli("scan", roots[host], "--config", configs[host], db=pg_url).returncode == 0
    H.save(picture.resize((600, 450), Image.Resampling.LANCZOS), roots["beta"] / "other.jpg", quality=85)
    before, rows_before = H.file_state(roots["beta"]), _rows(pg_url)
    dry = run_cli("scan", roots["beta"], "--config", configs["beta"], "--dry-run", db=pg_url)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "near: 2" in dry.stdout and "quarantine_dry_run: 2" in dry.stdout, dry.stdout
    assert H.file_state(roots["beta"]) == before and _rows(pg_url) == rows_before


def test_a_migrate_cut_short_while_placing_resumes_where_it_stopped(
    tmp_path: Path, run_cli: RunCli, pg_url: str
) -> None:
    """A migrate into a shared store that died after its copy committed (the copy made
    here through the same function, and nothing placed) is finished by running it again:
    the rows are not copied twice, the files are placed among the other host's (an exact
    copy of alpha's picture joins its group); a third run is refused, nothing pending."""
    from dedupd.models import PostgresUrl
    from dedupd.store import open_store
    from dedupd.store.postgres import PostgresStore
    from dedupd.store.sqlite import Store
    from dedupd.store.transfer import copy_sqlite_to_postgres

    roots = {host: tmp_path / host for host in ("alpha", "beta")}
    H.save(H.photo(80), roots["alpha"] / "p.jpg")
    H.save(H.photo(81), roots["beta"] / "own.jpg")
    shutil.copyfile(roots["alpha"] / "p.jpg", roots["beta"] / "p2.jpg")
    configs = _host_configs(tmp_path, roots)
    assert run_cli("scan", roots["alpha"], "--config", configs["alpha"], db=pg_url).returncode == 0
    lite = tmp_path / "beta.db"
    assert run_cli("scan", roots["beta"], "--config", configs["beta"], db=lite).returncode == 0
    source, dest = Store.open(lite, readonly=True), PostgresStore.open(PostgresUrl(pg_url), host="beta")
    try:
        copy_sqlite_to_postgres(source, dest)
        assert dest.regroup_pending() == 0
    finally:
        dest.close()
        source.close()
    again = run_cli("migrate", "--to", pg_url, "--config", configs["beta"], db=lite)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "copied into" in again.stdout and "already" in again.stdout and "audit:" not in again.stdout, again.stdout
    assert "placed among the other hosts' files: 1 grouped" in again.stdout, again.stdout
    store = open_store(PostgresUrl(pg_url), readonly=True, host="beta")
    try:
        assert store.regroup_pending() is None and store.counts()["files"] == 3
        groups = {str(orig): [str(path) for path, _, _ in members] for orig, members in store.groups()}
        assert groups == {f"alpha:{roots['alpha'] / 'p.jpg'}": [str(roots["beta"] / "p2.jpg")]}, groups
    finally:
        store.close()
    third = run_cli("migrate", "--to", pg_url, "--config", configs["beta"], db=lite)
    assert third.returncode == 74 and "this host shares it already" in third.stderr, third.stderr
