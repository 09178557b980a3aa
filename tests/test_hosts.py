"""Several hosts sharing one PostgreSQL store: each names its own rows, the
index of each learns of the others' files, and copies that arrive on two hosts at
once end in one group with one original; two real daemons, a server restart."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from dedupd.config import Config
from dedupd.errors import StoreLockedError
from dedupd.grouping import Grouping
from dedupd.models import FileStat, Fingerprint, Hashes, PostgresUrl
from dedupd.store.postgres import PostgresStore


def _fp(n: int, *, sha: str | None = None) -> Fingerprint:
    """A fingerprint of picture ``n``; ``sha`` gives a copy of it other bytes (a pixel twin)."""
    return Fingerprint(
        sha or f"{n:064x}",
        f"px{n:060x}",
        Hashes((n * 0x9E3779B97F4A7C15) % (1 << 64), (n * 0xC2B2AE3D27D4EB4F) % (1 << 64), bytes(48)),
        640,
        480,
        "JPEG",
        31.5,
    )


def _stat(n: int) -> FileStat:
    return FileStat(dev=1, ino=n, size=1000 + n, mtime_ns=n, ctime_ns=n)


@pytest.fixture
def hosts(pg_url: str) -> Any:
    """Stores of hosts alpha and beta on one database, each its host's writer."""
    opened = [PostgresStore.open(PostgresUrl(pg_url), host=name) for name in ("alpha", "beta")]
    for store in opened:
        store.lock_writer()
    yield opened
    for store in opened:
        store.close()


def test_each_host_has_its_own_rows_lock_and_heartbeat(hosts: Any, pg_url: str) -> None:
    """Two hosts store one path each as their own file; each finds its own by path and
    sees the other's as the other host's; a second writer of one host is refused, not
    of the other; status rows and owed actions are per host."""
    alpha, beta = hosts
    second = PostgresStore.open(PostgresUrl(pg_url), host="alpha")
    try:
        with pytest.raises(StoreLockedError, match="alpha"):
            second.lock_writer()
    finally:
        second.close()
    path = Path("/srv/photos/a.jpg")
    a_id = alpha.upsert_file(path, _stat(1), _fp(1))
    b_id = beta.upsert_file(path, _stat(2), _fp(1, sha="f" * 64))
    assert a_id != b_id
    assert alpha.record_for_path(path).id == a_id and beta.record_for_path(path).id == b_id
    assert alpha.record(a_id).host is None and alpha.record(b_id).host == "beta"
    assert beta.record(a_id).host == "alpha" and beta.record(b_id).host is None
    assert [i for i, _ in alpha.ids_under(Path("/srv"))] == [a_id]
    assert alpha.count_under(Path("/srv")) == beta.count_under(Path("/srv")) == 1
    for store in (alpha, beta):
        store.write_daemon_status(pid=10, started_at=1.0, state="running", data={})
    assert [(d["host"], d["state"]) for d in alpha.daemon_hosts()] == [("alpha", "running"), ("beta", "running")]
    assert alpha.read_daemon_status()["host"] == "alpha"
    from dedupd.models import Distances, Match, Orientation, Tier

    with beta.atomic():
        beta.set_match(b_id, a_id, Match(Tier.PIXEL, Distances(0, 0, 0.0), 100.0, Orientation.IDENTITY, "r"), tie=False)
    assert beta.unacted_matches() == [b_id] and alpha.unacted_matches() == []
    assert [r[0] for r in alpha.groups()] == [path] and [m[0] for m in next(iter(alpha.groups()))[1]] == [
        Path("beta:/srv/photos/a.jpg")
    ]


def test_a_store_from_before_hosts_becomes_the_first_openers(pg_url: str) -> None:
    """A PostgreSQL store migrated before hosts were added held one host's files: a
    reader before any writer migrated it reads them as they are; the host that opens
    it first after the upgrade finds them as its own (by path, its crash counts too,
    which count afresh under this build); a second host sees them as that host's."""
    import psycopg

    import legacy_schema

    legacy_schema.apply_postgres(pg_url, upto=4)  # p001-p004, as dedupd wrote them then
    with psycopg.connect(pg_url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO files (path, dev, ino, size, mtime_ns, seq, sha256, error) VALUES (%s, 1, 1, 1, 1, 1, 'x', 'corrupt')",
            [b"/srv/a.jpg"],
        )
        conn.execute("INSERT INTO crashes (path, size, mtime_ns, count, at) VALUES (%s, 1, 1, 2, 0)", [b"/srv/a.jpg"])
    # read before any writer migrated it: one host's store, read as it is
    reader = PostgresStore.open(PostgresUrl(pg_url), readonly=True, host="nas")
    try:
        found = reader.record_for_path(Path("/srv/a.jpg"))
        assert found is not None and found.host is None
        assert [e[0] for e in reader.errors()] == [Path("/srv/a.jpg")]
    finally:
        reader.close()
    first = PostgresStore.open(PostgresUrl(pg_url), host="nas")
    second = PostgresStore.open(PostgresUrl(pg_url), host="other")
    try:
        found = first.record_for_path(Path("/srv/a.jpg"))
        assert found is not None and found.host is None
        assert first._one("SELECT host, count FROM crashes") == ("nas", 2)
        # counted by a build from before: this one tries the file again (tests/test_build.py)
        assert first.crash_count(Path("/srv/a.jpg"), FileStat(1, 1, 1, 1, 0)) == 0
        assert second.record_for_path(Path("/srv/a.jpg")) is None and second.record(found.id).host == "nas"
    finally:
        first.close()
        second.close()


