"""``dedupd review`` through Flask's test client: the security rules, the decisions, paging, pictures by id."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tqdm
from flask import Flask
from flask.testing import FlaskClient

import daemon_helpers as D
import helpers as H
from dedupd import config as config_module
from dedupd.actions import Actor
from dedupd.audit import Audit
from dedupd.config import Config
from dedupd.errors import ConfigError
from dedupd.identity import resolve
from dedupd.models import Distances, FileStat, Fingerprint, Hashes, Match, Orientation, Tier
from dedupd.scan import scan
from dedupd.store import Store
from dedupd.web import security
from dedupd.web.app import create_app

# the in-process scans here must not start tqdm's monitor thread (the leak check would see it)
tqdm.tqdm.monitor_interval = 0

HOSTILE = "<img src=x onerror=alert(1)>.jpg"
AGENT = "review-test-agent/1.0"
PORT = 8765


@dataclass
class Review:
    """A scanned library, its store, and the review app over it."""

    root: Path
    db: Path
    config: Config
    app: Flask
    guard: security.Guard
    client: FlaskClient

    def get(self, url: str, **kw: object) -> object:
        return self.client.get(url, headers={"Host": f"127.0.0.1:{PORT}", "User-Agent": AGENT}, **kw)

    def post(self, url: str, data: dict[str, str] | None = None, *, csrf: bool = True, **headers: str) -> object:
        form = dict(data or {})
        if csrf:
            form[security.CSRF_FIELD] = self.guard.csrf
        return self.client.post(
            url, data=form, headers={"Host": f"127.0.0.1:{PORT}", "User-Agent": AGENT, **headers}
        )

    def store(self) -> Store:
        return Store.open(self.db)


def _library(root: Path) -> None:
    """Three groups (near, near, exact under a hostile name) from synthetic photos."""
    root.mkdir(parents=True)
    for seed, name in ((11, "a"), (12, "b")):
        im = H.photo(seed, (480, 360))
        H.save(im, root / f"{name}.jpg")
        H.save(im.resize((360, 270)), root / f"{name}_small.jpg")
    data = H.encode(H.photo(13, (480, 360)), "JPEG")
    (root / "c.jpg").write_bytes(data)
    (root / HOSTILE).write_bytes(data)


def _config(tmp_path: Path, root: Path, **extra: object) -> Config:
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir(exist_ok=True)
    values: dict[str, object] = {
        "roots": [str(root)],
        "quarantine_dir": str(quarantine),
        "actions": {"exact": "quarantine", "pixel": "quarantine", "near": "quarantine"},
        **extra,
    }
    return resolve(config_module.from_mapping(values, source=None), strict=False)


def _app(config: Config, db: Path, tmp_path: Path, guard: security.Guard) -> tuple[Flask, FlaskClient]:
    app = create_app(config, db, guard, tmp_path / "cache")
    app.testing = True
    return app, app.test_client()


@pytest.fixture
def review(tmp_path: Path) -> Iterator[Review]:
    """A real scan (log only) of a small library, and the app with a quarantine config over its store."""
    root, db = tmp_path / "photos", tmp_path / "state" / "dedupd.db"
    _library(root)
    store = Store.open(db)
    scan([root], store, Config(), workers=1, progress=False)
    store.close()
    config = _config(tmp_path, root)
    guard = security.Guard("127.0.0.1", PORT, None)
    app, client = _app(config, db, tmp_path, guard)
    yield Review(root, db, config, app, guard, client)


def _id(db: Path, name: str) -> int:
    rows = H.db_rows(db, "SELECT id, path FROM files")
    return next(int(i) for i, p in rows if Path(os.fsdecode(p)).name == name)  # type: ignore[arg-type, call-overload]


# --- the security rules -----------------------------------------------------------------


def test_foreign_host_header_is_refused(review: Review) -> None:
    """A Host that is not this page (DNS rebinding), or the right name on the wrong port, gets 403 for GET and POST."""
    for host in ("evil.example:8765", f"evil.example:{PORT}", "127.0.0.1:9999", "localhost", ""):
        got = review.client.get("/groups", headers={"Host": host})
        assert got.status_code == 403, host
    original = _id(review.db, "a.jpg")
    posted = review.client.post(
        f"/groups/{original}/keep-all",
        data={security.CSRF_FIELD: review.guard.csrf},
        headers={"Host": f"rebound.example:{PORT}"},
    )
    assert posted.status_code == 403
    assert H.groups(review.db)["a.jpg"] == ["a_small.jpg"]
    for host in (f"127.0.0.1:{PORT}", f"localhost:{PORT}", f"[::1]:{PORT}", f"LOCALHOST:{PORT}"):
        assert review.client.get("/groups", headers={"Host": host}).status_code == 200, host


def test_post_without_or_with_a_wrong_csrf_token_is_refused(review: Review) -> None:
    """A POST without the CSRF token, with a wrong one, or from another Origin changes nothing (403); with it, it acts."""
    original = _id(review.db, "a.jpg")
    url = f"/groups/{original}/keep-all"
    assert review.post(url, csrf=False).status_code == 403  # type: ignore[attr-defined]
    assert review.post(url, {security.CSRF_FIELD: "forged"}, csrf=False).status_code == 403  # type: ignore[attr-defined]
    assert review.post(url, Origin="http://evil.example").status_code == 403  # type: ignore[attr-defined]
    assert H.groups(review.db)["a.jpg"] == ["a_small.jpg"]
    assert H.db_rows(review.db, "SELECT COUNT(*) FROM decisions") == [(0,)]
    done = review.post(url, Origin=f"http://127.0.0.1:{PORT}")
    assert done.status_code == 303  # type: ignore[attr-defined]
    assert "a.jpg" not in H.groups(review.db)


def test_token_is_required_off_loopback_and_kept_in_a_strict_cookie(tmp_path: Path, review: Review) -> None:
    """Served on another address, the page needs the token: 401 without or wrong; ?token= sets an
    HttpOnly SameSite=Strict cookie and drops it from the address; Bearer works too."""
    token = "t0ken-" + "x" * 30
    guard = security.Guard("192.0.2.10", PORT, token)
    _, client = _app(review.config, review.db, tmp_path, guard)
    host = {"Host": f"192.0.2.10:{PORT}"}
    assert client.get("/groups", headers=host).status_code == 401
    assert client.get("/groups?token=wrong", headers=host).status_code == 401
    assert client.get("/static/review.css", headers=host).status_code == 401
    got = client.get("/groups?tier=near&token=" + token, headers=host)
    assert got.status_code == 303
    assert got.headers["Location"] == "/groups?tier=near"
    cookie = got.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/groups", headers=host).status_code == 200  # the test client keeps the cookie
    bare = _app(review.config, review.db, tmp_path, guard)[1]
    assert bare.get("/groups", headers={**host, "Authorization": f"Bearer {token}"}).status_code == 200


def test_hostile_file_name_is_escaped_everywhere(review: Review) -> None:
    """The name `<img src=x onerror=alert(1)>.jpg` appears only escaped, in text and in attributes."""
    page = review.get("/groups").get_data(as_text=True)  # type: ignore[attr-defined]
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    assert "<img src=x" not in page
    hostile = _id(review.db, HOSTILE)
    original = H.db_rows(review.db, "SELECT original_id FROM matches WHERE file_id = ?", (hostile,))
    ids = [hostile, int(original[0][0])] if original else [hostile, _id(review.db, "c.jpg")]  # type: ignore[call-overload]
    compare = review.get(f"/compare/{ids[0]}/{ids[1]}").get_data(as_text=True)  # type: ignore[attr-defined]
    assert "<img src=x" not in compare and "&lt;img src=x onerror=alert(1)&gt;.jpg" in compare


def test_security_headers_forbid_inline_script_and_framing(review: Review) -> None:
    """Every response carries a CSP without inline script, nosniff, no framing and no referrer."""
    got = review.get("/groups")
    csp = got.headers["Content-Security-Policy"]  # type: ignore[attr-defined]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert got.headers["X-Content-Type-Options"] == "nosniff"  # type: ignore[attr-defined]
    assert got.headers["X-Frame-Options"] == "DENY"  # type: ignore[attr-defined]


def test_open_redirect_through_next_is_refused(review: Review) -> None:
    """A form's `next` that leaves the page (//evil.example) sends the browser to the groups page instead."""
    original = _id(review.db, "a.jpg")
    got = review.post(f"/groups/{original}/keep-all", {"next": "//evil.example/x"})
    assert got.headers["Location"] == "/groups"  # type: ignore[attr-defined]


