"""Named image transforms that make the evaluation dataset of the accuracy benchmark.

Every transform has a name, a category and a description, and is one of two kinds:

* a *pixel* transform: a function ``(Image) -> Image`` plus the encoding the result is
  written with (``encoding=None`` means "the source's own kind of file": JPEG stays
  JPEG, PNG stays PNG);
* a *metadata* transform: a function ``(file bytes, format) -> file bytes`` that edits
  the metadata segments of a JPEG or the chunks of a PNG and copies the coded image
  data through byte for byte, so the decoded pixels are those of the source.

Only Pillow and numpy are used (pillow-heif as an optional HEIC codec); nothing here
imports ``dedupd``, so the dataset can be built before the package is ready.

Pixel transforms never modify the image they are given.  Colour transforms act on the
colour channels only and keep an alpha channel as it is; spatial ones (resize, rotate,
crop, blur) move the alpha channel with the colour.  Alpha is kept wherever the target
format can hold it; where it cannot (JPEG, BMP, GIF) the picture is flattened onto
white or black, whichever contrasts with its colour (see ``flatten_alpha``), so that
the overlays in ``variants/``, whose RGB is flat and whose picture is all alpha, keep
their picture.
"""

from __future__ import annotations

import enum
import io
import math
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from PIL import (
    Image,
    ImageDraw,
    ImageEnhance,
    ImageFilter,
    ImageFont,
    ImageOps,
    UnidentifiedImageError,
    features,
)
from PIL.ExifTags import GPS, IFD, Base

PixelOp = Callable[[Image.Image], Image.Image]
MetadataOp = Callable[[bytes, str], bytes]


class Category(enum.StrEnum):
    """A family of transforms; the benchmark reports recall per category."""

    REENCODE = "reencode"
    RESIZE = "resize"
    FORMAT = "format"
    PHOTOMETRIC_MILD = "photometric_mild"
    METADATA = "metadata"
    EXIF_ROTATED = "exif_rotated"
    GEOMETRIC = "geometric"
    CROP = "crop"
    OVERLAY = "overlay"
    STRONG = "strong"

    @property
    def scored(self) -> bool:
        """Whether a copy in this category is a duplicate that a detector must find.

        Strong edits (grayscale, invert, heavy crop...) are reported for information
        only: finding them is neither a hit nor a false positive.
        """
        return self is not Category.STRONG


class NotApplicableError(Exception):
    """The transform does not apply to this source (the detail says why)."""


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a picture is written: Pillow format name, file extension and save options."""

    format: str
    ext: str
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    alpha: bool = False  # can hold an 8-bit alpha channel (as Pillow writes the format)
    icc: bool = False  # can embed an ICC profile


@dataclass(frozen=True, slots=True)
class Encoded:
    """The bytes of an encoded picture and what the encoding had to change."""

    data: bytes
    notes: tuple[str, ...] = ()


def _identity(img: Image.Image) -> Image.Image:
    return img.copy()


@dataclass(frozen=True, slots=True)
class Transform:
    """One named way of deriving a copy from a source picture."""

    name: str
    category: Category
    description: str
    apply: PixelOp = _identity
    encoding: Encoding | None = None  # None: the source's own kind of file (``encoding_for``)
    orientation: int | None = None  # EXIF Orientation tag to write with the pixels
    rewrite: MetadataOp | None = None  # set for metadata transforms: pixels are untouched

    def encoding_for(self, source_format: str) -> Encoding:
        """The encoding of this transform's copy of a source in ``source_format``."""
        if self.encoding is not None:
            return self.encoding
        if self.orientation is not None:
            # Meant to display exactly like the source: as little loss as a re-encode
            # allows (Pillow cannot rotate JPEG data losslessly).
            return working_copy_encoding(source_format)
        return encoding_like(source_format)


# --- encodings -------------------------------------------------------------------------


def _jpeg(**options: object) -> Encoding:
    return Encoding("JPEG", "jpg", MappingProxyType(options), icc=True)


# compress_level=1: PNG is lossless at any level, and level 6 is three to four times
# slower, which is most of the run time for the PNG sources.
PNG = Encoding("PNG", "png", MappingProxyType({"compress_level": 1}), alpha=True, icc=True)
# Copies of a JPEG source that went through an editor: a typical "save as JPEG" quality.
JPEG_EDITED = _jpeg(quality=90)
# The downscaled working copy of a large JPEG source: as little loss as practical,
# since every other copy of that source is made from it.
JPEG_WORKING_COPY = _jpeg(quality=95, subsampling="4:4:4")


def encoding_like(source_format: str) -> Encoding:
    """The encoding for a copy that stays the source's kind of file."""
    return JPEG_EDITED if source_format == "JPEG" else PNG