def test_a_host_stuck_in_a_transaction_cannot_hold_the_others_for_long(hosts: Any) -> None:
    """Every connection of the store has the server end a transaction left idle for
    two minutes (a host that hangs or loses its network mid-transaction), so the
    store's write lock, which every host's writes take, is freed by then."""
    alpha, _ = hosts
    assert alpha._one("SHOW idle_in_transaction_session_timeout")[0] == "2min"
    reader = alpha.reader()
    try:
        assert reader._one("SHOW idle_in_transaction_session_timeout")[0] == "2min"
    finally:
        reader.close()


def test_the_feed_tells_a_host_what_the_others_wrote(hosts: Any) -> None:
    """What beta writes reaches alpha's feed in commit order, alpha's own writes do
    not; after a pruning past alpha's mark the feed says to read the index afresh."""
    alpha, beta = hosts
    mark = alpha.feed_mark()
    own = alpha.upsert_file(Path("/a/1.jpg"), _stat(1), _fp(1))
    theirs = [beta.upsert_file(Path(f"/b/{n}.jpg"), _stat(n), _fp(n)) for n in (2, 3)]
    with beta.atomic():
        beta.delete_file(theirs[0])
    found = alpha.changes_after(mark)
    assert found is not None
    new_mark, changes = found
    assert changes == [(theirs[0], "beta", "file"), (theirs[1], "beta", "file"), (theirs[0], "beta", "file")]
    assert own not in {c[0] for c in changes}
    assert alpha.changes_after(new_mark) == (new_mark, [])
    beta.upsert_file(Path("/b/4.jpg"), _stat(4), _fp(4))
    assert beta.prune_changes(kept=-1.0) > 0
    assert alpha.changes_after(new_mark) is None


def test_an_index_learns_of_another_hosts_files(hosts: Any) -> None:
    """A file beta stores is a candidate in alpha's index after alpha catches up, and
    leaves it when beta forgets it."""
    alpha, beta = hosts
    config = Config()
    grouping = Grouping(alpha, config)
    grouping.index  # noqa: B018 - read now, before beta writes
    fp = _fp(7)
    b_id = beta.upsert_file(Path("/b/7.jpg"), _stat(7), fp)
    assert b_id not in grouping.index.candidates(fp, config.match)
    assert grouping.catch_up() == []  # a file of beta's: nothing for alpha to act on
    assert b_id in grouping.index.candidates(fp, config.match)
    with beta.atomic():
        beta.delete_file(b_id)
    grouping.catch_up()
    assert b_id not in grouping.index.candidates(fp, config.match)


def test_copies_arriving_on_two_hosts_at_once_make_one_group_with_one_original(hosts: Any) -> None:
    """Alpha and beta store copies of the same pictures at the same moments (exact
    copies and pixel twins), each placing its own through its own Grouping: every
    picture ends as one star with one original, whichever host placed first, and
    every match beta's placements made on alpha's files comes back to alpha's."""
    alpha, beta = hosts
    config = Config()
    groupings = {store.host: Grouping(store, config) for store in hosts}
    pictures = range(1, 13)
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    reported: dict[str, set[int]] = {"alpha": set(), "beta": set()}

    def arrive(store: PostgresStore) -> None:
        try:
            start.wait(timeout=30)
            for n in pictures:
                # beta's copy of every third picture has other bytes, the same pixels
                sha = "e" * 60 + f"{n:04x}" if store.host == "beta" and n % 3 == 0 else None
                with store.atomic():
                    file_id = store.upsert_file(Path(f"/up/{n}.jpg"), _stat(n), _fp(n, sha=sha))
                    record = store.record(file_id)
                    found = groupings[store.host].changed(record, None)
                reported[store.host].update(d.duplicate.id for d in found)
        except BaseException as exc:  # noqa: BLE001 - raised again on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=arrive, args=(store,)) for store in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for n in pictures:
        ids = [alpha.record_for_path(Path(f"/up/{n}.jpg")).id, beta.record_for_path(Path(f"/up/{n}.jpg")).id]
        records = alpha.records(ids)
        originals = [i for i in ids if records[i].original_id is None]
        assert len(originals) == 1, (n, records)
        (duplicate,) = set(ids) - set(originals)
        assert records[duplicate].original_id == originals[0]
    # every match on a host's file reaches that host: made by its own placement,
    # or by the other's and heard of through the feed
    for store in hosts:
        reported[store.host].update(d.duplicate.id for d in groupings[store.host].catch_up())
        own = {store.record_for_path(Path(f"/up/{n}.jpg")) for n in pictures}
        assert {r.id for r in own if r.original_id is not None} <= reported[store.host]


