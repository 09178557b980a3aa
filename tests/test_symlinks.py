"""Symlinks that stay valid: relative by default, and repaired when their original goes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from daemon_helpers import Env, files_under, picture, sha256, wait_until, write


def _dangling(top: Path) -> list[Path]:
    return [p for p in top.rglob("*") if p.is_symlink() and not p.exists()]


def test_deleting_an_original_with_symlinks_leaves_no_dangling_link_and_loses_nothing(env: Env) -> None:
    """Two copies of a picture become relative symlinks to its original; when the original
    is deleted, the first copy is put back in its symlink's place, the other symlink is
    re-pointed at it (warning and audit), and a later restore still recognises that link."""
    original = write(env.root / "a.jpg", picture(71))
    daemon = env.start(actions={"exact": "symlink", "pixel": "log", "near": "log"})
    env.wait_indexed(original)
    d1 = write(env.root / "d1.jpg", picture(71))
    wait_until(lambda: d1.is_symlink(), "d1 symlinked")
    d2 = write(env.root / "sub" / "d2.jpg", picture(71))
    wait_until(lambda: d2.is_symlink(), "d2 symlinked")
    wait_until(lambda: len(env.moves()) == 2, "both moves recorded", interval=0.1)
    assert os.readlink(d1) == "a.jpg" and os.readlink(d2) == "../a.jpg"

    original.unlink()
    event = daemon.wait_event("original_gone_links_repaired", original=original)
    assert (event["restored"], event["relinked"], event["failed"]) == (str(d1), [str(d2)], [])
    assert d1.is_file() and not d1.is_symlink() and sha256(d1) == sha256(picture(71))
    assert d2.is_symlink() and os.readlink(d2) == "../d1.jpg" and d2.read_bytes() == picture(71)
    assert _dangling(env.root) == []
    # nothing lost: d1's bytes are home, d2's are still in quarantine with a record naming the new link
    assert list(files_under(env.quarantine).values()) == [sha256(picture(71))]
    [record_file] = [p for p in env.quarantine.rglob("*.dedupd.json")]
    record = json.loads(record_file.read_text())
    assert (record["link_target"], record["original"]) == ("../d1.jpg", str(d1))
    rows = env.audit()
    assert [r["detail"] for r in rows if r["action"] == "restore"][0].startswith("put back from")
    assert [(r["action"], r["path"], r["original"]) for r in rows if r["action"] == "relink"] == [("relink", str(d2), str(d1))]

    env.wait_indexed(d1)  # the daemon took the copy put back as a new file, and left it alone
    assert daemon.stop() == 0
    env.restore_all()  # d2's link, re-pointed, is still recognised as dedupd's own
    assert d2.is_file() and not d2.is_symlink() and sha256(d2) == sha256(picture(71))
    assert files_under(env.quarantine) == {} and _dangling(env.root) == []


def test_renaming_an_original_inside_the_root_repoints_its_symlinks(env: Env) -> None:
    """An original renamed into a subdirectory is followed, and the relative symlink to it
    is re-pointed at the new path (audited as a relink), so it never dangles."""
    original = write(env.root / "a.jpg", picture(72))
    daemon = env.start(actions={"exact": "symlink", "pixel": "log", "near": "log"})
    env.wait_indexed(original)
    d1 = write(env.root / "d1.jpg", picture(72))
    wait_until(lambda: d1.is_symlink(), "d1 symlinked")
    wait_until(lambda: len(env.moves()) == 1, "the move recorded", interval=0.1)
    moved = env.root / "album" / "a.jpg"
    moved.parent.mkdir()
    original.rename(moved)
    daemon.wait_event("original_renamed_links_repaired", original=moved)
    assert os.readlink(d1) == "album/a.jpg" and d1.read_bytes() == picture(72)
    assert _dangling(env.root) == []
    assert [(r["path"], r["original"]) for r in env.audit() if r["action"] == "relink"] == [(str(d1), str(moved))]
    assert daemon.stop() == 0
