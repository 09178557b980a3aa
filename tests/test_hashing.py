"""Tests for dedupd.hashing on real encoded files: formats, hashes, orientation, metadata, bad input."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import imagehash
import numpy as np
import pytest
import scipy.fftpack
from PIL import Image

from dedupd import errors, hashing
from dedupd.config import MatchSettings
from dedupd.matching import compare
from dedupd.models import Orientation, Tier

import helpers as H

SETTINGS = MatchSettings()
#: the transposes that swap the axes (the others are exact mirror images of pixels)
AXIS_SWAPPING = {Orientation.ROT90, Orientation.ROT270, Orientation.MIRROR_ROT90, Orientation.MIRROR_ROT270}


def _fp(data: bytes, **kw: object) -> hashing.Fingerprint:
    return hashing.fingerprint_bytes(data, **kw)  # type: ignore[arg-type]


def _as_int(h: imagehash.ImageHash) -> int:
    return int(str(h), 16)


# --- formats ------------------------------------------------------------------

FORMAT_CASES = [
    ("a.jpg", "JPEG", {}),
    ("a.png", "PNG", {}),
    ("a.webp", "WEBP", {}),
    ("lossless.webp", "WEBP", {"lossless": True}),
    ("a.gif", "GIF", {}),
    ("a.tif", "TIFF", {}),
    ("a.bmp", "BMP", {}),
    ("a.heic", "HEIF", {}),
    ("a.avif", "AVIF", {}),
]


@pytest.mark.parametrize(("name", "fmt", "params"), FORMAT_CASES, ids=[c[0] for c in FORMAT_CASES])
def test_every_format_fingerprints_as_the_same_picture(tmp_path: Path, name: str, fmt: str, params: dict[str, object]) -> None:
    """Each supported format decodes, reports its size and format, and near-matches the PNG master."""
    picture = H.photo(11, (320, 240))
    master = _fp(H.encode(picture, "PNG"))
    path = H.save(picture, tmp_path / name, **params)
    st, fp = hashing.fingerprint_file(path)
    assert fp.format == fmt
    assert (fp.width, fp.height) == (320, 240)
    assert st.size == path.stat().st_size
    assert fp.detail > SETTINGS.min_detail
    assert len(fp.variants) == 7
    verdict = compare(fp, master, SETTINGS)
    assert verdict.match is not None, verdict.reason
    assert verdict.match.orientation is Orientation.IDENTITY


def _grey16(picture: Image.Image) -> Image.Image:
    grey = np.asarray(picture.convert("L")).astype("<u2") * 257
    return Image.frombytes("I;16", picture.size, grey.tobytes())


MODE_CASES = [
    ("L", "JPEG", lambda im: im.convert("L")),
    ("CMYK", "JPEG", lambda im: im.convert("CMYK")),
    ("I;16", "PNG", _grey16),
    ("I;16", "TIFF", _grey16),
    ("LA", "PNG", lambda im: im.convert("LA")),
    ("1", "PNG", lambda im: im.convert("L").convert("1")),
    ("P", "PNG", lambda im: im.quantize(64)),
    ("RGBA", "PNG", lambda im: im.convert("RGBA")),
]


@pytest.mark.parametrize(("mode", "fmt", "convert"), MODE_CASES, ids=[f"{m}-{f}" for m, f, _ in MODE_CASES])
def test_every_pixel_mode_fingerprints_as_the_same_picture(mode: str, fmt: str, convert: object) -> None:
    """Grey, 16-bit, CMYK, bilevel, palette and alpha files match the same picture in 8-bit RGB."""
    picture = H.photo(30)
    data = H.encode(convert(picture), fmt)  # type: ignore[operator]
    assert Image.open(io.BytesIO(data)).mode == mode
    fp = _fp(data)
    colourless = mode in ("L", "I;16", "LA", "1")
    reference = _fp(H.encode(picture.convert("L") if colourless else picture, "PNG"))
    assert fp.detail > SETTINGS.min_detail
    verdict = compare(fp, reference, SETTINGS)
    assert verdict.match is not None, verdict.reason


def test_gif_hashes_its_first_frame(tmp_path: Path) -> None:
    """An animated GIF is fingerprinted by its first frame, not a later one."""
    first, second = H.photo(21, (256, 192)), H.photo(22, (256, 192))
    frames = [f.convert("RGB").quantize(256) for f in (first, second)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    _, fp = hashing.fingerprint_file(path)
    assert compare(fp, _fp(H.encode(first, "PNG")), SETTINGS).match is not None
    assert compare(fp, _fp(H.encode(second, "PNG")), SETTINGS).match is None


# --- the perceptual hashes ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_phash_and_dhash_equal_imagehash_of_the_same_thumbnail(fmt: str, seed: int) -> None:
    """The stored pHash and dHash are exactly imagehash's phash and dhash of dedupd's thumbnail."""
    data = H.encode(H.photo(seed, (384, 288)), fmt)
    fp = _fp(data)
    im = Image.open(io.BytesIO(data))
    if fmt == "JPEG":  # decoded the way hashing decodes a JPEG: DCT-scaled
        im.draft("RGB", (hashing.DRAFT_SIDE, hashing.DRAFT_SIDE))
    thumb = hashing._thumbnail(im)
    assert fp.hashes.phash == _as_int(imagehash.phash(thumb))
    assert fp.hashes.dhash == _as_int(imagehash.dhash(thumb.convert("L")))


def _phash_of_grey_array(small: np.ndarray) -> int:
    block = scipy.fftpack.dct(scipy.fftpack.dct(small, axis=0), axis=1)[:8, :8]
    bits = (block > np.median(block)).astype(np.uint8).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


@pytest.mark.parametrize("seed", [4, 5])
def test_orientation_variants_are_the_hashes_of_the_transposed_thumbnail(seed: int) -> None:
    """Each variant is exactly the pHash, dHash and colour grid of the thumbnail turned that way."""
    data = H.encode(H.photo(seed, (300, 200)), "PNG")
    fp = _fp(data)
    thumb = hashing._thumbnail(Image.open(io.BytesIO(data)))
    small = thumb.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    variants = dict(fp.variants)
    assert set(variants) == set(Orientation) - {Orientation.IDENTITY}
    for orientation, transpose in hashing.VARIANT_TRANSPOSES.items():
        turned = thumb.transpose(transpose)
        expected_phash = _phash_of_grey_array(np.asarray(small.transpose(transpose), dtype=np.float64))
        ycc = np.asarray(turned.convert("YCbCr"), dtype=np.float32)
        grid = ycc.reshape(4, 16, 4, 16, 3).mean(axis=(1, 3))
        got = variants[orientation]
        assert got.phash == expected_phash, orientation
        assert got.dhash == _as_int(imagehash.dhash(turned.convert("L"))), orientation
        assert hashing.colour_distance(got.colour, np.clip(grid + 0.5, 0, 255).astype(np.uint8).tobytes()) < 0.1


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_orientation_variants_match_the_actually_transposed_picture(seed: int) -> None:
    """Hashing a rotated or mirrored file gives its variant hashes: exactly for mirror images, within rounding for quarter turns."""
    picture = H.photo(seed, (320, 240))
    variants = dict(_fp(H.encode(picture, "PNG")).variants)
    for orientation, transpose in hashing.VARIANT_TRANSPOSES.items():
        real = _fp(H.encode(picture.transpose(transpose), "PNG")).hashes
        mine = variants[orientation]
        if orientation in AXIS_SWAPPING:
            # Pillow resizes in two passes with rounding in between, so a
            # quarter turn does not commute with the thumbnail exactly.
            assert hashing.hamming(mine.phash, real.phash) <= 4, orientation
            assert hashing.hamming(mine.dhash, real.dhash) <= 8, orientation
            assert hashing.colour_distance(mine.colour, real.colour) <= 1.0, orientation
        else:
            assert mine == real, orientation


def test_variants_can_be_turned_off() -> None:
    """variants=False computes only the picture as displayed."""
    fp = _fp(H.encode(H.photo(9), "PNG"), variants=False)
    assert fp.variants == ()


# --- EXIF orientation -------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_exif_orientation_is_applied(fmt: str, orientation: int) -> None:
    """A picture stored turned, with the Orientation tag that turns it back, hashes like the upright one."""
    upright = H.photo(12, (320, 240))
    stored = upright.transpose(H.STORE_ROTATED[orientation]) if orientation != 1 else upright
    fp = _fp(H.encode(stored, fmt, exif=H.exif_bytes(orientation)))
    reference = _fp(H.encode(upright, fmt))
    assert (fp.width, fp.height) == (320, 240)
    assert hashing.hamming(fp.hashes.phash, reference.hashes.phash) <= 2
    verdict = compare(fp, reference, MatchSettings(rotations=False))
    assert verdict.match is not None, verdict.reason
    assert verdict.match.orientation is Orientation.IDENTITY


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_is_applied_once_for_tiff(orientation: int) -> None:
    """A TIFF stored turned, with the Orientation tag that turns it back, hashes like the upright one."""
    upright = H.photo(12, (320, 240))
    stored = upright.transpose(H.STORE_ROTATED[orientation])
    fp = _fp(H.encode(stored, "TIFF", exif=H.exif_bytes(orientation)))
    reference = _fp(H.encode(upright, "TIFF"))
    assert (fp.width, fp.height) == (320, 240)
    assert compare(fp, reference, MatchSettings(rotations=False)).match is not None


# --- the pixel digest: metadata in, metadata out ------------------------------------


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    """A JPEG without any metadata segment but JFIF."""
    return H.encode(H.photo(13, (320, 240)), "JPEG")


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda d: H.jpeg_with_comment(d, b"a comment"), id="COM"),
        pytest.param(lambda d: H.jpeg_with_exif(d, software="editor 2.0", artist="me"), id="EXIF"),
        pytest.param(lambda d: H.jpeg_with_exif(d, orientation=1), id="EXIF-orientation-1"),
        pytest.param(lambda d: H.jpeg_with_xmp(d, b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"), id="XMP"),
        pytest.param(lambda d: H.jpeg_insert_segment(d, 0xED, b"Photoshop 3.0\x008BIM"), id="APP13"),
        pytest.param(lambda d: d + b"trailing bytes after EOI", id="after-EOI"),
    ],
)
def test_jpeg_metadata_change_keeps_the_pixel_digest(jpeg_bytes: bytes, edit: object) -> None:
    """Adding metadata to a JPEG changes its bytes but not its pixel digest: a pixel-tier match."""
    edited = edit(jpeg_bytes)  # type: ignore[operator]
    assert Image.open(io.BytesIO(edited)).size == (320, 240)
    a, b = _fp(jpeg_bytes), _fp(edited)
    assert a.sha256 != b.sha256
    assert a.pixel_digest == b.pixel_digest
    verdict = compare(b, a, SETTINGS)
    assert verdict.match is not None and verdict.match.tier is Tier.PIXEL
    assert "metadata" in verdict.match.reason


def test_jpeg_orientation_change_changes_the_pixel_digest(jpeg_bytes: bytes) -> None:
    """The same coded picture tagged to display rotated is a different pixel digest."""
    plain = _fp(H.jpeg_with_exif(jpeg_bytes, orientation=1))
    turned = _fp(H.jpeg_with_exif(jpeg_bytes, orientation=6))
    assert plain.pixel_digest == _fp(jpeg_bytes).pixel_digest
    assert turned.pixel_digest != plain.pixel_digest
    assert (turned.width, turned.height) == (240, 320)


def test_jpeg_re_encode_changes_the_pixel_digest(jpeg_bytes: bytes) -> None:
    """Re-encoding a JPEG (new coded picture) is not a pixel match, only a near one."""
    picture = Image.open(io.BytesIO(jpeg_bytes))
    data = H.encode(picture, "JPEG", quality=70)
    again = _fp(data)
    assert again.pixel_digest != _fp(jpeg_bytes).pixel_digest
    pixels = (hashing.verification_pixels_of(data), hashing.verification_pixels_of(jpeg_bytes))
    verdict = compare(again, _fp(jpeg_bytes), SETTINGS, pixels)
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        (b"tEXt", b"Comment\x00hello"),
        (b"iTXt", b"Description\x00\x00\x00en\x00\x00caf\xc3\xa9"),
        (b"tIME", b"\x07\xea\x0b\x16\x04\x05\x06"),
        (b"gAMA", b"\x00\x00\xb1\x8f"),
    ],
)
def test_png_metadata_chunk_keeps_the_pixel_digest(kind: bytes, payload: bytes) -> None:
    """Inserting an ancillary chunk into a PNG keeps its pixel digest."""
    data = H.encode(H.photo(14), "PNG")
    edited = H.png_insert_chunk(data, kind, payload)
    a, b = _fp(data), _fp(edited)
    assert a.sha256 != b.sha256
    assert a.pixel_digest == b.pixel_digest
    assert compare(b, a, SETTINGS).match.tier is Tier.PIXEL  # type: ignore[union-attr]


def test_png_orientation_chunk_changes_the_pixel_digest() -> None:
    """A PNG eXIf chunk that turns the picture changes its pixel digest."""
    data = H.encode(H.photo(14), "PNG")
    turned = H.png_insert_chunk(data, b"eXIf", H.exif_bytes(6).removeprefix(b"Exif\x00\x00"))
    fp = _fp(turned)
    assert (fp.width, fp.height) == (288, 384)
    assert fp.pixel_digest != _fp(data).pixel_digest


def test_lossless_conversion_between_decoded_formats_is_a_pixel_match() -> None:
    """BMP, lossless WebP and TIFF of the same pixels share one pixel digest."""
    picture = H.photo(15)
    prints = [_fp(H.encode(picture, f, **k)) for f, k in (("BMP", {}), ("WEBP", {"lossless": True}), ("TIFF", {}))]
    assert len({p.sha256 for p in prints}) == 3
    assert len({p.pixel_digest for p in prints}) == 1


def test_png_to_tiff_is_a_zero_distance_near_match() -> None:
    """PNG to TIFF (lossless) is not a pixel match by design (PNG hashes its chunks), but a near match at distance 0."""
    from dedupd.config import MatchSettings
    from dedupd.matching import compare
    from dedupd.models import Tier

    picture = H.photo(15)
    png_data, tiff_data = H.encode(picture, "PNG"), H.encode(picture, "TIFF")
    png, tiff = _fp(png_data), _fp(tiff_data)
    assert png.pixel_digest != tiff.pixel_digest
    pixels = (hashing.verification_pixels_of(tiff_data), hashing.verification_pixels_of(png_data))
    verdict = compare(tiff, png, MatchSettings(), pixels)
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR
    assert verdict.match.distances.phash == 0 and verdict.match.distances.dhash == 0


def test_tiff_to_bmp_is_a_pixel_match() -> None:
    """A lossless conversion between decoded-pixel formats (TIFF to BMP) is a pixel match."""
    picture = H.photo(15)
    tiff, bmp = _fp(H.encode(picture, "TIFF")), _fp(H.encode(picture, "BMP"))
    assert tiff.pixel_digest == bmp.pixel_digest


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_palette_recolour_is_not_a_pixel_match(fmt: str) -> None:
    """Two palette images with the same indices but negated palettes are different pictures."""
    picture = H.photo(16).quantize(64)
    negative = picture.copy()
    negative.putpalette([255 - v for v in picture.getpalette()])  # type: ignore[union-attr]
    a, b = _fp(H.encode(picture, fmt)), _fp(H.encode(negative, fmt))
    assert Image.open(io.BytesIO(H.encode(picture, fmt))).mode == "P"
    assert compare(b, a, SETTINGS).match is None


# --- detail: flat pictures and pictures held in alpha ---------------------------------


@pytest.mark.parametrize(
    "picture",
    [
        pytest.param(H.flat((0, 0, 0)), id="black"),
        pytest.param(H.flat((255, 255, 255)), id="white"),
        pytest.param(H.flat((90, 140, 200)), id="blue"),
        pytest.param(H.near_flat(1), id="near-flat-1"),
        pytest.param(H.near_flat(2), id="near-flat-2"),
        pytest.param(Image.new("RGBA", (320, 240), (200, 30, 30, 0)), id="fully-transparent"),
    ],
)
def test_flat_pictures_have_low_detail(picture: Image.Image) -> None:
    """A flat or nearly flat picture has detail below the default min_detail."""
    assert _fp(H.encode(picture, "PNG")).detail < SETTINGS.min_detail


def test_photos_have_high_detail() -> None:
    """Synthetic photos have detail well above the default min_detail."""
    assert min(_fp(H.encode(H.photo(s), "PNG")).detail for s in range(5)) > 2 * SETTINGS.min_detail


@pytest.mark.parametrize("rgb", [(255, 255, 255), (0, 0, 0)])
def test_picture_held_in_alpha_has_detail_and_identity(rgb: tuple[int, int, int]) -> None:
    """Flat RGB with the picture in alpha is not flat, and two such pictures differ."""
    a = _fp(H.encode(H.alpha_only(17, rgb=rgb), "PNG"))
    b = _fp(H.encode(H.alpha_only(18, rgb=rgb), "PNG"))
    assert a.detail > 2 * SETTINGS.min_detail
    assert b.detail > 2 * SETTINGS.min_detail
    assert hashing.hamming(a.hashes.phash, b.hashes.phash) > SETTINGS.near_distance
    assert compare(b, a, SETTINGS).match is None
    # and the same alpha picture, converted to WebP, is still found
    webp = _fp(H.encode(H.alpha_only(17, rgb=rgb), "WEBP", lossless=True))
    assert compare(webp, a, SETTINGS).match is not None


def test_real_alpha_only_artwork_has_detail() -> None:
    """The real transparent overlays in photos/variants (flat RGB) are not treated as flat."""
    for name in ("MATE-Stripes-Dark.png", "MATE-Stripes-Light.png"):
        path = H.PHOTOS / "variants" / name
        if not path.exists():
            pytest.skip(f"{path} not available")
        _, fp = hashing.fingerprint_file(path)
        assert fp.detail > 2 * SETTINGS.min_detail, name


# --- real photos: the progressive-JPEG fast path -----------------------------------


def test_real_progressive_jpeg_fast_path_matches_a_full_decode(tmp_path: Path) -> None:
    """A large progressive JPEG hashed from its DC scans alone matches a baseline re-encode of the full picture."""
    src = H.PHOTOS / "FreshFlower.jpg"
    if not src.exists():
        pytest.skip(f"{src} not available")
    with Image.open(src) as im:
        assert im.info.get("progressive") and min(im.size) // hashing.DRAFT_SIDE >= 8
        full = im.convert("RGB")
    copy = H.save(full.resize((full.width // 2, full.height // 2), Image.Resampling.LANCZOS), tmp_path / "half.jpg", quality=85)
    _, fast = hashing.fingerprint_file(src)
    _, baseline = hashing.fingerprint_file(copy)
    pixels = (hashing.verification_pixels(copy), hashing.verification_pixels(src))
    verdict = compare(baseline, fast, SETTINGS, pixels)
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR, verdict.reason
    assert verdict.match.distances.phash <= 4
    assert (fast.width, fast.height) == full.size


# --- bad input: each refusal has its own class and reason ------------------------------


def _skipped(path: Path, **kw: object) -> errors.FileSkipped:
    with pytest.raises(errors.FileSkipped) as info:
        hashing.fingerprint_file(path, **kw)  # type: ignore[arg-type]
    assert info.value.path == path
    assert errors.display_path(path) in str(info.value)
    return info.value


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    """A zero-byte file is EmptyFile, reason 'empty'."""
    path = tmp_path / "empty.jpg"
    path.touch()
    exc = _skipped(path)
    assert type(exc) is errors.EmptyFile and exc.reason == "empty"


def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    """Text in a file named .jpg is NotAnImage, reason 'not_an_image'."""
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: eggs, milk\n" * 20)
    exc = _skipped(path)
    assert type(exc) is errors.NotAnImage and exc.reason == "not_an_image"


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_jpeg_is_corrupt(tmp_path: Path, progressive: bool, keep: float) -> None:
    """A JPEG cut short (baseline or progressive, early or late) is CorruptImage, reason 'corrupt'."""
    data = H.encode(H.photo(19, (1100, 1100)), "JPEG", progressive=progressive)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * keep)])
    exc = _skipped(path)
    assert type(exc) is errors.CorruptImage and exc.reason == "corrupt"


@pytest.mark.parametrize(("name", "ok_reasons"), [
    ("cut.png", {"corrupt"}),
    ("cut.gif", {"corrupt"}),
    ("cut.webp", {"corrupt"}),
    ("cut.tif", {"corrupt"}),
    ("cut.bmp", {"corrupt"}),
    ("cut.heic", {"corrupt"}),
    # Pillow's AVIF plugin cannot identify a cut file at all
    ("cut.avif", {"corrupt", "not_an_image"}),
])
def test_truncated_files_of_every_format_are_refused(tmp_path: Path, name: str, ok_reasons: set[str]) -> None:
    """Half of an image file of any format is refused as corrupt, never fingerprinted."""
    data = H.encode(H.photo(20), H.FORMATS[Path(name).suffix])
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    assert _skipped(path).reason in ok_reasons


def test_png_with_damaged_idat_is_corrupt(tmp_path: Path) -> None:
    """A PNG whose compressed picture has flipped bytes is CorruptImage."""
    data = H.encode(H.photo(20), "PNG")
    path = tmp_path / "damaged.png"
    path.write_bytes(H.png_flip_idat_bytes(data))
    with pytest.raises(OSError):  # Pillow itself refuses it
        Image.open(path).load()
    exc = _skipped(path)
    assert type(exc) is errors.CorruptImage


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    """A small valid PNG claiming 20000x20000 pixels is DecompressionBomb, reason 'too_many_pixels'."""
    path = tmp_path / "bomb.png"
    path.write_bytes(H.png_bomb(20_000, 20_000))
    assert path.stat().st_size < 100_000
    exc = _skipped(path)
    assert type(exc) is errors.DecompressionBomb and exc.reason == "too_many_pixels"


def test_configured_pixel_limit_is_enforced(tmp_path: Path) -> None:
    """An ordinary picture over a low max_pixels is DecompressionBomb; at the limit it is read."""
    path = H.save(H.photo(23, (200, 100)), tmp_path / "a.png")
    exc = _skipped(path, max_pixels=19_999)
    assert type(exc) is errors.DecompressionBomb
    assert "20000" in exc.cause
    hashing.fingerprint_file(path, max_pixels=20_000)


def test_configured_byte_limit_is_enforced(tmp_path: Path) -> None:
    """A file larger than max_bytes is refused before it is read into memory."""
    path = H.save(H.photo(23, (200, 100)), tmp_path / "a.png")
    size = path.stat().st_size
    assert type(_skipped(path, max_bytes=size - 1)) is errors.DecompressionBomb
    hashing.fingerprint_file(path, max_bytes=size)


def test_vanished_file(tmp_path: Path) -> None:
    """A path with no file behind it is FileVanished, reason 'vanished'."""
    exc = _skipped(tmp_path / "gone.jpg")
    assert type(exc) is errors.FileVanished and exc.reason == "vanished"


def test_symlink_is_refused(tmp_path: Path) -> None:
    """A symbolic link to a good image is refused, not followed."""
    target = H.save(H.photo(24), tmp_path / "real.png")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    exc = _skipped(link)
    assert type(exc) is errors.NotAnImage
    assert "symbolic link" in exc.cause


def test_directory_named_like_an_image_is_refused(tmp_path: Path) -> None:
    """A directory named x.jpg is refused as not a regular file."""
    path = tmp_path / "x.jpg"
    path.mkdir()
    exc = _skipped(path)
    assert isinstance(exc, (errors.NotAnImage, errors.UnreadableFile))


def test_fifo_named_like_an_image_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO named x.jpg with no writer is refused at once instead of blocking the reader."""
    path = tmp_path / "x.jpg"
    os.mkfifo(path)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            hashing.fingerprint_file(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=attempt, name="fifo-reader")
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # blocked in open(): unblock it so the test fails instead of hanging
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(timeout=10)
        pytest.fail("reading a FIFO blocked")
    assert len(outcome) == 1
    assert isinstance(outcome[0], errors.NotAnImage)
    assert "regular file" in outcome[0].cause  # type: ignore[attr-defined]