def test_two_daemons_share_one_store_and_a_server_restart_loses_nothing(tmp_path: Path, pg_cluster: Any) -> None:
    """Two ``dedupd run`` on two roots (hosts alpha and beta) and one PostgreSQL
    database: copies of the same pictures dropped into both roots at once end with
    one copy of each picture left, the other quarantined by the daemon whose root it
    was in, with an audit row naming the original's host; PostgreSQL stopped and
    started meanwhile, a pair dropped during the outage is handled once it is back,
    and every file is in its root or in its host's quarantine; alpha killed, beta
    goes on and quarantines a copy of alpha's picture, and lists an edited copy of
    it as similar without moving it; alpha back, it shares that picture's pixels and
    beta, verifying on them, finds the edited copy near (logged, as configured); alpha's restore
    undoes alpha's moves only."""
    from daemon_helpers import daemon_env, picture, sha256, wait_until, write

    url = pg_cluster.new_database()
    with daemon_env(tmp_path / "alpha", db=url) as a_env, daemon_env(tmp_path / "beta", db=url) as b_env:
        envs = {"alpha": a_env, "beta": b_env}
        # a picture of each root's own, so that neither root is ever empty (the
        # daemon pauses actions on a root emptied under it: unmounted?)
        for n, env in enumerate(envs.values()):
            write(env.root / "own.jpg", picture(90 + n))
        daemons = {name: env.start(host=name) for name, env in envs.items()}
        for daemon in daemons.values():
            daemon.wait_event("catch_up_finished")

        def drop(n: int) -> None:
            data = picture(n)
            for env in envs.values():
                write(env.root / f"upload {n}.jpg", data)

        def stored(host: str, path: Path) -> None:
            """Wait until ``host``'s daemon has stored ``path``."""
            seen = PostgresStore.open(PostgresUrl(url), readonly=True, host=host)
            try:
                wait_until(lambda: seen.record_for_path(path), f"{path.name} stored by {host}")
            finally:
                seen.close()

        def settled(n: int) -> bool:
            left = [env for env in envs.values() if (env.root / f"upload {n}.jpg").exists()]
            gone = [env for env in envs.values() if (env.quarantine / f"upload {n}.jpg").exists()]
            return len(left) == 1 and len(gone) == 1

        for n in (1, 2, 3):
            drop(n)
        for n in (1, 2, 3):
            wait_until(lambda n=n: settled(n), f"one copy of picture {n} quarantined")
        pg_cluster.halt()
        try:
            for daemon in daemons.values():
                daemon.wait_event("store_unavailable")
            drop(4)
        finally:
            pg_cluster.resume()
        for daemon in daemons.values():
            daemon.wait_event("store_available")
        wait_until(lambda: settled(4), "one copy of the picture dropped during the outage quarantined")
        # one that reaches beta first and alpha later: alpha's copy is the one moved, by alpha
        write(b_env.root / "upload 5.jpg", picture(5))
        stored("beta", b_env.root / "upload 5.jpg")
        write(a_env.root / "upload 5.jpg", picture(5))
        wait_until(lambda: settled(5), "alpha's later copy quarantined")
        assert (a_env.quarantine / "upload 5.jpg").exists()
        moves = a_env.moves()
        assert len(moves) == 5, moves
        for row in moves:
            env = envs[row["host"]]
            other = "beta" if row["host"] == "alpha" else "alpha"
            assert Path(row["path"]).parent == env.root and row["original_host"] == other, row
            assert Path(row["destination"]).parent == env.quarantine, row
            assert sha256(Path(row["destination"])) == sha256(envs[other].root / Path(row["path"]).name)
        for n in (1, 2, 3, 4, 5):
            kept = [env.root / f"upload {n}.jpg" for env in envs.values()]
            moved = [env.quarantine / f"upload {n}.jpg" for env in envs.values()]
            assert sum(p.exists() for p in kept + moved) == 2
            assert {sha256(p) for p in kept + moved if p.exists()} == {sha256(picture(n))}
        status = a_env.status()
        assert [h["host"] for h in status["hosts"]] == ["alpha", "beta"], status
        assert {h["state"] for h in status["hosts"]} == {"running"}
        # a host that dies does not stop the other: beta goes on, and matches a copy
        # against alpha's files while alpha is down
        write(a_env.root / "upload 6.jpg", picture(6))
        stored("alpha", a_env.root / "upload 6.jpg")
        daemons["alpha"].kill()
        shutil.copy(a_env.root / "upload 6.jpg", b_env.root / "again 6.jpg")
        wait_until(lambda: (b_env.quarantine / "again 6.jpg").exists(), "beta's copy of alpha's picture quarantined")
        # the record beside it names the original's host too (restore --from-quarantine reads it)
        record = json.loads((b_env.quarantine / "again 6.jpg.dedupd.json").read_text())
        assert (record["original"], record["original_host"]) == (str(a_env.root / "upload 6.jpg"), "alpha"), record
        # an edited copy of alpha's picture: alpha's file cannot be read here to verify
        # it, so it is judged on its hashes alone: similar, listed for review, not moved
        smaller = b_env.root / "smaller 6.jpg"
        with Image.open(a_env.root / "upload 6.jpg") as im:
            im.resize((192, 144), Image.Resampling.LANCZOS).save(smaller, quality=85)
        found = daemons["beta"].wait_event("similar_found", path=smaller)
        assert found["other"] == str(a_env.root / "upload 6.jpg") and "on host alpha" in found["reason"], found
        assert smaller.exists() and not (b_env.quarantine / smaller.name).exists()
        groups = json.loads(b_env.cli("groups", "--format", "json", "--config", str(b_env.config_path)).stdout)
        listed = [d for g in groups for d in g["duplicates"] if d["path"] == str(smaller)]
        assert [(d["tier"]) for d in listed] == ["similar"], groups
        # alpha back: it shares the pixels beta asked for, and beta, verifying on them,
        # finds the smaller copy near alpha's picture
        daemons["alpha"] = a_env.start(host="alpha")
        daemons["alpha"].wait_event("pixels_shared", path=a_env.root / "upload 6.jpg")
        found = daemons["beta"].wait_event("duplicate_found", path=smaller)
        assert found["tier"] == "near" and found["original"] == str(a_env.root / "upload 6.jpg"), found
        assert smaller.exists()  # near: log, in this config
        groups = json.loads(b_env.cli("groups", "--format", "json", "--config", str(b_env.config_path)).stdout)
        listed = [d for g in groups for d in g["duplicates"] if d["path"] == str(smaller)]
        assert [(d["tier"]) for d in listed] == ["near"], groups
        assert daemons["alpha"].stop() == 0
        assert daemons["beta"].stop() == 0
        # each host undoes its own moves only
        beta_move = next(r for r in a_env.moves() if r["path"] == str(b_env.root / "again 6.jpg"))
        assert beta_move["host"] == "beta" and beta_move["original_host"] == "alpha"
        refused = a_env.cli("restore", str(beta_move["id"]), "--config", str(a_env.config_path), check=False)
        assert refused.returncode == 3 and "a move made on host beta: restore it there" in refused.stdout, refused
        a_env.cli("restore", "--all", "--config", str(a_env.config_path))
        assert not list(a_env.quarantine.glob("*.jpg"))
        assert (a_env.root / "upload 5.jpg").exists()
        assert len(list(b_env.quarantine.glob("*.jpg"))) == 1 + sum(1 for r in moves if r["host"] == "beta")


