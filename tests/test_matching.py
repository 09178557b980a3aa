"""Tests for dedupd.matching: tiers and their reasons, orientations, refusals, and keep rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from dedupd import hashing
from dedupd.config import Config, KeepRule, MatchSettings
from dedupd.matching import Decision, choose_original, compare, similarity
from dedupd.models import Distances, FileStat, Fingerprint, Orientation, Record, Tier, Verdict

import helpers as H

SETTINGS = MatchSettings()
NO_ROTATIONS = MatchSettings(rotations=False)


def fp_of(picture: Image.Image, fmt: str = "PNG", **params: object) -> Fingerprint:
    return hashing.fingerprint_bytes(H.encode(picture, fmt, **params))


def file_of(picture: Image.Image, fmt: str = "PNG", **params: object) -> tuple[Fingerprint, np.ndarray]:
    """A picture encoded as a file would be: its fingerprint and its pixels for the verifier."""
    data = H.encode(picture, fmt, **params)
    return hashing.fingerprint_bytes(data), hashing.verification_pixels_of(data)


def judge(new: tuple[Fingerprint, np.ndarray], old: tuple[Fingerprint, np.ndarray], settings: MatchSettings = SETTINGS) -> Verdict:
    """The verdict as ``verdict_for`` makes it: hashes and pixels."""
    return compare(new[0], old[0], settings, (new[1], old[1]))


# --- the three tiers -----------------------------------------------------------------


def test_identical_bytes_are_an_exact_match() -> None:
    """The same bytes are the exact tier, 100% similar, with the reason said."""
    data = H.encode(H.photo(1), "JPEG")
    verdict = compare(hashing.fingerprint_bytes(data), hashing.fingerprint_bytes(data), SETTINGS)
    assert verdict.match is not None
    assert verdict.match.tier is Tier.EXACT
    assert verdict.match.similarity == 100.0
    assert "identical bytes" in verdict.match.reason


def test_metadata_only_difference_is_a_pixel_match() -> None:
    """The same coded JPEG with a comment added is the pixel tier, and says metadata differs."""
    data = H.encode(H.photo(2), "JPEG")
    verdict = compare(
        hashing.fingerprint_bytes(H.jpeg_with_comment(data, b"edited")), hashing.fingerprint_bytes(data), SETTINGS
    )
    assert verdict.match is not None
    assert verdict.match.tier is Tier.PIXEL
    assert verdict.match.similarity == 100.0
    assert "metadata" in verdict.match.reason


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda im: im.resize((192, 144), Image.Resampling.LANCZOS), id="half-size"),
        pytest.param(lambda im: im.resize((768, 576), Image.Resampling.BICUBIC), id="double-size"),
        pytest.param(lambda im: im.crop((8, 6, 376, 282)), id="slight-crop"),
        pytest.param(lambda im: ImageEnhance.Brightness(im).enhance(1.08), id="brighter"),
        pytest.param(lambda im: im.filter(ImageFilter.GaussianBlur(1.5)), id="blurred"),
    ],
)
@pytest.mark.parametrize("seed", [3, 4])
def test_edited_copy_is_a_near_match_with_its_reason(seed: int, edit: object) -> None:
    """A resized, cropped, brightened or blurred JPEG re-encode is the near tier, verified on pixels."""
    original = H.photo(seed)
    copy = edit(original)  # type: ignore[operator]
    verdict = judge(file_of(copy, "JPEG", quality=75), file_of(original))
    assert verdict.match is not None, verdict.reason
    m = verdict.match
    assert m.tier is Tier.NEAR and m.orientation is Orientation.IDENTITY, m.reason
    assert m.reason.startswith("the same picture: ")
    assert "residual" in m.reason and "no region differs" in m.reason


def test_hashes_alone_never_say_near() -> None:
    """Without the pixels a hash look-alike is at most similar, and says it was not verified."""
    original = H.photo(3)
    verdict = compare(fp_of(original, "JPEG", quality=75), fp_of(original), SETTINGS)
    assert verdict.match is not None and verdict.match.tier is Tier.SIMILAR
    m = verdict.match
    assert m.similarity == similarity(m.distances)
    assert f"pHash {m.distances.phash}/64" in m.reason and "(limit 10)" in m.reason
    assert "not verified on pixels" in m.reason


@pytest.mark.parametrize(
    ("edit", "inside"),
    [
        pytest.param(lambda im: im.resize((720, 450), Image.Resampling.BICUBIC), (True, True), id="upscaled"),
        pytest.param(lambda im: im.crop((48, 30, 432, 270)), (True, False), id="cropped"),
        pytest.param(lambda im: ImageOps.expand(im, border=16, fill=(0, 0, 0)), (True, True), id="padded"),
        pytest.param(lambda im: ImageOps.expand(im, border=9, fill=(255, 255, 255)), (True, True), id="bordered"),
        pytest.param(lambda im: im.rotate(3, resample=Image.Resampling.BICUBIC), (True, True), id="turned-3deg"),
    ],
)
@pytest.mark.skipif(not (H.PHOTOS / "Blinds.jpg").is_file(), reason="the shared photos are not here")
def test_near_verdict_says_whose_content_lies_inside_the_other(edit: object, inside: tuple[bool, bool]) -> None:
    """A near verdict on a real photo says whether each picture's content (uniform borders trimmed) was
    all compared: a crop holds less than its source; a resize, pad, border or small turn nothing it lacks."""
    with Image.open(H.PHOTOS / "Blinds.jpg") as im:
        original = im.convert("RGB").resize((480, 300), Image.Resampling.LANCZOS)
    verdict = judge(file_of(edit(original)), file_of(original))  # type: ignore[operator]
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR, verdict.reason
    assert (verdict.new_inside, verdict.old_inside) == inside, verdict.reason


# --- rotated and mirrored copies ------------------------------------------------------

_INVERSE = {
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", [o for o in Orientation if o is not Orientation.IDENTITY])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_turned_copy_matches_with_its_orientation(orientation: Orientation, fmt: str) -> None:
    """A rotated or mirrored copy matches with the orientation that turns it back, only when rotations are on."""
    stored = H.photo(5, (320, 240))
    undo = hashing.VARIANT_TRANSPOSES[orientation]  # turns the new picture into the stored one
    new = stored.transpose(_INVERSE.get(undo, undo))
    assert np.array_equal(np.asarray(new.transpose(undo)), np.asarray(stored))
    new_file, stored_file = file_of(new, fmt), file_of(stored, fmt)
    verdict = judge(new_file, stored_file)
    assert verdict.match is not None, verdict.reason
    assert verdict.match.tier is Tier.NEAR, verdict.match.reason
    assert verdict.match.orientation is orientation
    off = judge(new_file, stored_file, NO_ROTATIONS)
    assert off.match is None or off.match.tier is not Tier.NEAR


def test_symmetric_picture_prefers_identity() -> None:
    """A picture equal to its own mirror image matches as is (identity), not as mirrored."""
    half = H.photo(6, (160, 240))
    picture = Image.new("RGB", (320, 240))
    picture.paste(half, (0, 0))
    picture.paste(half.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (160, 0))
    # PNG and lossless WebP: the same pixels, but not a pixel-digest match
    png, webp = fp_of(picture), fp_of(picture, "WEBP", lossless=True)
    assert png.pixel_digest != webp.pixel_digest
    mirrored = dict(webp.variants)[Orientation.MIRROR]
    assert mirrored.phash == png.hashes.phash and mirrored.dhash == png.hashes.dhash
    verdict = judge((webp, np.asarray(picture)), (png, np.asarray(picture)))
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR
    assert verdict.match.orientation is Orientation.IDENTITY


# --- what must not match -----------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(H.flat((120, 120, 120)), H.flat((124, 120, 118)), id="two-greys"),
        pytest.param(H.near_flat(1), H.near_flat(2), id="near-flat"),
        pytest.param(H.near_flat(3), H.near_flat(3).transpose(Image.Transpose.ROTATE_90), id="near-flat-turned"),
        pytest.param(H.flat((10, 10, 10)), H.photo(7), id="flat-vs-photo"),
    ],
)
def test_low_detail_pictures_never_near_match(a: Image.Image, b: Image.Image) -> None:
    """Flat or nearly flat pictures are not compared perceptually, and the reason says so."""
    verdict = compare(fp_of(b, "JPEG"), fp_of(a), SETTINGS)
    assert verdict.match is None
    assert "too little detail" in verdict.reason


def test_low_detail_pictures_still_match_exactly() -> None:
    """Two copies of a flat file are still an exact match: only the near tier needs detail."""
    data = H.encode(H.flat(), "PNG")
    verdict = compare(hashing.fingerprint_bytes(data), hashing.fingerprint_bytes(data), SETTINGS)
    assert verdict.match is not None and verdict.match.tier is Tier.EXACT


def test_min_detail_is_configurable() -> None:
    """With min_detail 0, two nearly flat copies of one picture do match."""
    picture = H.near_flat(4, spread=12.0)
    a, b = file_of(picture), file_of(picture, "JPEG", quality=95)
    assert a[0].detail < SETTINGS.min_detail
    assert judge(b, a).match is None
    assert judge(b, a, MatchSettings(min_detail=0.0)).match is not None


@pytest.mark.parametrize("seed", range(8))
def test_recoloured_or_inverted_picture_is_not_a_match(seed: int) -> None:
    """A colour negative, or the channels swapped (RGB to BGR), is never near: different or similar, recoloured."""
    picture = H.photo(seed)
    base = file_of(picture)
    bgr = Image.fromarray(np.ascontiguousarray(np.asarray(picture)[..., ::-1]))
    for other in (H.inverted(picture), bgr):
        verdict = judge(file_of(other), base)
        assert verdict.match is None or verdict.match.tier is Tier.SIMILAR, verdict.reason
        if verdict.match is not None:
            assert "recoloured" in verdict.reason or "differs" in verdict.reason


def test_different_pictures_do_not_match_and_say_why() -> None:
    """Distinct synthetic photos never match, and the reason names each failed test with its limit."""
    prints = [fp_of(H.photo(s)) for s in range(100, 130)]
    for i, a in enumerate(prints):
        for b in prints[i + 1 :]:
            verdict = compare(b, a, SETTINGS)
            assert verdict.match is None
            assert verdict.distances is not None
            if verdict.distances.phash > SETTINGS.near_distance:
                assert f"pHash {verdict.distances.phash}/64 bits apart (limit 10)" in verdict.reason


def test_distinct_real_photos_never_match() -> None:
    """No two of the distinct real photos (top level of photos/) match each other."""
    paths = sorted(H.PHOTOS.glob("*.jpg"))
    if len(paths) < 10:
        pytest.skip("the real photos are not available")
    prints = {p.name: hashing.fingerprint_file(p)[1] for p in paths}
    pixels = {p.name: hashing.verification_pixels(p) for p in paths}
    false = []
    for a in prints:
        for b in prints:
            if a < b:
                m = compare(prints[b], prints[a], SETTINGS, (pixels[b], pixels[a])).match
                if m is not None and m.tier.actionable:
                    false.append((a, b, m.reason))
    assert false == []


def test_natural_duplicates_match() -> None:
    """The same real artwork published at two sizes by its authors is a near match."""
    small = H.PHOTOS / "natural-duplicates" / "Elephants.jpg"
    big = H.PHOTOS / "natural-duplicates" / "Elephants_3840x2160.jpg"
    if not (small.exists() and big.exists()):
        pytest.skip("the real photos are not available")
    verdict = compare(
        hashing.fingerprint_file(big)[1],
        hashing.fingerprint_file(small)[1],
        SETTINGS,
        (hashing.verification_pixels(big), hashing.verification_pixels(small)),
    )
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR, verdict.reason


def test_thresholds_are_each_enforced() -> None:
    """Tightening any one hash threshold below the pair's distance turns a hash look-alike into a refusal."""
    original = H.photo(8)
    copy = ImageEnhance.Brightness(original.crop((10, 8, 374, 280)).resize((200, 150))).enhance(1.1)
    a, b = fp_of(original), fp_of(copy, "JPEG", quality=60)
    m = compare(b, a, SETTINGS).match
    assert m is not None
    d = m.distances
    assert d.phash > 0 and d.dhash > 0 and d.colour > 0
    for tighter, words in (
        (MatchSettings(near_distance=d.phash - 1, rotations=False), "pHash"),
        (MatchSettings(verify_distance=d.dhash - 1, rotations=False), "dHash"),
        (MatchSettings(colour_distance=d.colour / 2, rotations=False), "colour difference"),
    ):
        verdict = compare(b, a, tighter)
        assert verdict.match is None
        assert words in verdict.reason