def working_copy_encoding(source_format: str) -> Encoding:
    """The encoding of the downscaled working copy of a large source."""
    return JPEG_WORKING_COPY if source_format == "JPEG" else PNG


def flatten_alpha(img: Image.Image) -> tuple[Image.Image, str]:
    """Composite a picture with alpha onto an opaque background; return it and the colour.

    The background is white for a dark picture and black for a light one (judged by
    the alpha-weighted mean luma).  A fixed white background would turn
    ``MATE-Stripes-Light`` (white RGB, picture in alpha) into a blank white page, and
    black would blank ``MATE-Stripes-Dark``; the contrasting one keeps the picture.
    For an opaque picture the choice makes no difference.
    """
    rgba = img.convert("RGBA")
    # A quarter-size sample is plenty for a mean.
    sample = np.asarray(rgba.reduce(4) if min(rgba.size) >= 64 else rgba, dtype=np.float64)
    alpha = sample[..., 3] / 255.0
    luma = sample[..., :3] @ np.array([0.299, 0.587, 0.114])
    weight = float(alpha.sum())
    mean_luma = float((luma * alpha).sum() / weight) if weight > 0 else 0.0
    dark = mean_luma < 128  # the middle of 0..255
    name, colour = ("white", (255, 255, 255, 255)) if dark else ("black", (0, 0, 0, 255))
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, colour), rgba).convert("RGB")
    return (flat.convert("L") if img.mode == "LA" else flat), name


def encode(
    img: Image.Image,
    encoding: Encoding,
    *,
    icc_profile: bytes | None = None,
    orientation: int | None = None,
    metadata: Mapping[str, object] | None = None,
) -> Encoded:
    """Encode a picture; flatten alpha and drop the ICC profile where the format needs it.

    ``metadata``: extra save options such as ``exif`` or ``comment``, passed through.
    """
    notes: list[str] = []
    if img.mode in ("RGBA", "LA") and not encoding.alpha:
        img, background = flatten_alpha(img)
        notes.append(f"alpha flattened onto {background}")
    if encoding.format == "GIF":
        # An adaptive 256-colour palette (fast octree: a tenth of median cut's time,
        # similar error), no dithering.
        img = img.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
        notes.append("quantised to 256 colours")
    elif encoding.format == "WEBP" and img.mode == "LA":
        img = img.convert("RGBA")  # WebP has no grey mode; Pillow would do this anyway
    # Nested option mappings (pillow-heif's enc_params) as plain dicts: encoders may
    # add to them.
    options = {k: dict(v) if isinstance(v, Mapping) else v for k, v in encoding.options.items()}
    # An RGB profile only makes sense on RGB pixels (not on a grayscale copy).
    if icc_profile and encoding.icc and img.mode in ("RGB", "RGBA"):
        options["icc_profile"] = icc_profile
    options.update(metadata or {})
    if orientation is not None:
        exif = Image.Exif()
        exif[Base.Orientation] = orientation
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    img.save(buffer, encoding.format, **options)
    return Encoded(buffer.getvalue(), tuple(notes))


# --- optional codecs -------------------------------------------------------------------


def register_optional_codecs() -> None:
    """Register pillow-heif's HEIC opener (and its AVIF opener, in versions that have one).

    Called once per process, including the worker processes of the dataset builder.
    Pillow >= 11.3 reads and writes AVIF itself; pillow-heif dropped its AVIF plugin
    in 0.22, so ``register_avif_opener`` is only used when Pillow lacks AVIF.
    """
    try:
        import pillow_heif  # an optional dependency, imported on demand
    except ImportError:
        return
    pillow_heif.register_heif_opener()
    register_avif = getattr(pillow_heif, "register_avif_opener", None)
    if register_avif is not None and not features.check("avif"):
        register_avif()


def probe_codec(encoding: Encoding) -> str | None:
    """Why this encoding cannot be written and read back here, or None if it can."""
    sample = Image.linear_gradient("L").resize((32, 32)).convert("RGB")
    try:
        data = encode(sample, encoding).data
        with Image.open(io.BytesIO(data)) as decoded:
            decoded.load()
    except (OSError, ValueError, KeyError, UnidentifiedImageError) as error:
        # KeyError: Pillow has no save handler for the format at all.
        return f"cannot write {encoding.format} here ({type(error).__name__}: {error})"
    return None


# --- pixel operations ------------------------------------------------------------------


def _on_colour(op: PixelOp) -> PixelOp:
    """Apply a colour operation to the RGB channels only and keep the alpha channel."""

    def wrapped(img: Image.Image) -> Image.Image:
        if img.mode != "RGBA":
            return op(img)
        result = op(img.convert("RGB")).convert("RGB")
        result.putalpha(img.getchannel("A"))
        return result

    return wrapped