def test_the_review_page_names_another_hosts_files_and_leaves_them_to_it(tmp_path: Path, pg_url: str) -> None:
    """On beta's review page, a group whose original is alpha's file shows it as on host
    alpha; its picture is not read here (404, the host named) although a file exists
    here at the same path; "keep all" records the pair as not duplicates, naming each
    file's host, and beta's file leaves the group."""
    import tqdm

    import helpers as H
    from dedupd import config as config_module
    from dedupd.scan import scan
    from dedupd.web import security
    from dedupd.web.app import create_app

    tqdm.tqdm.monitor_interval = 0
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    data = H.encode(H.photo(21, (320, 240)), "JPEG")
    for root in (root_a, root_b):
        root.mkdir()
        (root / "p.jpg").write_bytes(data)
    for root, host in ((root_a, "alpha"), (root_b, "beta")):
        store = PostgresStore.open(PostgresUrl(pg_url), host=host)
        try:
            store.lock_writer()
            scan([root], store, Config(), workers=1, progress=False)
        finally:
            store.close()
    config = config_module.from_mapping({"host": "beta", "roots": [str(root_b)]}, source=None)
    guard = security.Guard("127.0.0.1", 8765, None)
    app = create_app(config, PostgresUrl(pg_url), guard, tmp_path / "cache")
    app.testing = True
    client = app.test_client()
    headers = {"Host": "127.0.0.1:8765", "User-Agent": "test"}
    page = client.get("/groups", headers=headers)
    assert page.status_code == 200 and "on host alpha" in page.get_data(as_text=True)
    beta = PostgresStore.open(PostgresUrl(pg_url), host="beta")
    try:
        mine = beta.record_for_path(root_b / "p.jpg")
        assert mine is not None and mine.original_id is not None
        original = beta.record(mine.original_id)
        assert original is not None and original.host == "alpha"
        picture = client.get(f"/thumb/{original.id}/small", headers=headers)
        assert picture.status_code == 404 and "on host alpha" in picture.get_data(as_text=True)
        assert client.get(f"/thumb/{mine.id}/small", headers=headers).status_code == 200
        kept = client.post(f"/groups/{original.id}/keep-all", data={security.CSRF_FIELD: guard.csrf},
                           headers=headers, follow_redirects=True)  # fmt: skip
        assert "kept all: 1 pairs marked as not duplicates" in kept.get_data(as_text=True)
        [decision] = beta.decisions()
        assert {decision.path, decision.other_path} == {root_a / "p.jpg", root_b / "p.jpg"}
        assert beta.record(mine.id).original_id is None  # no longer its copy
        assert beta.is_ignored(mine.fingerprint.sha256, original.fingerprint.sha256, path_a=mine.path,
                               path_b=original.path, host_b="alpha")  # fmt: skip
        # alpha's own file at that path is another file: the decision is not about it
        alpha = PostgresStore.open(PostgresUrl(pg_url), host="alpha")
        try:
            assert not alpha.is_ignored(mine.fingerprint.sha256, original.fingerprint.sha256,
                                        path_a=root_b / "p.jpg", path_b=root_a / "p.jpg")  # fmt: skip
            assert alpha.is_ignored(mine.fingerprint.sha256, original.fingerprint.sha256,
                                    path_a=root_b / "p.jpg", path_b=root_a / "p.jpg", host_a="beta")  # fmt: skip
        finally:
            alpha.close()
        [row] = [r for r in beta.audit_rows() if r[2] == "ignore"]
        assert row[20:] == ("beta", "alpha")
    finally:
        beta.close()