def test_unreadable_file_without_dac_override(tmp_path: Path) -> None:
    """A mode-000 file read by a process without CAP_DAC_OVERRIDE is UnreadableFile, reason 'unreadable'."""
    prefix: list[str] = []
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE as root")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    path = H.save(H.photo(25), tmp_path / "locked.png")
    path.chmod(0)
    code = (
        "import sys; from pathlib import Path; from dedupd import hashing, errors\n"
        "try:\n    hashing.fingerprint_file(Path(sys.argv[1]))\n"
        "except errors.FileSkipped as e:\n    print(type(e).__name__, e.reason)\n"
        "else:\n    print('read')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    argv = [*prefix, sys.executable, "-c", code, str(path)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    if proc.returncode != 0 and proc.stderr.startswith("setpriv"):
        pytest.skip(f"cannot drop capabilities here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["UnreadableFile", "unreadable"]


def test_file_growing_while_read_is_detected(tmp_path: Path) -> None:
    """While a writer appends to a file, every read either is consistent or raises FileChangedWhileReading."""
    path = tmp_path / "growing.jpg"
    path.write_bytes(b"\xff\xd8" + os.urandom(4 * 1024 * 1024))
    stop = threading.Event()

    def append() -> None:
        with path.open("ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"\x00" * 4096)

    writer = threading.Thread(target=append, name="appender")
    writer.start()
    changed = 0
    try:
        for _ in range(300):
            try:
                data, st = hashing.read_file(path)
            except errors.FileChangedWhileReading as exc:
                assert exc.reason == "changed_while_reading"
                changed += 1
                if changed >= 3:
                    break
            else:
                assert len(data) == st.size
    finally:
        stop.set()
        writer.join(timeout=10)
    assert changed >= 3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
@pytest.mark.parametrize("bug", [IndexError, ValueError])
def test_a_bug_in_dedupds_own_array_code_is_a_bug_not_a_corrupt_file(
    monkeypatch: pytest.MonkeyPatch, fmt: str, bug: type[Exception]
) -> None:
    """An IndexError or ValueError from dedupd's own numpy code (content_box) propagates as it
    is; the same types from the decoder (the file cut in half) still make the file corrupt."""
    data = H.encode(H.photo(5), fmt)

    def broken(grey: np.ndarray) -> tuple[int, int, int, int]:
        raise bug("a bug in dedupd's own code")

    monkeypatch.setattr(hashing, "content_box", broken)
    with pytest.raises(bug, match="a bug in dedupd's own code"):
        hashing.fingerprint_bytes(data)
    monkeypatch.undo()
    assert hashing.fingerprint_bytes(data).format == fmt
    with pytest.raises(errors.CorruptImage):
        hashing.fingerprint_bytes(data[: len(data) // 2])