def _scale(factor: float, resample: Image.Resampling) -> PixelOp:
    def op(img: Image.Image) -> Image.Image:
        size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
        return img.resize(size, resample)

    return op


def _thumbnail(max_side: int) -> PixelOp:
    def op(img: Image.Image) -> Image.Image:
        if max(img.size) <= max_side:
            raise NotApplicableError(f"already within {max_side} px")
        thumb = img.copy()
        thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return thumb

    return op


_Enhancer = type[ImageEnhance.Brightness | ImageEnhance.Contrast | ImageEnhance.Color]


def _enhance(kind: _Enhancer, factor: float) -> PixelOp:
    return _on_colour(lambda img: kind(img).enhance(factor))


def _gamma(exponent: float) -> PixelOp:
    """Map every colour channel through out = 255 * (in / 255) ** exponent."""
    table = [round(255 * (i / 255) ** exponent) for i in range(256)]
    return _on_colour(lambda img: img.point(table * len(img.getbands())))


def _colour_matrix(matrix: tuple[float, ...]) -> PixelOp:
    """Multiply every RGB pixel by a 3x3 matrix (given row by row), clipping to 0..255."""
    m = matrix
    affine = (m[0], m[1], m[2], 0.0, m[3], m[4], m[5], 0.0, m[6], m[7], m[8], 0.0)
    return _on_colour(lambda img: img.convert("RGB", affine))


def _hue_rotate(degrees: float) -> PixelOp:
    """The luminance-preserving hue rotation of the W3C Filter Effects spec (feColorMatrix).

    A linear RGB matrix, so it needs no round trip through 8-bit HSV (which would
    quantise saturation and value even for a small shift).
    """
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return _colour_matrix(
        (
            0.213 + c * 0.787 - s * 0.213,
            0.715 - c * 0.715 - s * 0.715,
            0.072 - c * 0.072 + s * 0.928,
            0.213 - c * 0.213 + s * 0.143,
            0.715 + c * 0.285 + s * 0.140,
            0.072 - c * 0.072 - s * 0.283,
            0.213 - c * 0.213 - s * 0.787,
            0.715 - c * 0.715 + s * 0.715,
            0.072 + c * 0.928 + s * 0.072,
        )
    )


# The usual sepia-tone matrix (as in the W3C Filter Effects spec at amount 1).
_sepia = _colour_matrix((0.393, 0.769, 0.189, 0.349, 0.686, 0.168, 0.272, 0.534, 0.131))


def _filter(image_filter: ImageFilter.Filter) -> PixelOp:
    # Spatial filters act on alpha too, as an image editor's blur does.
    return lambda img: img.filter(image_filter)


def _gaussian_noise(sigma: float) -> PixelOp:
    def op(img: Image.Image) -> Image.Image:
        # Seeded by the picture itself: the same input always gets the same noise,
        # and different sources get different noise.
        rng = np.random.default_rng(zlib.crc32(img.resize((16, 16)).tobytes()))
        pixels = np.asarray(img)
        noisy = rng.standard_normal(pixels.shape, dtype=np.float32)
        noisy *= sigma
        noisy += pixels
        np.rint(noisy, out=noisy)
        np.clip(noisy, 0, 255, out=noisy)
        return Image.fromarray(noisy.astype(np.uint8), img.mode)

    return _on_colour(op)


def _transpose(method: Image.Transpose) -> PixelOp:
    return lambda img: img.transpose(method)


def _crop_fractions(left: float, top: float, right: float, bottom: float) -> PixelOp:
    """Cut the given fractions of the width/height off each side."""

    def op(img: Image.Image) -> Image.Image:
        w, h = img.size
        box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
        return img.crop(box)

    return op


def _crop_to_aspect(long_side: int, short_side: int) -> PixelOp:
    """Centre crop to an aspect ratio, in the picture's own orientation (4:3 or 3:4)."""

    def op(img: Image.Image) -> Image.Image:
        w, h = img.size
        target = long_side / short_side if w >= h else short_side / long_side
        if abs(w / h - target) / target < 0.01:  # within 1%
            raise NotApplicableError(f"already {long_side}:{short_side}")
        if w / h > target:  # too wide: cut the sides
            new_w, new_h = round(h * target), h
        else:  # too tall: cut top and bottom
            new_w, new_h = w, round(w / target)
        x, y = (w - new_w) // 2, (h - new_h) // 2
        return img.crop((x, y, x + new_w, y + new_h))

    return op


def _black(mode: str) -> float | tuple[int, ...]:
    """Opaque black in a picture's mode (palette index 0 for a palette picture)."""
    return {"RGB": (0, 0, 0), "RGBA": (0, 0, 0, 255), "LA": (0, 255)}.get(mode, 0)


