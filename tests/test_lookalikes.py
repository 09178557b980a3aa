"""Real pictures: look-alike captures stay apart, edited copies of real photos match,
`similar` is never acted on, and `dedupd compare` explains each verdict (real CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from dedupd import hashing
from dedupd.config import MatchSettings
from dedupd.matching import compare

import helpers as H
from helpers import RunCli

LOOKALIKES = H.PHOTOS.parent / "lookalikes"
ACTIONABLE = {"exact", "pixel", "near"}

needs_lookalikes = pytest.mark.skipif(not (LOOKALIKES / "labels.json").exists(), reason="../shared/lookalikes not available")
needs_photos = pytest.mark.skipif(not (H.PHOTOS / "Aqua.jpg").exists(), reason="../shared/photos not available")


def _labels() -> tuple[list[set[str]], list[set[str]]]:
    raw = json.loads((LOOKALIKES / "labels.json").read_text())
    return [set(s) for s in raw["duplicates"]], [set(s["files"]) for s in raw["ambiguous"]["sets"]]


@pytest.fixture(scope="module")
def lookalike_groups(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, list[tuple[str, str]]]]:
    """`dedupd scan` over a copy of ../shared/lookalikes, then `groups --format json`, paths relative."""
    if not (LOOKALIKES / "labels.json").exists():
        pytest.skip("../shared/lookalikes not available")
    home = tmp_path_factory.mktemp("lookalikes")
    root = home / "lookalikes"
    shutil.copytree(LOOKALIKES, root, ignore=shutil.ignore_patterns("licenses", "contact.png", "*.md", "*.json"))
    env, db = H.cli_environment(home), home / "dedupd.db"
    scan = H.run_dedupd("scan", root, "--workers", "2", db=db, env=env, cwd=home)
    assert scan.returncode == 0, scan.stderr
    proc = H.run_dedupd("groups", "--format", "json", db=db, env=env, cwd=home)
    assert proc.returncode == 0, proc.stderr
    rel = lambda p: str(Path(p).relative_to(root))  # noqa: E731
    return [(rel(g["original"]), [(rel(d["path"]), d["tier"]) for d in g["duplicates"]]) for g in json.loads(proc.stdout)]


@needs_lookalikes
def test_every_lookalike_family_stays_apart_in_actionable_tiers(lookalike_groups: list[tuple[str, list[tuple[str, str]]]]) -> None:
    """After a real scan of every look-alike family, no two distinct captures share a group in an exact, pixel or near tier."""
    duplicates, ambiguous = _labels()
    false = []
    for original, members in lookalike_groups:
        acted = [original] + [p for p, tier in members if tier in ACTIONABLE]
        for i, a in enumerate(acted):
            for b in acted[i + 1 :]:
                same = any({a, b} <= s for s in duplicates) or any({a, b} <= s for s in ambiguous)
                if not same:
                    false.append((a, b))
    assert false == []


@needs_lookalikes
def test_lookalike_true_duplicates_are_found(lookalike_groups: list[tuple[str, list[tuple[str, str]]]]) -> None:
    """The true-duplicate sets (another size, format or encoding) end in one group; the easy ones as near."""
    root_of = {}
    tier_of = {}
    for original, members in lookalike_groups:
        root_of[original] = original
        for p, tier in members:
            root_of[p], tier_of[p] = original, tier
    for folder in ("pillow-flower", "visp-solvay-1927", "kivy-city-still-vs-frame"):
        files = sorted(f"true-duplicates/{folder}/{f.name}" for f in (LOOKALIKES / "true-duplicates" / folder).iterdir())
        assert len({root_of.get(f, f) for f in files}) == 1, (folder, [(f, root_of.get(f)) for f in files])
        assert all(tier_of.get(f, "near") == "near" for f in files), [(f, tier_of.get(f)) for f in files]


def _watermark(im: Image.Image) -> Image.Image:
    """Semi-transparent white text with a dark outline, bottom right, 5% of the height (a stock-photo mark)."""
    size = max(8, round(im.height * 0.05))
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=size)
    margin = round(min(im.size) * 0.02)
    draw.text((im.width - margin, im.height - margin), "\u00a9 Example Photo 2024", font=font, anchor="rb",
              fill=(255, 255, 255, 170), stroke_width=max(1, size // 15), stroke_fill=(0, 0, 0, 120))  # fmt: skip
    return Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")


def _crop(left: float, top: float, right: float, bottom: float):  # type: ignore[no-untyped-def]
    return lambda im: im.crop((round(im.width * left), round(im.height * top), im.width - round(im.width * right), im.height - round(im.height * bottom)))


EDITS = {
    "crop-10pct-all": _crop(0.1, 0.1, 0.1, 0.1),
    "crop-15pct-left": _crop(0.15, 0, 0, 0),
    "pad-16px": lambda im: ImageOps.expand(im, border=16, fill=(0, 0, 0)),
    "border-3pct": lambda im: ImageOps.expand(im, border=round(min(im.size) * 0.03), fill=(255, 255, 255)),
}


@needs_photos
@pytest.mark.parametrize("name", ["Aqua.jpg", "Bridge_by_Sander_Klootwijk.jpg"])
def test_crops_pads_and_watermarks_of_real_photos_match(tmp_path: Path, name: str) -> None:
    """Cropped, padded and bordered copies of a real photo are proposed by the index and verified near;
    a text-watermarked one is found (near, or similar where the picture under the text is too grey to see through it)."""
    from dedupd.index import HashIndex

    with Image.open(H.PHOTOS / name) as im:
        source = ImageOps.exif_transpose(im).convert("RGB")
    source.thumbnail((1600, 1600))
    original = H.save(source, tmp_path / "original.jpg", quality=92)
    _, fp_old = hashing.fingerprint_file(original)
    px_old = hashing.verification_pixels(original)
    index = HashIndex()
    index.add_fingerprint(1, fp_old)
    for edit, op in EDITS.items():
        path = H.save(op(source), tmp_path / f"{edit}.jpg", quality=90)
        _, fp = hashing.fingerprint_file(path)
        assert 1 in index.candidates(fp, MatchSettings()), f"{edit}: not proposed by the index"
        verdict = compare(fp, fp_old, MatchSettings(), (hashing.verification_pixels(path), px_old))
        assert verdict.match is not None and verdict.match.tier.value == "near", f"{edit}: {verdict.reason}"
    marked = H.save(_watermark(source), tmp_path / "watermarked.jpg", quality=90)
    _, fp = hashing.fingerprint_file(marked)
    assert 1 in index.candidates(fp, MatchSettings())
    verdict = compare(fp, fp_old, MatchSettings(), (hashing.verification_pixels(marked), px_old))
    assert verdict.match is not None and verdict.match.tier.value in ("near", "similar"), verdict.reason
    if verdict.match.tier.value == "similar":
        assert "bottom-right" in verdict.reason


# --- the real CLI ------------------------------------------------------------------


@needs_lookalikes
def test_similar_pair_is_never_moved_by_a_config_that_quarantines_near(tmp_path: Path, run_cli: RunCli) -> None:
    """With near: quarantine, a scan moves the near copy but leaves both files of a similar pair (two video frames) in place, and says so."""
    root, quarantine = tmp_path / "lib", tmp_path / "q"
    root.mkdir()
    frames = [root / "frame030.png", root / "frame060.png"]
    for frame, src in zip(frames, ("movie_frame030.png", "movie_frame060.png"), strict=True):
        shutil.copy(LOOKALIKES / "video-frames_kphotoalbum-webcam" / src, frame)
    photo = H.save(H.photo(90, (480, 360)), root / "photo.png")
    copy = H.save(H.photo(90, (480, 360)).resize((360, 270)), root / "photo_small.jpg", quality=85)
    config = tmp_path / "c.yaml"
    config.write_text(f"quarantine_dir: {quarantine}\nactions: {{exact: quarantine, pixel: quarantine, near: quarantine}}\n")
    quarantine.mkdir(parents=True, exist_ok=True)
    before = {f: f.read_bytes() for f in frames}
    result = run_cli("scan", root, "--config", config)
    assert result.returncode == 0, result.stderr
    assert not copy.exists() and photo.exists()
    assert {f: f.read_bytes() for f in frames} == before
    data = json.loads(run_cli("groups", "--format", "json", "--tier", "similar").stdout)
    assert [(Path(g["original"]).name, [(Path(d["path"]).name, d["tier"]) for d in g["duplicates"]]) for g in data] == [
        ("frame030.png", [("frame060.png", "similar")])
    ]
    table = run_cli("groups").stdout
    assert "similar, for review (never acted on)" in table
    audit = json.loads(run_cli("audit", "--format", "json").stdout)
    assert not any(r["path"].endswith("frame060.png") and r["action"] == "quarantine" for r in audit)


@needs_lookalikes
def test_compare_explains_each_verdict(tmp_path: Path, run_cli: RunCli) -> None:
    """`dedupd compare` says near (exit 0), similar (exit 4) or different (exit 1), each with what it saw."""
    photo = H.save(H.photo(91, (480, 360)), tmp_path / "a.png")
    cropped = H.save(H.photo(91, (480, 360)).crop((40, 30, 440, 330)), tmp_path / "a_crop.jpg", quality=90)
    frames = LOOKALIKES / "video-frames_kphotoalbum-webcam"
    near = run_cli("compare", photo, cropped)
    assert near.returncode == 0, near.stdout + near.stderr
    assert "DUPLICATE (near" in near.stdout and "cropped" in near.stdout
    similar = run_cli("compare", frames / "movie_frame030.png", frames / "movie_frame060.png", "--format", "json")
    assert similar.returncode == 4, similar.stdout + similar.stderr
    out = json.loads(similar.stdout)
    assert out["tier"] == "similar" and out["duplicate"] is False and "of the frame differs" in out["reason"]
    different = run_cli("compare", photo, LOOKALIKES / "reshoot_kphotoalbum-bar55" / "bar55.jpg")
    assert different.returncode == 1
    assert "NOT duplicates" in different.stdout and "different pictures" in different.stdout


@needs_lookalikes
def test_similar_pair_is_not_a_group_membership(tmp_path: Path, run_cli: RunCli) -> None:
    """A file found only similar to an earlier one stays an original: its own resized copy is matched (and quarantined) as a near copy of it, not of the look-alike, and the similar pair is listed for review apart."""
    root, quarantine = tmp_path / "lib", tmp_path / "q"
    root.mkdir()
    frames = LOOKALIKES / "video-frames_visp-castel-model"
    shutil.copy(frames / "castel_image0000.png", root / "a_frame000.png")
    shutil.copy(frames / "castel_image0015.png", root / "b_frame015.png")
    with Image.open(frames / "castel_image0015.png") as im:
        small = im.convert("RGB")
        small = small.resize((small.width * 3 // 4, small.height * 3 // 4), Image.Resampling.LANCZOS)
        small.save(root / "c_frame015_small.jpg", quality=90)
    config = tmp_path / "c.yaml"
    config.write_text(f"quarantine_dir: {quarantine}\nactions: {{near: quarantine}}\n")
    quarantine.mkdir(parents=True, exist_ok=True)
    result = run_cli("scan", root, "--config", config)
    assert result.returncode == 0, result.stderr
    audit = json.loads(run_cli("audit", "--format", "json").stdout)
    moved = [(Path(r["path"]).name, Path(r["original"]).name, r["tier"]) for r in audit if r["action"] == "quarantine"]
    assert moved == [("c_frame015_small.jpg", "b_frame015.png", "near")]
    similar = json.loads(run_cli("groups", "--format", "json", "--tier", "similar").stdout)
    assert [(Path(g["original"]).name, [Path(d["path"]).name for d in g["duplicates"]]) for g in similar] == [
        ("a_frame000.png", ["b_frame015.png"])
    ]
    assert (root / "a_frame000.png").exists() and (root / "b_frame015.png").exists()
    assert not (root / "c_frame015_small.jpg").exists()  # the near copy was quarantined


def _file(im: Image.Image) -> tuple[hashing.Fingerprint, object]:
    data = H.encode(im, "PNG")
    return hashing.fingerprint_bytes(data), hashing.verification_pixels_of(data)


@needs_lookalikes
@pytest.mark.parametrize("scale", [0.75, 0.5])
@pytest.mark.parametrize(
    "family",
    ["video-frames_kphotoalbum-webcam", "video-frames_visp-mire2-target", "video-frames_pystackreg-pc12-microscopy"],
)
def test_a_downscaled_small_frame_is_near_its_own_frame_only(family: str, scale: float) -> None:
    """A downscaled copy of a small video frame (160x120 and the like) is near its own frame, never near
    another frame of the clip, although the motion between them is below a pixel or two at that size."""
    frames = sorted((LOOKALIKES / family).glob("*.png"))
    pictures = {p.name: Image.open(p).convert("RGB") for p in frames}
    stored = {name: _file(im) for name, im in pictures.items()}
    for name, im in pictures.items():
        small = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        fp, px = _file(small)
        for other, (ofp, opx) in stored.items():
            verdict = compare(fp, ofp, MatchSettings(), (px, opx))  # type: ignore[arg-type]
            tier = verdict.match.tier.value if verdict.match else None
            if other == name:
                assert tier == "near", f"{name} at {scale:.0%}: {verdict.reason}"
            else:
                assert tier not in ACTIONABLE, f"{name} at {scale:.0%} vs {other}: {verdict.reason}"
