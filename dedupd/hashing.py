"""Fingerprints: bytes or a path in, a :class:`~dedupd.models.Fingerprint` out.

Pure functions: no database, no logging set-up.  Every file is read once,
into memory; the exact hash, the pixel digest and the perceptual hashes are
all computed from that one read.

Tiers and how each is computed:

* exact: SHA-256 of the file's bytes.
* pixel: for JPEG, a digest of the coded picture (quantisation and Huffman
  tables, frame header, scans) with the metadata segments (APP0-APP13,
  APP15, COM) left out, so that editing or stripping EXIF/XMP/IPTC/ICC
  leaves it unchanged without decoding anything.  For PNG likewise, of the
  picture chunks (IHDR, PLTE, tRNS, IDAT) without the text, time, EXIF and
  colour-profile chunks: hashing the compressed data is cheaper than hashing
  the decoded pixels, at the price that a PNG re-compressed at another level
  is a near match (distance 0), not a pixel match.  For every other format
  the picture is decoded in full anyway, and the digest is taken of the
  decoded pixels (and palette), so a lossless conversion between them (TIFF
  to BMP, BMP to lossless WebP) is a pixel match.  The EXIF orientation is part of the digest: a copy
  that displays rotated is not the same picture.
* perceptual: pHash (64-bit DCT hash, the index key) and dHash (64-bit
  gradient hash, an independent verifier) of a 64x64 thumbnail taken after
  the EXIF orientation is applied and transparency is composited, plus a
  4x4 grid of mean colours, which tells a light render from a dark one of
  the same design.  Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale
  (Pillow's draft mode), never in full.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat as stat_module
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

from dedupd import errors
from dedupd.models import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    FileStat,
    Fingerprint,
    Hashes,
    Orientation,
)

try:  # HEIC/HEIF and AVIF
    import pillow_heif

    pillow_heif.register_heif_opener()
    if hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()
except ImportError:  # pragma: no cover - a declared dependency; formats just go missing
    pillow_heif = None  # type: ignore[assignment]

#: the side of the square thumbnail every perceptual hash is computed from
THUMB = 64
#: JPEGs are decoded at the smallest DCT scale that keeps both sides >= this
DRAFT_SIDE = 2 * THUMB
#: the longer side of the pictures the pixel verifier compares (``verify.py``)
VERIFY_SIDE = 512
#: bytes per pixel of each Pillow mode (bands times bit depth)
_MODE_BYTES = {
    "1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
    "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4,
    "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "BGR;15": 2, "BGR;16": 2, "BGR;24": 3,
}  # fmt: skip
#: modes whose thumbnail goes through a float64 copy of the whole picture
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


def decode_cost(mode: str, width: int, height: int) -> int:
    """Peak bytes to decode one frame of this mode and size and fingerprint it.

    The frame itself, one full copy (``tobytes`` for the pixel digest, or a
    mode conversion), and for 16- and 32-bit modes the float64 copy the
    thumbnail is scaled from.
    """
    per_pixel = 2 * _MODE_BYTES.get(mode, 4) + (9 if mode in _WIDE_MODES else 0)
    return width * height * per_pixel

_EXIF_ORIENTATION = 0x0112

#: magic numbers of formats that are images for sure, even when Pillow refuses the rest
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)  # fmt: skip

# EXIF orientation value -> the transpose that displays the stored pixels upright
_ORIENT_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# The seven non-identity orientations, as transposes of the new picture that
# would turn it back into a stored one.
VARIANT_TRANSPOSES: dict[Orientation, Image.Transpose] = {
    Orientation.ROT90: Image.Transpose.ROTATE_90,
    Orientation.ROT180: Image.Transpose.ROTATE_180,
    Orientation.ROT270: Image.Transpose.ROTATE_270,
    Orientation.MIRROR: Image.Transpose.FLIP_LEFT_RIGHT,
    Orientation.MIRROR_ROT90: Image.Transpose.TRANSPOSE,
    Orientation.MIRROR_ROT180: Image.Transpose.FLIP_TOP_BOTTOM,
    Orientation.MIRROR_ROT270: Image.Transpose.TRANSVERSE,
}

# In JPEG entropy-coded data 0xFF is followed by 0x00 (stuffing) or RSTn;
# anything else is the next marker.
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_METADATA = frozenset([*range(0xE0, 0xEE), 0xEF, 0xFE])  # APP0-13, APP15, COM
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RSTn: no length

#: what Pillow's decoders (and the chunk walkers below) raise for truncated or
#: damaged data
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


@contextlib.contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Around a call that reads the file's data (Pillow's open, load, seek, draft,
    a mode conversion; the JPEG and PNG chunk walkers): what it raises for
    damaged data makes the file corrupt.

    Only there: the same exception types raised by dedupd's own array code
    (the thumbnail, the crop keys, the hashes) are bugs, and propagate as
    such instead of skipping the file as "corrupt".
    """
    try:
        yield
    except (errors.FileSkipped, UnidentifiedImageError, Image.DecompressionBombError):
        raise  # said precisely already (UnidentifiedImageError is an OSError)
    except _DECODER_ERRORS as exc:
        raise errors.CorruptImage(path, f"{type(exc).__name__}: {exc}") from exc