def test_token_choice_and_listen_parsing(tmp_path: Path) -> None:
    """Loopback needs no token; another address gets one made up; a token file's first line is used and a short one refused."""
    assert security.choose_token("127.0.0.1", given=None, token_file=None) == (None, False)
    assert security.choose_token("::1", given=None, token_file=None) == (None, False)
    made, fresh = security.choose_token("0.0.0.0", given=None, token_file=None)
    assert made is not None and len(made) >= 32 and fresh
    assert security.choose_token("127.0.0.1", given="g" * 20, token_file=None) == ("g" * 20, False)
    good = tmp_path / "token"
    good.write_text("s" * 24 + "\ncomment\n")
    assert security.choose_token("10.1.2.3", given=None, token_file=good) == ("s" * 24, False)
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError):
        security.choose_token("10.1.2.3", given=None, token_file=short)
    assert config_module.parse_listen("[::1]:8765") == ("::1", 8765)
    with pytest.raises(ConfigError):
        config_module.parse_listen("localhost")
    with pytest.raises(ConfigError):
        config_module.from_mapping({"review": {"token": "short"}})
    with pytest.raises(ConfigError):
        config_module.from_mapping({"review": {"port": 1}})


def test_wildcard_address_accepts_address_literals_but_not_foreign_names() -> None:
    """Listening on 0.0.0.0, the page answers to any address literal of the port and configured names, never another name."""
    guard = security.Guard("0.0.0.0", PORT, "x" * 20, ("nas.lan",))
    assert guard.host_allowed(f"192.168.1.20:{PORT}")
    assert guard.host_allowed(f"nas.lan:{PORT}")
    assert not guard.host_allowed(f"attacker.example:{PORT}")
    assert not guard.host_allowed("192.168.1.20:80")