def test_an_empty_feed_is_no_reason_to_read_the_index_again(hosts: Any) -> None:
    """After the feed was pruned empty, a host that reads its index takes its mark from
    the pruning, so its next looks find nothing to read again (no whole-index re-read at
    every look), and what another host writes next still reaches it."""
    alpha, beta = hosts
    beta.upsert_file(Path("/b/1.jpg"), _stat(1), _fp(1))
    assert beta.prune_changes(kept=-1.0) == 1
    config = Config()
    grouping = Grouping(alpha, config)
    index = grouping.index
    for _ in range(3):
        assert grouping.catch_up() == []
        assert grouping.index is index  # the same index: not read again
    b_id = beta.upsert_file(Path("/b/2.jpg"), _stat(2), _fp(2))
    grouping.catch_up()
    assert grouping.index is index and b_id in index.candidates(_fp(2), config.match)


def test_options_in_the_url_are_kept(pg_url: str) -> None:
    """A store kept in its own schema through the URL's options (search_path) is created
    and found there; dedupd's own session settings do not replace the URL's."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA library")
    url = PostgresUrl(pg_url + ("&" if "?" in pg_url else "?") + "options=-csearch_path%3Dlibrary")
    store = PostgresStore.open(url, host="alpha")
    try:
        store.upsert_file(Path("/a.jpg"), _stat(1), _fp(1))
        assert store._one("SHOW search_path")[0] == "library"
        assert store._one("SHOW idle_in_transaction_session_timeout")[0] == "2min"
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM library.files").fetchone() == (1,)
        assert conn.execute("SELECT to_regclass('public.files')").fetchone() == (None,)


def test_a_renamed_host_does_not_quarantine_its_files_as_copies_of_its_old_rows(tmp_path: Path, pg_url: str) -> None:
    """A host that scanned its library as 'oldname' and scans it again as 'newname' (a
    host renamed) finds every file an exact copy of its old self at the same path: none is
    moved, each skip says why; a real copy beside them is still quarantined."""
    import tqdm

    import helpers as H
    from dedupd import config as config_module
    from dedupd.actions import Actor
    from dedupd.scan import scan

    tqdm.tqdm.monitor_interval = 0
    root, quarantine = tmp_path / "photos", tmp_path / "q"
    root.mkdir()
    quarantine.mkdir()
    for n in range(3):
        (root / f"{n}.jpg").write_bytes(H.encode(H.photo(30 + n, (160, 120)), "JPEG"))
    for host in ("oldname", "newname"):
        config = config_module.from_mapping({"host": host, "roots": [str(root)], "quarantine_dir": str(quarantine),
                                             "actions": {"exact": "quarantine"}}, source=None)  # fmt: skip
        store = PostgresStore.open(PostgresUrl(pg_url), host=host)
        try:
            store.lock_writer()
            actor = Actor(store, config)
            scan([root], store, config, on_duplicate=actor.handle, progress=False, workers=1)
            if host == "newname":
                assert sorted(p.name for p in root.iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
                assert not list(quarantine.glob("*.jpg"))
                skipped = [r for r in store.audit_rows() if r[3] == "skipped"]
                assert len(skipped) == 3 and all("own path on host oldname" in r[15] for r in skipped), skipped
                (root / "copy.jpg").write_bytes((root / "0.jpg").read_bytes())
                scan([root], store, config, on_duplicate=actor.handle, progress=False, workers=1)
                assert (quarantine / "copy.jpg").exists() and not (root / "copy.jpg").exists()
        finally:
            store.close()


def test_what_the_actor_does_with_another_hosts_files(tmp_path: Path, hosts: Any) -> None:
    """The Actor leaves a duplicate that is another host's file to that host (no audit
    row); a local copy of another host's original is not symlinked (a link here cannot
    reach it), and not moved once the store says that original changed."""
    from dataclasses import replace

    from dedupd import config as config_module
    from dedupd.actions import Actor
    from dedupd.models import Distances, Duplicate, Match, Orientation, Tier

    alpha, beta = hosts
    root, quarantine = tmp_path / "root", tmp_path / "q"
    root.mkdir()
    quarantine.mkdir()
    local = root / "copy.jpg"
    local.write_bytes(b"\xff\xd8 some bytes")
    st = FileStat.from_path(local)
    sha = hashlib.sha256(local.read_bytes()).hexdigest()
    mine = alpha.upsert_file(local, st, _fp(5, sha=sha))
    theirs = beta.upsert_file(Path("/srv/b/original.jpg"), _stat(9), _fp(5, sha=sha))
    match = Match(Tier.EXACT, Distances(0, 0, 0.0), 100.0, Orientation.IDENTITY, "identical bytes")
    with alpha.atomic():
        alpha.set_match(mine, theirs, match, tie=False)
    dup = Duplicate(alpha.record(mine), alpha.record(theirs), match, False, "kept by rule first_seen")

    def actor(action: str) -> Actor:
        return Actor(alpha, config_module.from_mapping(
            {"roots": [str(root)], "quarantine_dir": str(quarantine), "actions": {"exact": action}}, source=None))  # fmt: skip

    flipped = Duplicate(beta.record(theirs), beta.record(mine), match, False, "r")  # seen from beta: alpha's file
    assert flipped.duplicate.host is None and Actor(alpha, actor("quarantine").config).handle(
        replace(flipped, duplicate=replace(flipped.duplicate, host="beta"))) == "elsewhere"  # fmt: skip
    assert alpha.audit_rows() == []
    linker = actor("symlink")
    assert linker.handle(dup) == "skipped" and "symlink here cannot point" in linker.last_result.detail
    beta.upsert_file(Path("/srv/b/original.jpg"), _stat(10), _fp(6))  # beta's original edited meanwhile
    mover = actor("quarantine")
    assert mover.handle(dup) == "skipped" and "changed or is gone" in mover.last_result.detail
    beta.upsert_file(Path("/srv/b/original.jpg"), _stat(9), _fp(5, sha=sha))  # and put back
    assert local.exists()
    assert mover.handle(dup) == "done", mover.last_result
    assert not local.exists() and (quarantine / "copy.jpg").exists()
    [done] = [r for r in alpha.audit_rows() if r[3] == "done"]
    assert done[20:] == ("alpha", "beta")


def test_decisions_name_files_by_host(hosts: Any) -> None:
    """Two hosts with the same paths and the same bytes: a file alpha's person kept, a
    pair alpha's person marked, and alpha's renames say nothing about beta's files; a
    decision about a pair across hosts names each file's host."""
    from dedupd.models import DecisionKind

    alpha, beta = hosts
    x, y = Path("/p/x.jpg"), Path("/p/y.jpg")
    sx, sy = "a" * 64, "b" * 64
    for store in hosts:
        store.upsert_file(x, _stat(1), _fp(1, sha=sx))
        store.upsert_file(y, _stat(2), _fp(2, sha=sy))
    with alpha.atomic():
        alpha.add_decision(DecisionKind.KEEP, sx, x, note="restored")
        alpha.add_decision(DecisionKind.NOT_DUPLICATES, sx, x, sy, y, note="not copies")
    assert alpha.is_kept(sx, x) and not beta.is_kept(sx, x)
    assert alpha.is_ignored(sx, sy, path_a=x, path_b=y) and not beta.is_ignored(sx, sy, path_a=x, path_b=y)
    with beta.atomic():
        beta.add_decision(DecisionKind.NOT_DUPLICATES, sx, x, sy, y, note="not copies either")
    with alpha.atomic():
        alpha.move_file(alpha.record_for_path(x).id, Path("/p/renamed.jpg"))
    assert alpha.is_ignored(sx, sy, path_a=Path("/p/renamed.jpg"), path_b=y)
    assert beta.is_ignored(sx, sy, path_a=x, path_b=y)  # beta's decision stays with beta's file
    z = Path("/p/z.jpg")
    with alpha.atomic():
        alpha.add_decision(DecisionKind.NOT_DUPLICATES, sy, y, "c" * 64, z, note="across", other_host="beta")
    assert alpha.is_ignored(sy, "c" * 64, path_a=y, path_b=z, host_b="beta")
    assert not alpha.is_ignored(sy, "c" * 64, path_a=y, path_b=z)  # z of alpha's own: another file
    assert beta.is_ignored("c" * 64, sy, path_a=z, path_b=y, host_b="alpha")