# --- reading -----------------------------------------------------------------


def read_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, FileStat]:
    """Read a whole regular file, refusing symlinks, and detect a concurrent write.

    Returns the bytes and the stat of the version that was read.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise errors.FileVanished(path, "no such file") from exc
    except PermissionError as exc:
        raise errors.UnreadableFile(path, "permission denied") from exc
    except OSError as exc:
        if exc.errno == getattr(os, "ELOOP", None) or os.path.islink(path):
            raise errors.NotAnImage(path, "a symbolic link, not a file") from exc
        raise errors.UnreadableFile(path, exc.strerror or str(exc)) from exc
    try:
        before = os.fstat(fd)
        if not stat_module.S_ISREG(before.st_mode):
            raise errors.NotAnImage(path, "not a regular file")
        if before.st_size == 0:
            raise errors.EmptyFile(path, "zero bytes")
        if before.st_size > max_bytes:
            raise errors.DecompressionBomb(
                path, f"{before.st_size} bytes is more than the limit of {max_bytes}"
            )
        chunks = []
        remaining = before.st_size + 1  # one more byte tells us it grew
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 8 * 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        after = os.fstat(fd)
    except OSError as exc:
        raise errors.UnreadableFile(path, exc.strerror or str(exc)) from exc
    finally:
        os.close(fd)
    if (
        len(data) != before.st_size
        or after.st_size != before.st_size
        or after.st_mtime_ns != before.st_mtime_ns
        or after.st_ctime_ns != before.st_ctime_ns  # rewritten in place, mtime put back
    ):
        raise errors.FileChangedWhileReading(
            path, f"size {before.st_size} -> {after.st_size} while reading {len(data)} bytes"
        )
    return data, FileStat.of(before)


def fingerprint_file(
    path: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    variants: bool = True,
) -> tuple[FileStat, Fingerprint]:
    """Read ``path`` once and fingerprint it."""
    data, st = read_file(path, max_bytes=max_bytes)
    return st, fingerprint_bytes(
        data, path=path, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes, variants=variants
    )


# --- fingerprinting ----------------------------------------------------------


def fingerprint_bytes(
    data: bytes,
    *,
    path: Path = Path("<bytes>"),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    variants: bool = True,
) -> Fingerprint:
    """Fingerprint an image file's bytes; ``path`` only names it in errors."""
    if not data:
        raise errors.EmptyFile(path, "zero bytes")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            # dedupd enforces its own limit, below, with a clear error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _decoding(path):
                im = Image.open(io.BytesIO(data))
            return _fingerprint_image(im, data, sha256, path, max_pixels, max_decode_bytes, variants)
    except errors.FileSkipped as exc:
        if exc.path != path and str(exc.path).startswith("<"):
            raise type(exc)(path, exc.cause) from exc
        raise
    except Image.DecompressionBombError as exc:
        raise errors.DecompressionBomb(path, str(exc)) from exc
    except UnidentifiedImageError as exc:
        known = next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)
        if known is not None:  # a known format Pillow refused to open: a 0x0 PNG, a broken header
            raise errors.CorruptImage(path, f"a {known} file whose header Pillow cannot read") from exc
        raise errors.NotAnImage(path, "unknown or unsupported image format") from exc