# --- pictures by id ----------------------------------------------------------------------


def test_thumbnails_are_made_by_id_cached_and_never_stale(review: Review, tmp_path: Path) -> None:
    """A thumbnail is a JPEG of the stored file, cached in the state directory; a file changed since its
    scan is not shown; unknown ids and sizes are 404, and no route takes a path."""
    file_id = _id(review.db, "a.jpg")
    got = review.get(f"/thumb/{file_id}/small")
    assert got.status_code == 200 and got.mimetype == "image/jpeg"  # type: ignore[attr-defined]
    assert got.get_data()[:2] == b"\xff\xd8"  # type: ignore[attr-defined]
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].name.startswith(f"{file_id}-")
    assert review.get("/thumb/999999/small").status_code == 404  # type: ignore[attr-defined]
    assert review.get(f"/thumb/{file_id}/huge").status_code == 404  # type: ignore[attr-defined]
    assert review.get("/thumb/..%2F..%2Fetc%2Fpasswd/small").status_code == 404  # type: ignore[attr-defined]
    other = _id(review.db, "b.jpg")
    (review.root / "b.jpg").write_bytes(H.encode(H.photo(99), "JPEG"))
    assert review.get(f"/thumb/{other}/small").status_code == 404  # type: ignore[attr-defined]