def _pad(pixels: int) -> PixelOp:
    """A black pad of ``pixels`` on every side (letterboxing by a fixed amount)."""
    return lambda img: ImageOps.expand(img, border=pixels, fill=_black(img.mode))


def _rotate_small(degrees: float) -> PixelOp:
    """Rotate by a few degrees about the centre, same size, black corners (a straightened horizon)."""
    return lambda img: img.rotate(
        degrees, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=_black(img.mode)
    )


def _composite(img: Image.Image, layer: Image.Image) -> Image.Image:
    """Draw an RGBA layer over a picture, keeping the picture's mode."""
    return Image.alpha_composite(img.convert("RGBA"), layer).convert(img.mode)


def _text_watermark(img: Image.Image) -> Image.Image:
    """Semi-transparent white text with a dark outline, bottom right, 5% of the height."""
    size = max(8, round(img.height * 0.05))
    font = ImageFont.load_default(size=size)
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    text = "\u00a9 Example Photo 2024"
    stroke = max(1, size // 15)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    margin = round(min(img.size) * 0.02)
    xy = (img.width - margin - (x1 - x0) - x0, img.height - margin - (y1 - y0) - y0)
    draw.text(
        xy,
        text,
        font=font,
        fill=(255, 255, 255, 170),
        stroke_width=stroke,
        stroke_fill=(0, 0, 0, 120),
    )
    return _composite(img, layer)


def _logo_watermark(img: Image.Image) -> Image.Image:
    """A stock-photo style logo in the centre: a ring and a word, white at ~35% opacity."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    radius = round(min(img.size) * 0.18)
    cx, cy = img.width // 2, img.height // 2
    draw.ellipse(
        (cx - radius, cy - radius, cx + radius, cy + radius),
        outline=(255, 255, 255, 90),
        width=max(2, radius // 8),
    )
    font = ImageFont.load_default(size=max(8, round(radius * 0.55)))
    draw.text((cx, cy), "STOCK", font=font, fill=(255, 255, 255, 90), anchor="mm")
    return _composite(img, layer)


def _banner_watermark(img: Image.Image) -> Image.Image:
    """A half-transparent black band across the bottom 10% with white text on it."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    band = max(4, round(img.height * 0.10))
    draw.rectangle((0, img.height - band, img.width, img.height), fill=(0, 0, 0, 128))
    font = ImageFont.load_default(size=max(6, round(band * 0.5)))
    draw.text(
        (img.width // 2, img.height - band // 2),
        "www.example.com | all rights reserved",
        font=font,
        fill=(255, 255, 255, 230),
        anchor="mm",
    )
    return _composite(img, layer)


def _border(fraction: float) -> PixelOp:
    """A white frame around the picture, as wide as ``fraction`` of its shorter side."""

    def op(img: Image.Image) -> Image.Image:
        width = max(1, round(min(img.size) * fraction))
        fill = (255, 255, 255, 255) if img.mode == "RGBA" else (255, 255, 255)
        return ImageOps.expand(img, border=width, fill=fill)

    return op


def _grayscale(img: Image.Image) -> Image.Image:
    return img.convert("LA" if img.mode == "RGBA" else "L")


_invert = _on_colour(ImageOps.invert)


# --- metadata rewriting (byte level) ---------------------------------------------------

_JPEG_SOI = b"\xff\xd8"
_JPEG_MARK = 0xFF  # every marker starts with it; repeated, it is fill
_JPEG_SOS = 0xDA
_JPEG_APP0, _JPEG_APP1, _JPEG_APP2, _JPEG_APP14, _JPEG_COM = 0xE0, 0xE1, 0xE2, 0xEE, 0xFE
_JPEG_APP15 = 0xEF
_JPEG_MAX_PAYLOAD = 0xFFFF - 2  # the 16-bit length field counts itself
_JPEG_TEM, _JPEG_RST0, _JPEG_RST7 = 0x01, 0xD0, 0xD7  # markers without a length field


def _standalone(marker: int) -> bool:
    return marker == _JPEG_TEM or _JPEG_RST0 <= marker <= _JPEG_RST7


def _metadata_marker(marker: int) -> bool:
    """APPn and COM segments: metadata, as opposed to the tables that shape the pixels."""
    return _JPEG_APP0 <= marker <= _JPEG_APP15 or marker == _JPEG_COM


_EXIF_HEADER = b"Exif\x00\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def split_jpeg(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split a JPEG into its header segments and everything from the first SOS on.

    Returns ``[(marker, payload), ...]`` for the segments between SOI and the first
    start-of-scan, and the bytes from that SOS marker to the end, untouched: the
    scan headers, the entropy-coded data and, in a progressive JPEG, the tables and
    scans that follow.  Raises ValueError on a file that is not a JPEG.
    """
    if not data.startswith(_JPEG_SOI):
        raise ValueError("not a JPEG (no SOI marker)")
    segments: list[tuple[int, bytes]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != _JPEG_MARK:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == _JPEG_MARK:  # fill byte before a marker
            pos += 1
            continue
        if _standalone(marker):
            segments.append((marker, b""))
            pos += 2
            continue
        if marker == _JPEG_SOS:
            return segments, data[pos:]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    raise ValueError("JPEG has no start-of-scan marker")


def join_jpeg(segments: list[tuple[int, bytes]], scans: bytes) -> bytes:
    """The inverse of ``split_jpeg``."""
    parts = [_JPEG_SOI]
    for marker, payload in segments:
        if _standalone(marker):
            parts.append(bytes((_JPEG_MARK, marker)))
            continue
        if len(payload) > _JPEG_MAX_PAYLOAD:
            raise NotApplicableError(
                f"a JPEG segment is limited to 65533 bytes, not {len(payload)}"
            )
        parts.append(struct.pack(">BBH", _JPEG_MARK, marker, len(payload) + 2) + payload)
    parts.append(scans)
    return b"".join(parts)


def split_png(data: bytes) -> list[tuple[bytes, bytes]]:
    """The chunks of a PNG as ``[(type, data), ...]``; raises ValueError if not a PNG."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG (bad signature)")
    chunks: list[tuple[bytes, bytes]] = []
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
        if kind == b"IEND":
            break
    return chunks


def join_png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """The inverse of ``split_png``, with fresh CRCs."""
    parts = [_PNG_SIGNATURE]
    for kind, body in chunks:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        parts.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc))
    return b"".join(parts)