def _placing(hosts: Any, tmp_path: Path, configs: dict[str, Config] | None = None) -> dict[str, Grouping]:
    """A Grouping per host (its config, else the default) and a directory per host under ``tmp_path``."""
    for store in hosts:
        (tmp_path / store.host).mkdir()
    return {store.host: Grouping(store, (configs or {}).get(store.host, Config())) for store in hosts}


def _stored(store: PostgresStore, grouping: Grouping, path: Path) -> tuple[int, list[Any]]:
    """``path`` fingerprinted, stored by ``store``'s host and placed by its grouping."""
    from dedupd.hashing import fingerprint_file

    st, fp = fingerprint_file(path)
    with store.atomic():
        file_id = store.upsert_file(path, st, fp)
        found = grouping.changed(store.record(file_id), None)
    return file_id, found


def test_a_copy_of_another_hosts_picture_is_verified_on_the_pixels_that_host_shares(
    hosts: Any, tmp_path: Path
) -> None:
    """Beta cannot read alpha's files: a half-size copy of alpha's picture is first only
    similar, and alpha's pixels are asked for. Alpha shares them; beta places the copy
    again, verified on pixels now: a near duplicate of alpha's file, its similar pair gone.
    A copy with a patch pasted on it gets the same answer from alpha and stays similar:
    the verifier judged the pixels, it did not take the exchange's word."""
    import helpers as H

    alpha, beta = hosts
    groupings = _placing(hosts, tmp_path)
    picture = H.photo(5, size=(1024, 768))
    original = H.save(picture, tmp_path / "alpha" / "original.jpg", quality=92)
    half = H.save(picture.resize((512, 384), Image.Resampling.LANCZOS), tmp_path / "beta" / "half.jpg", quality=85)
    patched = H.save(H.pasted(picture), tmp_path / "beta" / "patched.jpg", quality=92)
    a_id, _ = _stored(alpha, groupings["alpha"], original)
    h_id, found = _stored(beta, groupings["beta"], half)
    p_id, _ = _stored(beta, groupings["beta"], patched)
    assert found == [] and beta.record(h_id).original_id is None
    (similar,) = [m for other, m in beta.similar_of(h_id) if other == a_id]
    assert "on host alpha" in similar.reason and "asked of that host" in similar.reason, similar.reason
    assert beta.answered() == []  # nothing shared yet
    assert groupings["beta"].take_answers() == []
    assert groupings["beta"].exchange.share() == 0  # nothing asked of beta's files
    assert groupings["alpha"].exchange.share() == 1  # one picture, one size: both copies asked for it
    found = groupings["beta"].take_answers()
    assert [(d.duplicate.id, d.original.id, d.match.tier.value) for d in found] == [(h_id, a_id, "near")], found
    assert beta.record(h_id).original_id == a_id
    assert beta.similar_of(h_id) == []
    assert beta.record(p_id).original_id is None
    (kept,) = [m for other, m in beta.similar_of(p_id) if other == a_id]
    assert kept.tier.value == "similar" and "asked" not in kept.reason, kept.reason
    assert beta.answered() == [] and alpha.pixels_asked_here(10) == []