def test_difference_view_shows_the_pair_and_a_map(review: Review) -> None:
    """The compare page names the verdict; the difference map is a PNG of the compared frame."""
    dup, orig = _id(review.db, "a_small.jpg"), _id(review.db, "a.jpg")
    page = review.get(f"/compare/{dup}/{orig}").get_data(as_text=True)  # type: ignore[attr-defined]
    assert "near" in page and "no region differs" in page
    got = review.get(f"/diff/{dup}/{orig}")
    assert got.status_code == 200 and got.get_data()[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[attr-defined]


# --- decisions ---------------------------------------------------------------------------


def test_keep_all_records_not_duplicates_with_the_user_agent(review: Review) -> None:
    """Keep all: the group is gone, the pair is an ignore, and the audit row names the browser."""
    original = _id(review.db, "a.jpg")
    assert review.post(f"/groups/{original}/keep-all").status_code == 303  # type: ignore[attr-defined]
    assert "a.jpg" not in H.groups(review.db)
    rows = H.db_rows(review.db, "SELECT action, outcome, decided_by FROM audit WHERE action = 'ignore'")
    assert rows == [("ignore", "done", f"review: {AGENT}")]
    assert H.db_rows(review.db, "SELECT decided_by FROM decisions") == [(f"review: {AGENT}",)]
    page = review.get("/groups").get_data(as_text=True)  # type: ignore[attr-defined]
    assert "1 pairs marked as not duplicates" in page


def test_chosen_original_sticks_across_a_rescan(review: Review) -> None:
    """Make this the original: the duplicate becomes the root, audited with the user agent, and a rescan
    and a rename keep it."""
    original, small = _id(review.db, "b.jpg"), _id(review.db, "b_small.jpg")
    got = review.post(f"/groups/{original}/original", {"file_id": str(small)})
    assert got.status_code == 303  # type: ignore[attr-defined]
    assert H.groups(review.db)["b_small.jpg"] == ["b.jpg"]
    rows = H.db_rows(review.db, "SELECT decided_by FROM audit WHERE action = 'choose_original'")
    assert rows == [(f"review: {AGENT}",)]
    store = review.store()
    try:
        os.utime(review.root / "b_small.jpg")  # a new version of the same bytes
        os.utime(review.root / "b.jpg")
        scan([review.root], store, Config(), workers=1, progress=False)
    finally:
        store.close()
    assert H.groups(review.db)["b_small.jpg"] == ["b.jpg"]
    os.rename(review.root / "b_small.jpg", review.root / "b_renamed.jpg")  # followed by inode
    store = review.store()
    try:
        scan([review.root], store, Config(), workers=1, progress=False)
    finally:
        store.close()
    assert H.groups(review.db)["b_renamed.jpg"] == ["b.jpg"]
    stale = review.post(f"/groups/{original}/original", {"file_id": str(small)})
    assert stale.status_code == 303  # type: ignore[attr-defined]
    assert "the group changed" in review.get("/groups").get_data(as_text=True)  # type: ignore[attr-defined]


def test_restore_from_the_moves_page(review: Review) -> None:
    """A file moved by an action is listed under Moved files; Restore puts it back, audited with the user agent."""
    dup = review.root / "a_small.jpg"
    data = dup.read_bytes()
    store = review.store()
    try:
        actor = Actor(store, review.config, roots=(review.root,))
        from dedupd.grouping import Grouping  # the duplicate as grouping reports it

        rec = store.record_for_path(dup)
        assert rec is not None
        reported = [d for d in Grouping(store, review.config).changed(rec, rec) if d.duplicate.id == rec.id]
        assert actor.handle(reported[0]) == "done"
    finally:
        store.close()
    assert not dup.exists()
    page = review.get("/moves").get_data(as_text=True)  # type: ignore[attr-defined]
    audit_id = int(re.search(r'data-audit="(\d+)"', page).group(1))  # type: ignore[union-attr]
    assert review.post(f"/moves/{audit_id}/restore").status_code == 303  # type: ignore[attr-defined]
    assert dup.read_bytes() == data
    rows = H.db_rows(review.db, "SELECT restores, decided_by FROM audit WHERE action = 'restore' AND outcome = 'done'")
    assert rows == [(audit_id, f"review: {AGENT}")]
    assert "Nothing moved" in review.get("/moves").get_data(as_text=True)  # type: ignore[attr-defined]


def test_apply_a_group_moves_its_duplicates_as_dedupd_apply_does(review: Review) -> None:
    """Apply on a group scanned with log only: its duplicate goes to the quarantine (audited with the user
    agent as decided_by), the other groups stay; applying again finds nothing owed."""
    original = _id(review.db, "a.jpg")
    dup = review.root / "a_small.jpg"
    data = dup.read_bytes()
    page = review.get("/groups").get_data(as_text=True)  # type: ignore[attr-defined]
    assert "Apply: quarantine a_small.jpg" in page
    assert review.post(f"/groups/{original}/apply").status_code == 303  # type: ignore[attr-defined]
    assert not dup.exists()
    moved = list((review.config.quarantine_dir or Path("/nonexistent")).rglob("a_small*.jpg"))
    assert len(moved) == 1 and moved[0].read_bytes() == data
    rows = H.db_rows(review.db, "SELECT action, outcome, decided_by FROM audit WHERE action = 'quarantine'")
    assert rows == [("quarantine", "done", f"review: {AGENT}")]
    assert (review.root / "b_small.jpg").exists() and (review.root / "c.jpg").exists()
    assert "applied: 1 done" in review.get("/groups").get_data(as_text=True)  # type: ignore[attr-defined]
    review.post(f"/groups/{original}/apply")
    assert "nothing to apply" in review.get("/groups").get_data(as_text=True)  # type: ignore[attr-defined]


def test_bulk_apply_covers_exactly_the_filter(review: Review) -> None:
    """Bulk apply over tier near moves the two near duplicates, not the exact one."""
    assert review.post("/bulk", {"decision": "apply", "tier": "near"}).status_code == 303  # type: ignore[attr-defined]
    assert not (review.root / "a_small.jpg").exists() and not (review.root / "b_small.jpg").exists()
    assert (review.root / "c.jpg").exists() and (review.root / HOSTILE).exists()
    assert review.post("/bulk", {"decision": "apply"}).status_code == 400  # type: ignore[attr-defined]


def test_bulk_keep_all_covers_exactly_the_filter(review: Review) -> None:
    """A bulk decision over a filter (tier exact) marks those pairs only."""
    page = review.get("/groups?tier=exact").get_data(as_text=True)  # type: ignore[attr-defined]
    assert "1 duplicates match this filter" in page
    assert review.post("/bulk", {"decision": "keep-all", "tier": "exact"}).status_code == 303  # type: ignore[attr-defined]
    groups = H.groups(review.db)
    assert "c.jpg" not in groups and HOSTILE not in groups
    assert groups["a.jpg"] == ["a_small.jpg"] and groups["b.jpg"] == ["b_small.jpg"]


def test_decisions_while_the_daemon_runs(tmp_path: Path) -> None:
    """With `dedupd run` holding the store's writer lock, the page reads the groups and a keep-all is
    written beside the daemon (waiting its turn), which keeps running and exits 0."""
    with D.daemon_env(tmp_path) as env:
        daemon = env.start()
        im = H.photo(21, (480, 360))
        H.save(im.resize((360, 270)), env.outside / "copy.jpg")
        H.save(im, env.root / "big.jpg")
        os.rename(env.outside / "copy.jpg", env.root / "copy.jpg")
        D.wait_until(lambda: H.groups(env.db).get("big.jpg") == ["copy.jpg"], "the daemon to group the copy")
        config = config_module.load(env.config_path)
        _, client = _app(config, env.db, tmp_path, security.Guard("127.0.0.1", PORT, None))
        host = {"Host": f"127.0.0.1:{PORT}", "User-Agent": AGENT}
        page = client.get("/groups", headers=host).get_data(as_text=True)
        assert "big.jpg" in page and "copy.jpg" in page
        original = _id(env.db, "big.jpg")
        done = client.post(f"/groups/{original}/keep-all", data={security.CSRF_FIELD: client.application.config["DEDUPD_GUARD"].csrf}, headers=host)
        assert done.status_code == 303
        assert "big.jpg" not in H.groups(env.db)
        assert env.query("SELECT COUNT(*) FROM audit WHERE action = 'ignore'") == [(1,)]
        assert daemon.alive()
        assert daemon.stop() == 0


# --- paging ------------------------------------------------------------------------------


def _fake_groups(db: Path, n: int) -> None:
    """``n`` groups of two made-up files each (no pictures behind them), plus a similar pair per ten."""
    store = Store.open(db)
    with store.atomic():
        for i in range(n):
            ids = []
            for side in ("o", "d"):
                fp = Fingerprint(f"{side}{i:060d}", f"p{side}{i}", Hashes(i, i, bytes(48)), 100, 100, "JPEG", 20.0)
                st = FileStat(1, 2 * i + (side == "d"), 1000, 1)
                ids.append(store.upsert_file(Path(f"/lib/g{i:05d}/{side}.jpg"), st, fp))
            tier = Tier.EXACT if i % 3 == 0 else Tier.NEAR
            match = Match(tier, Distances(0, 0, 0.0), 100.0 - i % 7, Orientation.IDENTITY, "made up")
            store.set_match(ids[1], ids[0], match, tie=False)
            if i % 10 == 0:
                store.set_similar(ids[0], ids[1], Match(Tier.SIMILAR, Distances(5, 5, 1.0), 80.0, Orientation.IDENTITY, "made up"))
    store.close()


def test_paging_walks_every_group_once_both_ways(tmp_path: Path) -> None:
    """Next links visit each of 60 groups once in path order, Previous links come back, filters stay on."""
    db = tmp_path / "d.db"
    _fake_groups(db, 60)
    _, client = _app(Config(), db, tmp_path, security.Guard("127.0.0.1", PORT, None))
    host = {"Host": f"127.0.0.1:{PORT}"}
    seen: list[str] = []
    url: str | None = "/groups"
    pages: list[str] = []
    while url:
        page = client.get(url, headers=host).get_data(as_text=True)
        pages.append(url)
        seen += re.findall(r'<span class="folder">/lib/(g\d+)</span>\s*<dl>\s*<dt>size</dt><dd class="size">1.0 KB</dd>\s*<dt>resolution</dt><dd class="resolution">100×100</dd>\s*<dt>format</dt><dd class="format">JPEG</dd>\s*<dt>modified</dt><dd>[^<]*</dd>\s*<dt>indexed</dt><dd>[^<]*</dd>\s*</dl>', page)
        found = re.search(r'rel="next" href="([^"]+)"', page)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert len(pages) == 3
    assert seen == [f"g{i:05d}" for i in range(60)]
    last = client.get(pages[-1], headers=host).get_data(as_text=True)
    back = re.search(r'rel="prev" href="([^"]+)"', last)
    assert back is not None
    middle = client.get(back.group(1).replace("&amp;", "&"), headers=host).get_data(as_text=True)
    assert 'id="group-' in middle and "/lib/g00025" in middle and "/lib/g00049" in middle and "/lib/g00050" not in middle
    exact = client.get("/groups?tier=exact", headers=host).get_data(as_text=True)
    assert "20 duplicates match this filter" in exact
    assert "/lib/g00001/" not in exact and "/lib/g00003/" in exact
    folder = client.get("/groups?folder=/lib/g00007", headers=host).get_data(as_text=True)
    assert folder.count('class="group"') == 1
    similar = client.get("/similar", headers=host).get_data(as_text=True)
    assert similar.count('class="pair"') == 6


# --- the real command ---------------------------------------------------------------------


def test_review_command_prints_a_token_off_loopback_and_stops_on_sigterm(tmp_path: Path, run_cli: H.RunCli, db_path: Path, cli_env: dict[str, str]) -> None:
    """`dedupd review --listen 0.0.0.0:0` prints its address with a made-up token, refuses a request
    without it, serves one with it, and exits 0 on SIGTERM."""
    root = tmp_path / "photos"
    _library(root)
    assert run_cli("scan", root).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "dedupd", "review", "--db", str(db_path), "--listen", "0.0.0.0:0"],
        env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.match(r"dedupd review: http://0\.0\.0\.0:(\d+)/\?token=(\S+)", line)
        assert found, line
        port, token = found.group(1), found.group(2)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/groups", timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(f"http://127.0.0.1:{port}/groups", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as got:
            assert got.status == 200 and "&lt;img src=x onerror=alert(1)&gt;.jpg" in got.read().decode()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