def _fingerprint_image(
    im: Image.Image,
    data: bytes,
    sha256: str,
    path: Path,
    max_pixels: int,
    max_decode_bytes: int,
    variants: bool,
) -> Fingerprint:
    fmt = im.format or "UNKNOWN"
    width, height = im.size
    if width <= 0 or height <= 0:
        raise errors.CorruptImage(path, f"impossible size {width}x{height}")
    if width * height > max_pixels:
        raise errors.DecompressionBomb(
            path, f"{width}x{height} = {width * height} pixels, limit {max_pixels}"
        )
    if fmt == "JPEG":
        orientation = _orientation(im)
        with _decoding(path):
            digest, dc_end = _jpeg_picture_digest(data, orientation)
            pixel_digest = "jpeg:" + digest
            scale = min(width // DRAFT_SIDE, height // DRAFT_SIDE)
            if dc_end is not None and scale >= 8:
                # A progressive JPEG decoded at 1/8 scale needs only the DC
                # coefficients, which its first scans carry: decode just those.
                im = Image.open(io.BytesIO(data[:dc_end] + b"\xff\xd9"))
            im.draft("RGB" if im.mode not in ("L", "CMYK") else im.mode, (DRAFT_SIDE, DRAFT_SIDE))
            im.load()
    else:
        # Decode first: a damaged picture must fail here, not be half-read by
        # getexif(); and some plugins (TIFF) apply the orientation while loading
        # and drop the tag, which must then not be applied a second time.
        cost = decode_cost(im.mode, width, height)
        if cost > max_decode_bytes:
            raise errors.DecodeBudgetExceeded(
                path, f"{width}x{height} {im.mode} needs about {cost} bytes to decode, budget {max_decode_bytes}"
            )
        if fmt == "PNG":  # the digest of the coded chunks covers every frame of an APNG
            with _decoding(path):
                im.load()
            orientation = _orientation(im)
            with _decoding(path):
                pixel_digest = "png:" + _png_picture_digest(data, orientation)
        else:
            # every frame and page: two files that share a first page are not the same picture
            with _decoding(path):
                pixel_digest = "pixels:" + _frames_digest(im, path, max_pixels, max_decode_bytes)
            orientation = _orientation(im)
        width, height = im.size

    shown = _displayable(im, path)
    thumb = _thumbnail(shown)
    keys = _crop_keys(shown, orientation)
    if orientation in _ORIENT_TRANSPOSE:
        thumb = thumb.transpose(_ORIENT_TRANSPOSE[orientation])
        if orientation >= 5:
            width, height = height, width

    grey = thumb.convert("L")
    detail = float(np.asarray(grey, dtype=np.float32).std())
    hashes, extra = _perceptual(thumb, grey, variants)
    return Fingerprint(
        sha256=sha256,
        pixel_digest=pixel_digest,
        hashes=hashes,
        width=width,
        height=height,
        format=fmt,
        detail=round(detail, 3),
        variants=extra,
        crop_keys=keys,
    )


#: windows (left, top, right, bottom as fractions of the frame) whose pHashes
#: are indexed beside the whole picture's, so that a copy cropped to one of
#: them (or near it: the hash tolerates a few percent) is proposed to the
#: verifier: 5% and 10% off every side, 15% off one side
CROP_WINDOWS: tuple[tuple[float, float, float, float], ...] = (
    (0.05, 0.05, 0.95, 0.95),
    (0.10, 0.10, 0.90, 0.90),
    (0.15, 0.0, 1.0, 1.0),
    (0.0, 0.0, 0.85, 1.0),
    (0.0, 0.15, 1.0, 1.0),
    (0.0, 0.0, 1.0, 0.85),
)
#: centre crops to these shapes (long:short, in the picture's own orientation)
CROP_ASPECTS = ((4, 3), (16, 9), (1, 1))
#: the side of the reduced picture crop keys are cut from
_CROP_SOURCE_SIDE = 2 * THUMB


def _crop_keys(im: Image.Image, orientation: int) -> tuple[int, ...]:
    """pHashes of the content box (uniform borders trimmed), of the
    :data:`CROP_WINDOWS` and of centre crops to :data:`CROP_ASPECTS`, each
    computed like the whole picture's pHash (DCT of a 32x32 grey thumbnail,
    bits above the median), from a copy reduced to 128 px.

    A cropped copy's pHash is near one of its source's keys; a padded or
    bordered copy's content-box key is near its source's pHash.  Windows
    too flat to tell pictures apart are left out.
    """
    small = _displayable(im)
    factor = min(small.size) // _CROP_SOURCE_SIDE
    if factor > 1:  # a box filter first: cheap on a large PNG or TIFF, and a new image
        small = small.reduce(factor)
    scale = _CROP_SOURCE_SIDE / max(small.size)
    if scale < 1.0:
        size = (max(1, round(small.width * scale)), max(1, round(small.height * scale)))
        small = small.resize(size, Image.Resampling.BILINEAR)
    small = _composite(small) if small.mode == "RGBA" else small.convert("RGB")
    if orientation in _ORIENT_TRANSPOSE:
        small = small.transpose(_ORIENT_TRANSPOSE[orientation])
    w, h = small.size
    if min(w, h) < 16:
        return ()
    boxes: list[tuple[int, int, int, int]] = []
    x0, y0, x1, y1 = content_box(np.asarray(small.convert("L")))
    if (x1 - x0) * (y1 - y0) < 0.98 * w * h:
        boxes.append((x0, y0, x1, y1))
    for left, top, right, bottom in CROP_WINDOWS:
        boxes.append((round(w * left), round(h * top), round(w * right), round(h * bottom)))
    for long_side, short_side in CROP_ASPECTS:
        target = long_side / short_side if w >= h else short_side / long_side
        if abs(w / h - target) / target < 0.05:
            continue
        cw, ch = (round(h * target), h) if w / h > target else (w, round(w / target))
        boxes.append(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    grey = np.asarray(small.convert("L"), dtype=np.float32)
    windows = np.stack(
        [cv2.resize(grey[y0:y1, x0:x1], (32, 32), interpolation=cv2.INTER_AREA) for x0, y0, x1, y1 in boxes]
    )
    detailed = windows.std(axis=(1, 2)) >= 6.0  # a flat window would match any other flat one
    blocks = _dct(_dct(windows[detailed], axis=1), axis=2)[:, :8, :8].reshape(-1, 64)
    bits = (blocks > np.median(blocks, axis=1, keepdims=True)).astype(np.uint8)
    keys = [int.from_bytes(np.packbits(row).tobytes(), "big") for row in bits]
    return tuple(dict.fromkeys(keys))


def content_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a grey picture after trimming rows and columns of
    one uniform border colour (a pad, a frame, a letterbox); the whole frame
    when the picture is mostly flat."""
    h, w = grey.shape
    edge = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]]).astype(np.float32)
    colour = float(np.median(edge))
    flat = np.abs(grey.astype(np.float32) - colour) <= 6.0
    rows = np.flatnonzero(flat.mean(axis=1) < 0.98)
    cols = np.flatnonzero(flat.mean(axis=0) < 0.98)
    if rows.size == 0 or cols.size == 0:
        return 0, 0, w, h
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    if (x1 - x0) < w * 0.5 or (y1 - y0) < h * 0.5:
        return 0, 0, w, h
    return x0, y0, x1, y1


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        return 1  # unreadable EXIF: display as stored
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _thumbnail(im: Image.Image) -> Image.Image:
    """A THUMB x THUMB RGB thumbnail (aspect ratio ignored), alpha composited."""
    im = _displayable(im)
    small = im.resize((THUMB, THUMB), Image.Resampling.LANCZOS, reducing_gap=2.0)
    if small.mode == "RGBA":
        return _composite(small)
    return small.convert("RGB")


def verification_pixels(
    path: Path,
    *,
    expected: FileStat | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    side: int = VERIFY_SIDE,
) -> np.ndarray:
    """Re-read ``path`` and return it as the verifier compares it: RGB, as
    displayed (EXIF orientation applied, transparency composited as for the
    hashes), the longer side at most ``side`` (the verifier's working size,
    :data:`VERIFY_SIDE`, unless it asks for a closer look).

    ``expected``: the version that was fingerprinted; a file that changed
    since (size, modification time, inode) raises
    :class:`~dedupd.errors.FileChangedWhileReading`, since the pixels would
    not be those the hashes describe.
    """
    data, st = read_file(path, max_bytes=max_bytes)
    if expected is not None and st != expected:
        raise errors.FileChangedWhileReading(path, "not the version that was fingerprinted")
    return verification_pixels_of(data, path=path, max_pixels=max_pixels, side=side)


def verification_pixels_of(
    data: bytes, *, path: Path = Path("<bytes>"), max_pixels: int = DEFAULT_MAX_PIXELS, side: int = VERIFY_SIDE
) -> np.ndarray:
    """:func:`verification_pixels` of a file's bytes; ``path`` only names it in errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _decoding(path):
                im = Image.open(io.BytesIO(data))
            if im.size[0] * im.size[1] > max_pixels:
                raise errors.DecompressionBomb(path, f"{im.size[0]}x{im.size[1]} pixels")
            if im.format == "JPEG":
                orientation = _orientation(im)
                with _decoding(path):
                    im.draft("RGB" if im.mode not in ("L", "CMYK") else im.mode, (side, side))
                    im.load()
            else:
                with _decoding(path):
                    im.load()
                orientation = _orientation(im)
            shown = _displayable(im, path)
            w, h = shown.size
            scale = side / max(w, h)
            if scale < 1.0:
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                shown = shown.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
            shown = _composite(shown) if shown.mode == "RGBA" else shown.convert("RGB")
            if orientation in _ORIENT_TRANSPOSE:
                shown = shown.transpose(_ORIENT_TRANSPOSE[orientation])
            return np.asarray(shown, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise errors.DecompressionBomb(path, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise errors.NotAnImage(path, "unknown or unsupported image format") from exc


def _displayable(im: Image.Image, path: Path = Path("<image>")) -> Image.Image:
    """``im`` in RGB, RGBA or L: 16-bit and float greys scaled to 8 bits, palettes expanded.

    Pillow's part (the conversion out of the file's own mode) is a decoder
    call; the scaling is dedupd's own code.
    """
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        with _decoding(path):
            arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L")
    with _decoding(path):
        if mode in ("P", "PA", "LA"):
            return im.convert("RGBA")
        if mode not in ("RGB", "RGBA", "L"):
            return im.convert("RGB")
    return im


def _composite(rgba: Image.Image) -> Image.Image:
    """Flatten transparency onto a background that contrasts with the picture.

    Compositing onto a fixed colour would turn an image whose picture lives
    only in its alpha channel (white shapes on transparency, say) into a flat
    field of that colour; a background opposite to the picture's own mean
    brightness keeps the shapes visible.
    """
    arr = np.asarray(rgba, dtype=np.float32)
    alpha = arr[..., 3:4] / 255.0
    if float(alpha.min()) >= 1.0:
        return rgba.convert("RGB")
    rgb = arr[..., :3]
    weight = float(alpha.sum())
    luma = (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    mean = float((luma * alpha).sum() / weight) if weight > 0 else 0.0
    background = 0.0 if mean >= 128.0 else 255.0
    out = rgb * alpha + background * (1.0 - alpha)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")


def _perceptual(
    thumb: Image.Image, grey: Image.Image, variants: bool
) -> tuple[Hashes, tuple[tuple[Orientation, Hashes], ...]]:
    """The hashes of the thumbnail, and of its seven other orientations.

    The pHash is ``imagehash.phash``'s algorithm (a test holds them equal), with
    the DCT computed here once: rotating or mirroring a picture only transposes
    its DCT coefficients or flips the sign of the odd ones, so the other seven
    orientations cost a few operations on an 8x8 block instead of seven DCTs.
    """
    small = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    block = _dct(_dct(small, axis=0), axis=1)[:8, :8]
    ycc = np.asarray(thumb.convert("YCbCr"), dtype=np.float32)
    grid = ycc.reshape(4, THUMB // 4, 4, THUMB // 4, 3).mean(axis=(1, 3))
    base = _hashes_of(block, grid, grey)
    if not variants:
        return base, ()
    extra = tuple(
        (name, _hashes_of(_dct_transpose(block, t), _grid_transpose(grid, t), grey.transpose(t)))
        for name, t in VARIANT_TRANSPOSES.items()
    )
    return base, extra



def _dct(values: np.ndarray, axis: int) -> np.ndarray:
    """scipy's DCT-II along ``axis``, unnormalised, as ``imagehash.phash`` computes it."""
    import scipy.fftpack  # noqa: PLC0415 - see load_dct

    out: np.ndarray = scipy.fftpack.dct(values, axis=axis)
    return out


def load_dct() -> None:
    """Import scipy's FFT package, which the perceptual hashes need.

    It is imported on the first hash rather than with this module: it costs
    about 0.4 s of CPU (docs/benchmarks.md, "Start-up of a dedupd process"),
    which a process that imports this module only for its constants and the
    verifier's pixels (the CLI, the daemon's main process, whose workers
    hash) should not pay.  A worker calls this before it measures the memory
    it holds once started (``dedupd.worker.worker_init``).
    """
    import scipy.fftpack  # noqa: PLC0415, F401 - about 0.4 s of CPU; only a process that hashes needs it


_ODD = np.array([(-1) ** k for k in range(8)], dtype=np.float64)


def _dct_transpose(block: np.ndarray, t: Image.Transpose) -> np.ndarray:
    """The 8x8 DCT block of the picture transposed by ``t``.

    Flipping left-right negates the odd horizontal frequencies, flipping top-bottom
    the odd vertical ones; a transpose swaps the axes.
    """
    T = Image.Transpose
    lr = block * _ODD[None, :]
    tb = block * _ODD[:, None]
    both = block * _ODD[:, None] * _ODD[None, :]
    return {
        T.FLIP_LEFT_RIGHT: lr,
        T.FLIP_TOP_BOTTOM: tb,
        T.ROTATE_180: both,
        T.TRANSPOSE: block.T,
        T.ROTATE_90: lr.T,  # counter-clockwise: mirror, then transpose
        T.ROTATE_270: tb.T,
        T.TRANSVERSE: both.T,
    }[t]


def _grid_transpose(grid: np.ndarray, t: Image.Transpose) -> np.ndarray:
    T = Image.Transpose
    return {
        T.FLIP_LEFT_RIGHT: grid[:, ::-1],
        T.FLIP_TOP_BOTTOM: grid[::-1, :],
        T.ROTATE_180: grid[::-1, ::-1],
        T.TRANSPOSE: grid.transpose(1, 0, 2),
        T.ROTATE_90: np.rot90(grid, 1),
        T.ROTATE_270: np.rot90(grid, -1),
        T.TRANSVERSE: np.rot90(grid, 2).transpose(1, 0, 2),
    }[t]


def _hashes_of(block: np.ndarray, grid: np.ndarray, grey: Image.Image) -> Hashes:
    bits = (block > np.median(block)).astype(np.uint8).ravel()
    return Hashes(
        phash=int.from_bytes(np.packbits(bits).tobytes(), "big"),
        dhash=_to_int(imagehash.dhash(grey)),
        colour=np.clip(grid + 0.5, 0, 255).astype(np.uint8).tobytes(),
    )


def _to_int(h: imagehash.ImageHash) -> int:
    bits = np.asarray(h.hash, dtype=np.uint8).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _digest_frame(digest: "hashlib.blake2b", im: Image.Image, orientation: int) -> None:
    digest.update(f"{im.mode}:{im.size[0]}x{im.size[1]}:{orientation}:".encode())
    if im.mode in ("P", "PA"):  # the indices mean nothing without their colours
        digest.update(bytes(im.getpalette() or []))
        digest.update(repr(im.info.get("transparency")).encode())
    digest.update(im.tobytes())


def _frames_digest(im: Image.Image, path: Path, max_pixels: int, max_decode_bytes: int) -> str:
    """Digest of the decoded pixels of every frame (or page), the first one left loaded.

    A single-frame picture has the digest it always had.  Each later frame
    is decoded alone and held to the same pixel and memory limits; a frame
    that cannot be decoded (a file cut short, still being written) makes
    the whole file corrupt rather than "the same as its first frame".
    """
    im.load()
    frames = int(getattr(im, "n_frames", 1) or 1)
    digest = hashlib.blake2b(digest_size=20)
    _digest_frame(digest, im, _orientation(im))
    if frames > 1:
        digest.update(f"frames:{frames}:".encode())
        for index in range(1, frames):
            im.seek(index)
            w, h = im.size
            if w * h > max_pixels or decode_cost(im.mode, w, h) > max_decode_bytes:
                raise errors.DecodeBudgetExceeded(path, f"frame {index}: {w}x{h} {im.mode} is over the limits")
            im.load()
            _digest_frame(digest, im, 0)
        im.seek(0)
        im.load()
    return digest.hexdigest()


def _jpeg_picture_digest(data: bytes, orientation: int) -> tuple[str, int | None]:
    """Digest of a JPEG's coded picture, metadata segments left out.

    Also returns, for a progressive JPEG, the offset where its first AC scan
    starts (everything before it is enough to decode the picture at 1/8 scale),
    or None.
    """
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"orientation:{orientation}:".encode())
    pos = 2  # after SOI
    end = len(data)
    dc_end: int | None = None
    progressive = False
    complete = False
    while pos + 2 <= end:
        if data[pos] != 0xFF:
            raise errors.CorruptImage(Path("<jpeg>"), f"no JPEG marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI: anything after it is not the picture
            complete = True
            break
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment_end = pos + 2 + length
        if length < 2 or segment_end > end:
            break
        if marker == 0xC2:
            progressive = True
        if marker == 0xDA and progressive and dc_end is None:
            components = data[pos + 4]
            spectral_start = data[pos + 5 + 2 * components]
            if spectral_start > 0:
                dc_end = pos
        if marker not in _JPEG_METADATA:
            digest.update(data[pos:segment_end])
        pos = segment_end
        if marker == 0xDA:  # SOS: entropy-coded data runs to the next marker
            found = _JPEG_NEXT_MARKER.search(data, pos)
            scan_end = found.start() if found else end
            digest.update(data[pos:scan_end])
            pos = scan_end
    if not complete:
        # A file cut short (an upload still arriving, a failed copy) must not
        # be fingerprinted: its first scans alone would decode to the picture.
        raise errors.CorruptImage(Path("<jpeg>"), "truncated: no end-of-image marker")
    return digest.hexdigest(), dc_end


# PNG chunks that make up the picture; the rest (text, time, EXIF, ICC, gamma,
# physical size) is metadata.
_PNG_PICTURE_CHUNKS = frozenset([b"IHDR", b"PLTE", b"IDAT", b"tRNS", b"acTL", b"fcTL", b"fdAT"])


def _png_picture_digest(data: bytes, orientation: int) -> str:
    """Digest of a PNG's picture chunks, metadata chunks left out."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"orientation:{orientation}:".encode())
    view = memoryview(data)
    pos = 8  # after the signature
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = bytes(data[pos + 4 : pos + 8])
        if kind in _PNG_PICTURE_CHUNKS:
            digest.update(view[pos + 4 : pos + 8 + length])
        if kind == b"IEND":
            return digest.hexdigest()
        pos += 12 + length
    raise errors.CorruptImage(Path("<png>"), "truncated: no IEND chunk")


# --- comparing ---------------------------------------------------------------


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def colour_distance(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two colour grids, 0..255."""
    x = np.frombuffer(a, dtype=np.uint8).astype(np.int16)
    y = np.frombuffer(b, dtype=np.uint8).astype(np.int16)
    return float(np.abs(x - y).mean())