def test_a_better_copy_on_another_host_becomes_the_original_once_verified(hosts: Any, tmp_path: Path) -> None:
    """Alpha has a half-size copy; the full-size picture arrives on beta. Verified on the
    pixels alpha shares, beta's file becomes the original (highest resolution) and
    alpha's the duplicate, which alpha hears of through the feed, to act on it; a
    question about a file that changed since is withdrawn, not answered."""
    import helpers as H

    alpha, beta = hosts
    groupings = _placing(hosts, tmp_path)
    picture = H.photo(8, size=(1024, 768))
    half = H.save(picture.resize((512, 384), Image.Resampling.LANCZOS), tmp_path / "alpha" / "half.jpg", quality=85)
    full = H.save(picture, tmp_path / "beta" / "full.jpg", quality=92)
    h_id, _ = _stored(alpha, groupings["alpha"], half)
    groupings["alpha"].index  # noqa: B018 - built now: what beta writes reaches it through the feed
    f_id, found = _stored(beta, groupings["beta"], full)
    assert found == [] and alpha.record(h_id).original_id is None
    assert groupings["alpha"].exchange.share() == 1
    found = groupings["beta"].take_answers()
    assert [(d.duplicate.id, d.original.id) for d in found] == [(h_id, f_id)], found
    heard = groupings["alpha"].catch_up()
    assert [(d.duplicate.id, d.original.id, d.match.tier.value) for d in heard] == [(h_id, f_id, "near")], heard
    # a question about a version that is gone: alpha drops it and shares nothing
    other = H.save(H.photo(9, size=(640, 480)), tmp_path / "beta" / "other.jpg")
    o_id, _ = _stored(beta, groupings["beta"], other)
    with beta.atomic():
        beta.ask_pixels(h_id, "0" * 64, 512, o_id)
    assert alpha.pixels_asked_here(10) == [(h_id, "0" * 64, 512)]
    assert groupings["alpha"].exchange.share() == 0
    assert alpha.pixels_asked_here(10) == []


def test_another_hosts_reference_directory_keeps_its_file_the_original(hosts: Any, tmp_path: Path) -> None:
    """Alpha keeps a half-size copy in its reference_dirs; the full-size picture arrives
    on beta, whose config has none. Verified on the pixels alpha shares, beta's keep
    rules read alpha's reference_dirs from the store: alpha's file stays the original
    (rule reference), beta's is the duplicate, although highest_resolution, next in the
    rules, would have chosen beta's. A path under the same name on beta is not alpha's
    reference."""
    import helpers as H
    from dedupd.matching import Decision, choose_original

    alpha, beta = hosts
    reference = tmp_path / "alpha" / "ref"
    a_config = Config(reference_dirs=(reference,))
    alpha.set_reference_dirs(a_config.reference_dirs)
    groupings = _placing(hosts, tmp_path, {"alpha": a_config})
    reference.mkdir()
    assert beta.references_elsewhere() == {"alpha": (reference,)} and alpha.references_elsewhere() == {}
    picture = H.photo(11, size=(1024, 768))
    half = H.save(picture.resize((512, 384), Image.Resampling.LANCZOS), reference / "half.jpg", quality=85)
    full = H.save(picture, tmp_path / "beta" / "full.jpg", quality=92)
    h_id, _ = _stored(alpha, groupings["alpha"], half)
    f_id, _ = _stored(beta, groupings["beta"], full)
    assert groupings["alpha"].exchange.share() == 1
    found = groupings["beta"].take_answers()
    assert [(d.duplicate.id, d.original.id, d.rule) for d in found] == [(f_id, h_id, "kept by rule reference")], found
    # the same paths as this host's own files are not in alpha's reference_dirs
    mine, theirs = beta.record(f_id), beta.record(h_id)
    assert choose_original(theirs, mine, Config())[0] is Decision.KEEP_OLD  # not told: highest resolution, beta's
    assert choose_original(theirs, mine, Config(), {"alpha": (reference,)})[0] is Decision.KEEP_NEW
    local = replace(theirs, host=None)
    assert choose_original(local, mine, Config(), {"alpha": (reference,)})[0] is Decision.KEEP_OLD