def coded_image_data(data: bytes, fmt: str) -> bytes:
    """The part of a file that holds the picture itself, without its metadata.

    For a JPEG: the quantisation, Huffman, frame and restart segments and the scans;
    for a PNG: the IHDR, PLTE, tRNS and IDAT chunks.

    Two files whose coded image data are equal decode to the same pixels whatever
    their metadata; the dataset check uses this.
    """
    if fmt == "JPEG":
        segments, scans = split_jpeg(data)
        tables = [(m, p) for m, p in segments if not _metadata_marker(m)]
        return join_jpeg(tables, scans)
    if fmt == "PNG":
        keep = (b"IHDR", b"PLTE", b"tRNS", b"IDAT")
        return b"".join(kind + body for kind, body in split_png(data) if kind in keep)
    raise NotApplicableError(f"no byte-level metadata editing for {fmt}")


def _existing_exif(data: bytes) -> Image.Exif:
    """The EXIF of a file as Pillow reads it (an empty Exif if it has none)."""
    with Image.open(io.BytesIO(data)) as img:
        return img.getexif()


def _set_exif(data: bytes, fmt: str, exif: Image.Exif, comment: str | None = None) -> bytes:
    """Replace a file's EXIF block (adding one if it has none), optionally add a comment."""
    payload = exif.tobytes()
    if not payload.startswith(_EXIF_HEADER):  # older Pillow returned bare TIFF data
        payload = _EXIF_HEADER + payload
    if fmt == "JPEG":
        segments, scans = split_jpeg(data)
        segments = [
            (m, p) for m, p in segments if not (m == _JPEG_APP1 and p.startswith(_EXIF_HEADER))
        ]
        # EXIF goes after the JFIF/JFXX APP0 segments, which readers expect first.
        at = 0
        while at < len(segments) and segments[at][0] == _JPEG_APP0:
            at += 1
        segments.insert(at, (_JPEG_APP1, payload))
        if comment is not None:
            segments.insert(at + 1, (_JPEG_COM, comment.encode("utf-8")))
        return join_jpeg(segments, scans)
    if fmt == "PNG":
        chunks = [(k, b) for k, b in split_png(data) if k != b"eXIf"]
        idat = next((i for i, (k, _) in enumerate(chunks) if k == b"IDAT"), None)
        if idat is None:
            raise ValueError("PNG has no IDAT chunk")
        new = [(b"eXIf", payload[len(_EXIF_HEADER) :])]  # PNG stores bare TIFF data
        if comment is not None:
            new.append((b"tEXt", b"Comment\x00" + comment.encode("latin-1")))
        return join_png(chunks[:idat] + new + chunks[idat:])
    raise NotApplicableError(f"no byte-level metadata editing for {fmt}")