def test_similarity_is_the_mean_share_of_equal_bits() -> None:
    """similarity() is 100 for identical hashes and falls with the bits that differ."""
    assert similarity(Distances(0, 0, 0.0)) == 100.0
    assert similarity(Distances(64, 64, 0.0)) == 0.0
    assert similarity(Distances(8, 8, 3.0)) == 87.5


# --- which file is the original ----------------------------------------------------------


def record(
    fid: int,
    path: str,
    *,
    seq: int,
    size: int = 1000,
    mtime: int = 1_000_000_000,
    pixels: tuple[int, int] = (100, 100),
    fmt: str = "JPEG",
) -> Record:
    fp = Fingerprint(
        sha256=f"{fid:064x}",
        pixel_digest=f"px{fid}",
        hashes=hashing.Hashes(phash=0, dhash=0, colour=bytes(48)),
        width=pixels[0],
        height=pixels[1],
        format=fmt,
        detail=50.0,
    )
    return Record(id=fid, path=Path(path), stat=FileStat(1, fid, size, mtime), fingerprint=fp, seq=seq)


def keep(*rules: KeepRule, **kw: object) -> Config:
    return Config(keep=rules, **kw)  # type: ignore[arg-type]


def test_first_seen_keeps_the_older_record() -> None:
    """By default the file indexed first stays the original."""
    old, new = record(1, "/p/a.jpg", seq=1), record(2, "/p/b.jpg", seq=2)
    assert choose_original(new, old, Config()) == (Decision.KEEP_OLD, "kept by rule first_seen")
    assert choose_original(old, new, Config())[0] is Decision.KEEP_NEW


