"""Grouping: reproductions of the ways groups went wrong, against a real store and real files."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageOps
from structlog.testing import capture_logs

import helpers as H
from dedupd import config as config_module
from dedupd.audit import Audit
from dedupd import grouping as grouping_module
from dedupd.grouping import Grouping
from dedupd.models import FileStat, Fingerprint, Hashes, Tier
from dedupd.pipeline import Pipeline, fingerprint_job
from dedupd.store import Store

RunCli = H.RunCli


def groups_json(run_cli: RunCli, **kw: object) -> list[dict[str, object]]:
    proc = run_cli("groups", "--format", "json", **kw)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def originals(run_cli: RunCli, **kw: object) -> dict[str, str]:
    """Each duplicate's file name -> its original's file name."""
    return {
        Path(str(d["path"])).name: Path(str(g["original"])).name
        for g in groups_json(run_cli, **kw)
        for d in g["duplicates"]  # type: ignore[attr-defined]
    }


def test_touch_keeps_the_original(run_cli: RunCli, tmp_path: Path) -> None:
    """Touching the original and rescanning does not make its copy the original (seniority is the path's)."""
    root = tmp_path / "photos"
    H.save(H.photo(11), root / "a_orig.jpg")
    shutil.copyfile(root / "a_orig.jpg", root / "z_copy.jpg")
    assert run_cli("scan", root).returncode == 0
    assert originals(run_cli) == {"z_copy.jpg": "a_orig.jpg"}
    st = (root / "a_orig.jpg").stat()
    os.utime(root / "a_orig.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert run_cli("scan", root).returncode == 0
    assert originals(run_cli) == {"z_copy.jpg": "a_orig.jpg"}


def test_retagging_the_original_keeps_it(run_cli: RunCli, tmp_path: Path) -> None:
    """Re-tagging the original (smaller metadata, a new version of the path) keeps it the original."""
    root = tmp_path / "photos"
    data = H.jpeg_with_comment(H.encode(H.photo(12), "JPEG"), b"a long comment " * 20)
    (root).mkdir()
    (root / "a_orig.jpg").write_bytes(data)
    (root / "z_copy.jpg").write_bytes(data)
    assert run_cli("scan", root).returncode == 0
    (root / "a_orig.jpg").write_bytes(H.jpeg_with_comment(H.encode(H.photo(12), "JPEG"), b"short"))
    assert run_cli("scan", root).returncode == 0
    assert originals(run_cli) == {"z_copy.jpg": "a_orig.jpg"}


def test_remount_keeps_the_original(run_cli: RunCli, tmp_path: Path, db_path: Path) -> None:
    """A new device number (as after a remount) re-reads the files but keeps the original."""
    root = tmp_path / "photos"
    H.save(H.photo(13), root / "a_orig.jpg")
    shutil.copyfile(root / "a_orig.jpg", root / "z_copy.jpg")
    assert run_cli("scan", root).returncode == 0
    # what a remount does to what the store saw: every file on another st_dev
    store = Store.open(db_path)
    with store.atomic():
        store.db.execute("UPDATE files SET dev = dev + 7")
    store.close()
    proc = run_cli("scan", root)
    assert proc.returncode == 0
    assert "2 fingerprinted" in proc.stdout  # really seen as new versions
    assert originals(run_cli) == {"z_copy.jpg": "a_orig.jpg"}


@pytest.mark.parametrize("first", ["Elephants.jpg", "Elephants_3840x2160.jpg"])
def test_elephants_keeps_the_3840x2160_file(run_cli: RunCli, tmp_path: Path, first: str) -> None:
    """The default keep order keeps the larger Elephants whichever arrived first; the demoted
    one is quarantined with an audit row and comes back with `restore`."""
    source = H.PHOTOS / "natural-duplicates"
    if not (source / first).is_file():
        pytest.skip("the shared photos are not here")
    root = tmp_path / "photos"
    root.mkdir()
    conf = tmp_path / "dedupd.yaml"
    conf.write_text(f"quarantine_dir: {tmp_path / 'q'}\nactions: {{near: quarantine}}\n")
    (tmp_path / "q").mkdir(exist_ok=True)
    second = ({"Elephants.jpg", "Elephants_3840x2160.jpg"} - {first}).pop()
    for name in (first, second):  # one scan each: the second file arrives later
        shutil.copyfile(source / name, root / name)
        proc = run_cli("scan", root, "--config", conf)
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in root.iterdir()) == ["Elephants_3840x2160.jpg"]
    audit = json.loads(run_cli("audit", "--format", "json").stdout)
    moves = [r for r in audit if r["action"] == "quarantine"]
    assert [(Path(r["path"]).name, Path(r["original"]).name, r["outcome"]) for r in moves] == [
        ("Elephants.jpg", "Elephants_3840x2160.jpg", "done")
    ]
    assert run_cli("restore", str(moves[0]["id"])).returncode == 0
    assert (root / "Elephants.jpg").read_bytes() == (source / "Elephants.jpg").read_bytes()


# --- exact copies share a group whatever the arrival order ---------------------


def _fp(sha: str, phash: int, width: int = 400) -> Fingerprint:
    """A fingerprint whose hashes are chosen bit by bit, so distances are exact."""
    return Fingerprint(
        sha256=sha, pixel_digest="px-" + sha, hashes=Hashes(phash, phash, bytes(48)),
        width=width, height=300, format="JPEG", detail=50.0,
    )


# the crop/thumbnail T is 8 bits from the original O, the look-alike X is 12
# bits from T (no match) and 4 from O; E is O's exact copy
PICTURES = {
    "T.jpg": _fp("t", 0x0, width=100),
    "O.jpg": _fp("o", 0xFF),
    "X.jpg": _fp("x", 0xFFF),
    "E.jpg": _fp("o", 0xFF),
}


@pytest.mark.parametrize("order", list(itertools.permutations(PICTURES)))
@pytest.mark.parametrize("keep", [["first_seen"], ["highest_resolution", "first_seen"]])
def test_exact_copies_share_a_group_whatever_the_arrival_order(
    tmp_path: Path, order: tuple[str, ...], keep: list[str]
) -> None:
    """An exact copy joins its twin's group even when another group's original is more similar to it."""
    store = Store.open(tmp_path / "dedupd.db")
    grouping = Grouping(store, config_module.from_mapping({"keep": keep}))
    ids = {}
    for n, name in enumerate(order):
        file_id = store.upsert_file(tmp_path / name, FileStat(1, n, 1000, n), PICTURES[name])
        record = store.record(file_id)
        assert record is not None
        grouping.changed(record, None)
        ids[name] = file_id
    root = {name: (store.record(i).original_id or i) for name, i in ids.items()}  # type: ignore[union-attr]
    assert root["O.jpg"] == root["E.jpg"]
    assert store.db.execute("SELECT 1 FROM matches m JOIN matches r ON r.file_id = m.original_id").fetchall() == []
    store.close()


# --- what verification reads, and how much of it ---------------------------------


def _pipeline(tmp_path: Path) -> Pipeline:
    return Pipeline(Store.open(tmp_path / "dedupd.db"), config_module.from_mapping({}))


def test_candidate_groups_verified_are_capped_closest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With more candidate groups than the cap, the closest by hashes are verified (the copy is found) and the cap is logged."""
    monkeypatch.setattr(grouping_module, "MAX_GROUPS_VERIFIED", 2)
    pipeline = _pipeline(tmp_path)
    # four look-alikes (one object moved: similar, never one group), seen in order
    looks = []
    for i, x in enumerate((40, 200, 360, 520)):
        im = H.photo(52, (640, 480))
        ImageDraw.Draw(im).ellipse((x, 200, x + 60, 260), fill=(220, 30, 30))
        looks.append(H.save(im, tmp_path / f"look{i}.png"))
        pipeline.ingest(fingerprint_job(looks[-1], 10**8, 10**9))
    # a copy of the last seen, the least senior: verified first because closest
    copy = tmp_path / "copy.png"
    with Image.open(looks[-1]) as im:
        im.resize((480, 360)).save(copy)
    with capture_logs() as logs:
        found = pipeline.ingest(fingerprint_job(copy, 10**8, 10**9)).duplicates
    assert [(d.duplicate.path.name, d.original.path.name) for d in found] == [("copy.png", "look3.png")]
    capped = [e for e in logs if e["event"] == "candidates_capped"]
    assert capped and capped[0]["verified"] == 2 and capped[0]["groups"] >= 3, logs
    pipeline.store.close()


# --- one picture, one group, whichever larger copy took the lead -----------------


def _copies_of_a_real_photo(tmp_path: Path) -> dict[str, Path]:
    """A real photo (reduced, for speed) and copies of it, as files in tmp_path."""
    with Image.open(H.PHOTOS / "Blinds.jpg") as im:
        source = im.convert("RGB").resize((480, 300), Image.Resampling.LANCZOS)
    border = round(0.03 * min(source.size))
    pictures = {
        "source.png": (source, {}),
        "border.png": (ImageOps.expand(source, border=border, fill=(255, 255, 255)), {}),
        "pad.png": (ImageOps.expand(source, border=16, fill=(0, 0, 0)), {}),
        "upscaled.png": (source.resize((720, 450), Image.Resampling.BICUBIC), {}),
        "reencoded.jpg": (source, {"quality": 75}),
        "flipped.png": (source.transpose(Image.Transpose.FLIP_TOP_BOTTOM), {}),
    }
    return {name: H.save(im, tmp_path / name, **params) for name, (im, params) in pictures.items()}


@pytest.mark.skipif(not (H.PHOTOS / "Blinds.jpg").is_file(), reason="the shared photos are not here")
def test_copies_that_are_not_near_a_larger_original_join_through_their_source(tmp_path: Path) -> None:
    """Source, border, pad, upscale, re-encode and a flip of a real photo end in one group, in the
    order that split them (the bordered copy, then the larger padded one, becomes the original;
    the pad is not near the border, nor the flip near the pad): they join through the source,
    and the reason names it."""
    files = _copies_of_a_real_photo(tmp_path)
    pipeline = _pipeline(tmp_path)
    for name in ("source.png", "border.png", "pad.png", "flipped.png"):
        pipeline.ingest(fingerprint_job(files[name], 10**8, 10**9))
    store = pipeline.store
    records = [store.record_for_path(files[name]) for name in ("source.png", "border.png", "pad.png", "flipped.png")]
    assert len({r.original_id or r.id for r in records if r is not None}) == 1, records
    reasons = [m.reason for _, members in store.groups() for _, m, _ in members if m.tier.actionable]
    assert any(f"near {files['source.png']} (" in r and "which is a near copy of" in r for r in reasons), reasons
    for name in ("upscaled.png", "reencoded.jpg"):
        pipeline.ingest(fingerprint_job(files[name], 10**8, 10**9))
    groups = [(o, [(p, m.tier) for p, m, _ in ms]) for o, ms in store.groups()]
    acted = [(o, [p for p, t in ms if t.actionable]) for o, ms in groups]
    assert [sorted([o.name, *(p.name for p in ms)]) for o, ms in acted if ms] == [sorted(files)], groups
    store.close()


@pytest.mark.skipif(not (H.PHOTOS / "Blinds.jpg").is_file(), reason="the shared photos are not here")
@pytest.mark.parametrize("order", [("border.png", "pad.png", "source.png"), ("crop.png", "pad.png", "source.png")])
def test_two_groups_of_one_picture_merge_when_a_file_near_both_arrives(tmp_path: Path, order: tuple[str, ...]) -> None:
    """Two copies that are not near each other (a bordered or cropped copy and a padded one)
    found two groups; when the source arrives, near both, the second group is placed again
    and joins: one picture, one group (before, the padded copy stayed an original alone)."""
    with Image.open(H.PHOTOS / "Blinds.jpg") as im:
        source = im.convert("RGB").resize((480, 300), Image.Resampling.LANCZOS)
    pictures = {
        "source.png": source,
        "border.png": ImageOps.expand(source, border=round(0.03 * min(source.size)), fill=(255, 255, 255)),
        "pad.png": ImageOps.expand(source, border=16, fill=(0, 0, 0)),
        "crop.png": source.crop((72, 0, 480, 300)),  # 15% off the left
    }
    files = [H.save(pictures[name], tmp_path / name) for name in order]
    pipeline = _pipeline(tmp_path)
    for path in files[:2]:
        pipeline.ingest(fingerprint_job(path, 10**8, 10**9))
    store = pipeline.store
    assert [members for _, members in store.groups()] == []  # two originals: the first two are not near
    with capture_logs() as logs:
        pipeline.ingest(fingerprint_job(files[2], 10**8, 10**9))
    acted = [sorted([o.name, *(p.name for p, m, _ in ms if m.tier.actionable)]) for o, ms in store.groups()]
    assert acted == [sorted(order)], acted
    placed_again = [e["path"] for e in logs if e["event"] == "group_placed_again"]
    assert len(placed_again) == 1 and placed_again[0] in files[:2], placed_again
    store.close()


def _acted_after_ingesting(tmp_path: Path, files: list[Path]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Ingest ``files`` in order; the files acted on (actionable tiers), each with its original,
    and the log events."""
    pipeline = _pipeline(tmp_path)
    with capture_logs() as logs:
        for path in files:
            pipeline.ingest(fingerprint_job(path, 10**8, 10**9))
    acted = {p.name: o.name for o, ms in pipeline.store.groups() for p, m, _ in ms if m.tier.actionable}
    pipeline.store.close()
    return acted, logs


@pytest.mark.skipif(not (H.PHOTOS / "Blinds.jpg").is_file(), reason="the shared photos are not here")
def test_a_crop_does_not_bridge_what_it_cut_away(tmp_path: Path) -> None:
    """A crop near both a photo and a copy changed only where the crop cut (a box in the
    bottom strip) does not put that changed copy in the photo's group."""
    with Image.open(H.PHOTOS / "Blinds.jpg") as im:
        photo = im.convert("RGB").resize((480, 300), Image.Resampling.LANCZOS)
    changed = photo.copy()
    ImageDraw.Draw(changed).rectangle((300, 265, 420, 292), fill=(20, 160, 40))
    files = [
        H.save(photo, tmp_path / "photo.png"),
        H.save(photo.crop((0, 0, 480, 255)), tmp_path / "top_crop.png"),  # 15% off the bottom
        H.save(changed, tmp_path / "changed.png"),
    ]
    acted, logs = _acted_after_ingesting(tmp_path, files)
    assert acted == {"top_crop.png": "photo.png"}, acted
    assert not [e for e in logs if e["event"] == "joined_through_member"]


@pytest.mark.skipif(not (H.PHOTOS / "Blinds.jpg").is_file(), reason="the shared photos are not here")
def test_a_member_marked_not_a_duplicate_of_the_new_file_is_no_bridge(tmp_path: Path) -> None:
    """A padded copy does not join the bordered copy's group through the source when a person
    marked the padded copy and the source as not duplicates."""
    files = _copies_of_a_real_photo(tmp_path)
    pipeline = _pipeline(tmp_path)
    for name in ("source.png", "border.png"):
        pipeline.ingest(fingerprint_job(files[name], 10**8, 10**9))
    pad = fingerprint_job(files["pad.png"], 10**8, 10**9)
    source = pipeline.store.record_for_path(files["source.png"])
    assert source is not None and source.fingerprint is not None and source.original_id is not None
    with pipeline.store.atomic():
        Audit(pipeline.store).ignore(
            pad.fingerprint.sha256, files["pad.png"], source.fingerprint.sha256, files["source.png"], "test"  # type: ignore[union-attr]
        )
    with capture_logs() as logs:
        pipeline.ingest(pad)
    placed = pipeline.store.record_for_path(files["pad.png"])
    assert placed is not None and placed.original_id is None and not pipeline.store.duplicates_of(placed.id)
    assert not [e for e in logs if e["event"] == "joined_through_member"]
    pipeline.store.close()


@pytest.mark.skipif(not (H.PHOTOS / "Blinds.jpg").is_file(), reason="the shared photos are not here")
def test_a_reason_through_a_member_names_it_as_safe_text(tmp_path: Path) -> None:
    """A member whose name holds a newline and a byte that is not UTF-8 is named in the
    stored reason as escapes, so the reason can be stored and shown on a terminal."""
    files = _copies_of_a_real_photo(tmp_path)
    odd = tmp_path / os.fsdecode(b"src\xff\nx.png")
    files["source.png"].rename(odd)
    pipeline = _pipeline(tmp_path)
    for path in (odd, files["border.png"], files["pad.png"]):
        pipeline.ingest(fingerprint_job(path, 10**8, 10**9))
    reasons = [m.reason for _, members in pipeline.store.groups() for _, m, _ in members if m.tier.actionable]
    assert any("src\\xff\\u000ax.png (" in r for r in reasons), reasons
    pipeline.store.close()


@pytest.mark.skipif(not (H.PHOTOS / "Blinds.jpg").is_file(), reason="the shared photos are not here")
def test_a_thumbnail_does_not_bridge_a_change_too_small_for_it(tmp_path: Path) -> None:
    """A copy with a small dark spot added is similar to the photo (the pixels see the spot) and
    near its 240 px thumbnail (too small to show it): it stays out of the photo's group, listed
    similar, not joined through the thumbnail."""
    with Image.open(H.PHOTOS / "Blinds.jpg") as im:
        photo = im.convert("RGB").resize((1024, 640), Image.Resampling.LANCZOS)
    changed = photo.copy()
    ImageDraw.Draw(changed).ellipse((700, 200, 706, 206), fill=(20, 20, 20))
    files = [
        H.save(photo, tmp_path / "photo.png"),
        H.save(photo.resize((240, 150), Image.Resampling.LANCZOS), tmp_path / "thumb.png"),
        H.save(changed, tmp_path / "changed.png"),
    ]
    acted, logs = _acted_after_ingesting(tmp_path, files)
    assert acted == {"thumb.png": "photo.png"}, acted
    assert not [e for e in logs if e["event"] == "joined_through_member"]
    assert [e["other"] for e in logs if e["event"] == "similar_found"] == [files[0]], logs