def _exif_added(data: bytes, fmt: str) -> bytes:
    """Add camera tags (make, model, capture settings, GPS) to whatever EXIF there is."""
    exif = _existing_exif(data)
    exif[Base.Make] = "Canon"
    exif[Base.Model] = "Canon EOS 5D Mark IV"
    exif[Base.DateTime] = "2021:06:12 14:03:27"
    sub = exif.get_ifd(IFD.Exif)
    sub[Base.DateTimeOriginal] = "2021:06:12 14:03:27"
    sub[Base.DateTimeDigitized] = "2021:06:12 14:03:27"
    sub[Base.ExposureTime] = 1 / 250
    sub[Base.FNumber] = 8.0
    sub[Base.ISOSpeedRatings] = 200
    sub[Base.FocalLength] = 35.0
    sub[Base.LensModel] = "EF24-70mm f/2.8L II USM"
    gps = exif.get_ifd(IFD.GPSInfo)
    gps[GPS.GPSLatitudeRef], gps[GPS.GPSLatitude] = "N", (43.0, 15.0, 7.5)
    gps[GPS.GPSLongitudeRef], gps[GPS.GPSLongitude] = "W", (4.0, 49.0, 12.25)
    return _set_exif(data, fmt, exif)


def _exif_edited(data: bytes, fmt: str) -> bytes:
    """Change the descriptive tags (author, copyright, date, software) and add a comment."""
    exif = _existing_exif(data)
    exif[Base.Artist] = "Jane Doe"
    exif[Base.Copyright] = "(c) 2023 Jane Doe, all rights reserved"
    exif[Base.ImageDescription] = "edited by the dedupd benchmark"
    exif[Base.DateTime] = "2023:11:02 09:15:00"
    exif[Base.Software] = "Adobe Photoshop Lightroom Classic 12.0"
    return _set_exif(data, fmt, exif, comment="catalogued 2023-11-02")