def _half_copy_asked(hosts: Any, tmp_path: Path) -> tuple[dict[str, Grouping], Path, int, int]:
    """Alpha's picture and beta's half-size copy of it, placed: beta has asked for alpha's pixels."""
    import helpers as H

    alpha, beta = hosts
    groupings = _placing(hosts, tmp_path)
    picture = H.photo(5, size=(1024, 768))
    original = H.save(picture, tmp_path / "alpha" / "original.jpg", quality=92)
    half = H.save(picture.resize((512, 384), Image.Resampling.LANCZOS), tmp_path / "beta" / "half.jpg", quality=85)
    a_id, _ = _stored(alpha, groupings["alpha"], original)
    h_id, _ = _stored(beta, groupings["beta"], half)
    assert alpha.pixels_asked_here(10) != []
    return groupings, original, a_id, h_id


def test_a_damaged_answer_is_asked_for_again_not_a_crash(hosts: Any, tmp_path: Path) -> None:
    """Shared pixels damaged in the store (a broken PNG chunk: Pillow raises SyntaxError)
    are dropped and asked for again; alpha shares them afresh and beta's copy is then near."""
    from dedupd.exchange import encode
    from dedupd.hashing import verification_pixels

    alpha, beta = hosts
    groupings, original, a_id, h_id = _half_copy_asked(hosts, tmp_path)
    png = bytearray(encode(verification_pixels(original, side=512)))
    second = png.index(b"IDAT", png.index(b"IDAT") + 4)
    png[second] = 0x87  # the second IDAT chunk's name broken
    with alpha.atomic():
        alpha.share_pixels(alpha.record(a_id).fingerprint.sha256, 512, bytes(png))
    assert groupings["beta"].take_answers() == []  # no crash: judged on hashes again, asked again
    assert beta.record(h_id).original_id is None and alpha.pixels_asked_here(10) != []
    assert groupings["beta"].take_answers() == []  # the same damaged answer is not met twice
    assert groupings["alpha"].exchange.share() == 1
    found = groupings["beta"].take_answers()
    assert [(d.duplicate.id, d.original.id, d.match.tier.value) for d in found] == [(h_id, a_id, "near")], found


def test_a_question_is_of_the_version_asked_last_and_waits_for_its_answer(hosts: Any, tmp_path: Path) -> None:
    """Asked again after alpha's file changed, the question names the new version (alpha
    answers it, not dropping it as stale); an answer no host has taken yet is kept past the
    hour shared pixels are kept (not read and shared again every hour), and goes with the
    question."""
    import helpers as H
    from dedupd.exchange import ASKED_KEPT
    from dedupd.hashing import fingerprint_file

    alpha, beta = hosts
    groupings, original, a_id, h_id = _half_copy_asked(hosts, tmp_path)
    H.save(H.photo(6, size=(1024, 768)), original, quality=92)
    st, fp = fingerprint_file(original)
    with alpha.atomic():
        assert alpha.upsert_file(original, st, fp) == a_id
    with beta.atomic():
        beta.ask_pixels(a_id, fp.sha256, 512, h_id)  # as placing the copy again would
    assert alpha.pixels_asked_here(10) == [(a_id, fp.sha256, 512)]
    assert groupings["alpha"].exchange.share() == 1
    for _ in range(3):  # hours pass, beta does not take its answer
        alpha.prune_pixels(-1.0, ASKED_KEPT)
        assert groupings["alpha"].exchange.share() == 0 and beta.shared_pixels(fp.sha256, 512) is not None
    alpha.prune_pixels(-1.0, -1.0)  # a week later: the question and its answer go
    assert beta.shared_pixels(fp.sha256, 512) is None and beta.answered() == []


def test_a_file_unreadable_for_a_moment_is_shared_later_not_forgotten(
    hosts: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alpha cannot read its file just when beta's question comes (an I/O error): the
    question stays, put off for RETRY_AFTER seconds (not tried on every pass meanwhile),
    and is answered when the file can be read; beta's copy is then near."""
    import time

    from dedupd.exchange import RETRY_AFTER

    alpha, beta = hosts
    groupings, original, a_id, h_id = _half_copy_asked(hosts, tmp_path)
    monkeypatch.setenv("DEDUPD_FAULT", "exchange.share:error")
    assert groupings["alpha"].exchange.share() == 0
    monkeypatch.delenv("DEDUPD_FAULT")
    assert alpha.pixels_asked_here(10) == []  # put off
    (asked,) = alpha.pixels_asked_here(10, now=time.time() + RETRY_AFTER + 1)
    assert asked[0] == a_id and alpha.pixel_questions()["to_answer"] == 1
    assert groupings["alpha"].exchange.share() == 0  # not yet
    with alpha.atomic():
        alpha.retry_asked(*asked, at=0.0)  # the time has come
    assert groupings["alpha"].exchange.share() == 1
    found = groupings["beta"].take_answers()
    assert [(d.duplicate.id, d.original.id, d.match.tier.value) for d in found] == [(h_id, a_id, "near")], found