def test_reference_dir_wins_over_first_seen() -> None:
    """A file under a reference directory is the original even when it was seen second."""
    cfg = Config(reference_dirs=(Path("/archive"),))
    old, new = record(1, "/inbox/a.jpg", seq=1), record(2, "/archive/2020/a.jpg", seq=2)
    assert choose_original(new, old, cfg) == (Decision.KEEP_NEW, "kept by rule reference")
    # a sibling whose name merely starts with the same letters is not under it
    lookalike = record(3, "/archive-old/a.jpg", seq=3)
    assert choose_original(lookalike, old, cfg) == (Decision.KEEP_OLD, "kept by rule first_seen")


@pytest.mark.parametrize(
    ("rule", "better", "worse"),
    [
        (KeepRule.HIGHEST_RESOLUTION, {"pixels": (400, 300)}, {"pixels": (300, 300)}),
        (KeepRule.LARGEST_FILE, {"size": 5000}, {"size": 4999}),
        (KeepRule.PREFERRED_FORMAT, {"fmt": "PNG"}, {"fmt": "JPEG"}),
        (KeepRule.PREFERRED_FORMAT, {"fmt": "JPEG"}, {"fmt": "BMP"}),  # listed beats unlisted
        (KeepRule.OLDEST, {"mtime": 1}, {"mtime": 2}),
    ],
)
def test_each_keep_rule_decides(rule: KeepRule, better: dict[str, object], worse: dict[str, object]) -> None:
    """Each rule prefers the better file whichever side it is on, and names itself."""
    cfg = keep(rule, KeepRule.FIRST_SEEN)
    good_new = record(2, "/p/new", seq=2, **better)  # type: ignore[arg-type]
    bad_old = record(1, "/p/old", seq=1, **worse)  # type: ignore[arg-type]
    assert choose_original(good_new, bad_old, cfg) == (Decision.KEEP_NEW, f"kept by rule {rule.value}")
    bad_new = record(2, "/p/new", seq=2, **worse)  # type: ignore[arg-type]
    good_old = record(1, "/p/old", seq=1, **better)  # type: ignore[arg-type]
    assert choose_original(bad_new, good_old, cfg) == (Decision.KEEP_OLD, f"kept by rule {rule.value}")