def _metadata_stripped(data: bytes, fmt: str) -> bytes:
    """Remove EXIF, XMP, IPTC and comments; keep what changes how pixels are shown.

    Kept: JPEG's JFIF (APP0), ICC profile (APP2) and Adobe colour-transform (APP14)
    segments; PNG's iCCP/sRGB/gAMA/cHRM colour chunks and pHYs.  A file with nothing
    to remove is not applicable: its "stripped" copy would be an exact byte copy.
    """
    if fmt == "JPEG":
        segments, scans = split_jpeg(data)
        kept = [
            (m, p)
            for m, p in segments
            if not _metadata_marker(m)
            or m in (_JPEG_APP0, _JPEG_APP14)
            or (m == _JPEG_APP2 and p.startswith(b"ICC_PROFILE\x00"))
        ]
        stripped = join_jpeg(kept, scans)
    elif fmt == "PNG":
        dropped = (b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME")
        stripped = join_png([(k, b) for k, b in split_png(data) if k not in dropped])
    else:
        raise NotApplicableError(f"no byte-level metadata editing for {fmt}")
    if stripped == data:
        raise NotApplicableError("no metadata to strip")
    return stripped


# --- the registry ----------------------------------------------------------------------

# Encodings of the format category.  Encoder efforts are turned down where the default
# is slow, because the bytes matter less than the run time (measured on 2.3-2.5 MP):
# lossless WebP at method 0 / quality 0 takes a seventh of the default's time and
# decodes to the same pixels; AVIF at speed 10 a ninth (2.2 s to 0.25 s, 3% larger);
# x265's "ultrafast" preset an eighth (4.2 s to 0.5 s, mean error 1.2/255 instead of
# 1.1/255).  With default efforts HEIC alone took a third of the run.
WEBP_Q80 = Encoding("WEBP", "webp", MappingProxyType({"quality": 80}), alpha=True, icc=True)
WEBP_LOSSLESS = Encoding(
    "WEBP", "webp", MappingProxyType({"lossless": True, "method": 0, "quality": 0}),
    alpha=True, icc=True,
)  # fmt: skip
TIFF = Encoding(
    "TIFF", "tif", MappingProxyType({"compression": "tiff_deflate"}), alpha=True, icc=True
)
BMP = Encoding("BMP", "bmp")  # Pillow writes RGBA as 32-bit BMP, which reads back as RGB
GIF = Encoding("GIF", "gif")  # quantised by ``encode``
HEIC = Encoding(
    "HEIF", "heic",
    MappingProxyType({"quality": 80, "enc_params": MappingProxyType({"preset": "ultrafast"})}),
    alpha=True, icc=True,
)  # fmt: skip
AVIF = Encoding(
    "AVIF", "avif", MappingProxyType({"quality": 75, "speed": 10}), alpha=True, icc=True
)

_T, _C, _R = Transform, Category, Image.Resampling
_ROT90, _ROT180, _ROT270 = (
    Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
)  # fmt: skip

# One entry per transform: name, category, description, pixel operation, options.
# fmt: off
TRANSFORMS: tuple[Transform, ...] = (
    # reencode: always JPEG (for a PNG source this is also a format change)
    _T("jpeg_q95", _C.REENCODE, "JPEG quality 95", encoding=_jpeg(quality=95)),
    _T("jpeg_q75", _C.REENCODE, "JPEG quality 75", encoding=_jpeg(quality=75)),
    _T("jpeg_q50", _C.REENCODE, "JPEG quality 50", encoding=_jpeg(quality=50)),
    _T("jpeg_progressive", _C.REENCODE, "progressive, optimised JPEG quality 85",
       encoding=_jpeg(quality=85, progressive=True, optimize=True)),
    _T("jpeg_420", _C.REENCODE, "JPEG quality 90, 4:2:0 chroma subsampling",
       encoding=_jpeg(quality=90, subsampling="4:2:0")),
    _T("jpeg_444", _C.REENCODE, "JPEG quality 90, no chroma subsampling (4:4:4)",
       encoding=_jpeg(quality=90, subsampling="4:4:4")),
    # resize: the results stay the source's kind of file, like every pixel edit below
    _T("scale_075", _C.RESIZE, "scaled to 75% (Lanczos)", _scale(0.75, _R.LANCZOS)),
    _T("scale_050", _C.RESIZE, "scaled to 50% (Lanczos)", _scale(0.5, _R.LANCZOS)),
    _T("scale_025", _C.RESIZE, "scaled to 25% (Lanczos)", _scale(0.25, _R.LANCZOS)),
    _T("upscale_150", _C.RESIZE, "upscaled to 150% (bicubic)", _scale(1.5, _R.BICUBIC)),
    _T("thumbnail_800", _C.RESIZE, "thumbnail, longer side 800 px", _thumbnail(800)),
    # format
    _T("to_png", _C.FORMAT, "PNG", encoding=PNG),
    _T("to_webp_q80", _C.FORMAT, "lossy WebP quality 80", encoding=WEBP_Q80),
    _T("to_webp_lossless", _C.FORMAT, "lossless WebP", encoding=WEBP_LOSSLESS),
    _T("to_tiff", _C.FORMAT, "TIFF, deflate compression", encoding=TIFF),
    _T("to_bmp", _C.FORMAT, "24-bit BMP (alpha flattened)", encoding=BMP),
    _T("to_gif", _C.FORMAT, "GIF, adaptive 256-colour palette (lossy)", encoding=GIF),
    _T("to_heic", _C.FORMAT, "HEIC quality 80 (pillow-heif, x265)", encoding=HEIC),
    _T("to_avif", _C.FORMAT, "AVIF quality 75", encoding=AVIF),
    # photometric_mild
    _T("brightness_up10", _C.PHOTOMETRIC_MILD, "brightness +10%",
       _enhance(ImageEnhance.Brightness, 1.10)),
    _T("brightness_down10", _C.PHOTOMETRIC_MILD, "brightness -10%",
       _enhance(ImageEnhance.Brightness, 0.90)),
    _T("contrast_up10", _C.PHOTOMETRIC_MILD, "contrast +10%",
       _enhance(ImageEnhance.Contrast, 1.10)),
    _T("contrast_down10", _C.PHOTOMETRIC_MILD, "contrast -10%",
       _enhance(ImageEnhance.Contrast, 0.90)),
    _T("saturation_up15", _C.PHOTOMETRIC_MILD, "saturation +15%",
       _enhance(ImageEnhance.Color, 1.15)),
    _T("saturation_down15", _C.PHOTOMETRIC_MILD, "saturation -15%",
       _enhance(ImageEnhance.Color, 0.85)),
    _T("gamma_090", _C.PHOTOMETRIC_MILD, "gamma: out = in ** 0.9 (lighter)", _gamma(0.9)),
    _T("gamma_110", _C.PHOTOMETRIC_MILD, "gamma: out = in ** 1.1 (darker)", _gamma(1.1)),
    _T("hue_shift_5", _C.PHOTOMETRIC_MILD, "hue rotated by 5 degrees", _hue_rotate(5)),
    _T("blur_r1", _C.PHOTOMETRIC_MILD, "gaussian blur, radius 1",
       _filter(ImageFilter.GaussianBlur(1))),
    _T("sharpen", _C.PHOTOMETRIC_MILD, "unsharp mask (radius 2, 100%, threshold 3)",
       _filter(ImageFilter.UnsharpMask(radius=2, percent=100, threshold=3))),
    _T("noise_sigma3", _C.PHOTOMETRIC_MILD, "gaussian noise, sigma 3 (of 255)",
       _gaussian_noise(3.0)),
    # metadata: byte-level edits, the coded image data copied unchanged
    _T("exif_added", _C.METADATA, "camera EXIF tags and GPS added", rewrite=_exif_added),
    _T("exif_edited", _C.METADATA, "author/copyright/date/software edited, comment added",
       rewrite=_exif_edited),
    _T("exif_stripped", _C.METADATA, "EXIF, XMP, IPTC and comments removed (ICC kept)",
       rewrite=_metadata_stripped),
    # exif_rotated: displayed (after applying the Orientation tag) like the source
    _T("exif_rotated_90", _C.EXIF_ROTATED, "stored rotated 90 degrees counter-clockwise, "
       "EXIF Orientation 6", _transpose(_ROT90), orientation=6),
    _T("exif_rotated_270", _C.EXIF_ROTATED, "stored rotated 90 degrees clockwise, "
       "EXIF Orientation 8", _transpose(_ROT270), orientation=8),
    # geometric
    _T("rotate_90", _C.GEOMETRIC, "rotated 90 degrees counter-clockwise", _transpose(_ROT90)),
    _T("rotate_180", _C.GEOMETRIC, "rotated 180 degrees", _transpose(_ROT180)),
    _T("rotate_270", _C.GEOMETRIC, "rotated 90 degrees clockwise", _transpose(_ROT270)),
    _T("mirror_lr", _C.GEOMETRIC, "mirrored left-right",
       _transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    _T("flip_tb", _C.GEOMETRIC, "flipped top-bottom",
       _transpose(Image.Transpose.FLIP_TOP_BOTTOM)),
    _T("rotate_3deg", _C.GEOMETRIC, "rotated 3 degrees counter-clockwise about the centre, "
       "same size, black corners", _rotate_small(3.0)),
    # crop
    _T("crop_5pct_right", _C.CROP, "5% of the width cut off the right side",
       _crop_fractions(0, 0, 0.05, 0)),
    _T("crop_5pct_all", _C.CROP, "5% cut off every side",
       _crop_fractions(0.05, 0.05, 0.05, 0.05)),
    _T("crop_10pct_all", _C.CROP, "10% cut off every side",
       _crop_fractions(0.10, 0.10, 0.10, 0.10)),
    _T("crop_center_4x3", _C.CROP, "centre crop to 4:3 (3:4 for a portrait picture)",
       _crop_to_aspect(4, 3)),
    _T("crop_center_16x9", _C.CROP, "centre crop to 16:9 (9:16 for a portrait picture)",
       _crop_to_aspect(16, 9)),
    _T("crop_15pct_left", _C.CROP, "15% of the width cut off the left side",
       _crop_fractions(0.15, 0, 0, 0)),
    # overlay
    _T("watermark_text", _C.OVERLAY, "semi-transparent text, bottom right, 5% of the height",
       _text_watermark),
    _T("watermark_logo", _C.OVERLAY, "semi-transparent ring-and-word logo in the centre",
       _logo_watermark),
    _T("watermark_banner", _C.OVERLAY, "half-transparent banner with text over the bottom 10%",
       _banner_watermark),
    _T("border_3pct", _C.OVERLAY, "white frame, 3% of the shorter side wide, added around",
       _border(0.03)),
    _T("pad_16px", _C.OVERLAY, "black pad of 16 px added on every side", _pad(16)),
    # strong: for information, not scored
    _T("grayscale", _C.STRONG, "converted to grayscale", _grayscale),
    _T("sepia", _C.STRONG, "sepia tone", _sepia),
    _T("hue_shift_60", _C.STRONG, "hue rotated by 60 degrees", _hue_rotate(60)),
    _T("invert", _C.STRONG, "colours inverted (negative)", _invert),
    _T("crop_heavy_30pct", _C.STRONG, "30% of width and height cut off, off-centre "
       "(20% left/top, 10% right/bottom)", _crop_fractions(0.20, 0.20, 0.10, 0.10)),
)
# fmt: on

BY_NAME: Mapping[str, Transform] = MappingProxyType({t.name: t for t in TRANSFORMS})
if len(BY_NAME) != len(TRANSFORMS):
    raise RuntimeError("transform names must be unique")


def select(names: str | None) -> tuple[Transform, ...]:
    """The transforms named in a comma-separated list of transform and category names.

    ``None`` or an empty string selects every transform.  Raises KeyError naming an
    unknown name.
    """
    if not names:
        return TRANSFORMS
    wanted: set[str] = set()
    for word in (w.strip() for w in names.split(",")):
        if not word:
            continue
        if word in BY_NAME:
            wanted.add(word)
        elif word in {c.value for c in Category}:
            wanted.update(t.name for t in TRANSFORMS if t.category == word)
        else:
            raise KeyError(word)
    return tuple(t for t in TRANSFORMS if t.name in wanted)


def by_category() -> Iterator[tuple[Category, tuple[Transform, ...]]]:
    """Each category with its transforms, in registry order."""
    for category in Category:
        yield category, tuple(t for t in TRANSFORMS if t.category is category)