def test_rules_apply_in_order() -> None:
    """The first rule that tells the files apart wins; later rules are not consulted."""
    big_jpeg = record(1, "/p/a", seq=1, pixels=(400, 400), fmt="JPEG")
    small_png = record(2, "/p/b", seq=2, pixels=(200, 200), fmt="PNG")
    assert choose_original(small_png, big_jpeg, keep(KeepRule.HIGHEST_RESOLUTION, KeepRule.PREFERRED_FORMAT))[0] is Decision.KEEP_OLD
    assert choose_original(small_png, big_jpeg, keep(KeepRule.PREFERRED_FORMAT, KeepRule.HIGHEST_RESOLUTION))[0] is Decision.KEEP_NEW


def test_preferred_formats_order_is_configurable() -> None:
    """preferred_formats decides the order of the preferred_format rule."""
    jpeg, webp = record(1, "/p/a", seq=1, fmt="JPEG"), record(2, "/p/b", seq=2, fmt="WEBP")
    assert choose_original(webp, jpeg, keep(KeepRule.PREFERRED_FORMAT, preferred_formats=("WEBP", "JPEG")))[0] is Decision.KEEP_NEW
    assert choose_original(webp, jpeg, keep(KeepRule.PREFERRED_FORMAT, preferred_formats=("jpeg", "webp")))[0] is Decision.KEEP_OLD


def test_tie_when_no_rule_decides() -> None:
    """When every rule sees the files as equal, the decision is a tie and says no action."""
    a, b = record(1, "/p/a", seq=1), record(2, "/p/b", seq=2)
    decision, why = choose_original(b, a, keep(KeepRule.HIGHEST_RESOLUTION, KeepRule.LARGEST_FILE, KeepRule.OLDEST))
    assert decision is Decision.TIE
    assert "no action" in why
