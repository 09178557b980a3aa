"""Image factories and byte-level editors shared by the test modules.

Pictures are generated from a seed so every test is reproducible: a smooth
random colour field (low-resolution noise scaled up) with random shapes drawn
over it.  That gives real structure at several scales, the way a photo has,
so distinct seeds are clearly different pictures to a perceptual hash, and a
resized or re-encoded copy of one is clearly the same.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import json
import sqlite3
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from dedupd import hashing  # noqa: F401  (registers the HEIF opener with Pillow)

# ../shared/photos beside the checkout (as CI lays it out), else this workplace's copy
PHOTOS = next(
    (p for p in (Path(__file__).resolve().parents[2] / "shared" / "photos", Path("/work/shared/photos")) if p.is_dir()),
    Path(__file__).resolve().parents[2] / "shared" / "photos",
)

#: file suffix -> Pillow format name
FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".heic": "HEIF",
    ".avif": "AVIF",
}

#: EXIF orientation value -> the transpose that turns the upright picture
#: into the stored pixels (the inverse of what a viewer applies)
STORE_ROTATED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


# --- pictures ---------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """A smooth random RGB field: ``cells`` x ``cells`` random colours scaled up."""
    coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    field = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    return np.asarray(field, dtype=np.float32)


def photo(seed: int, size: tuple[int, int] = (384, 288)) -> Image.Image:
    """A textured synthetic RGB "photo": smooth fields at two scales plus shapes."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = 0.7 * _smooth_field(rng, size, 4) + 0.3 * _smooth_field(rng, size, 9)
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(6, 10))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, x1 = sorted(int(v) for v in rng.integers(-w // 4, w + w // 4, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(-h // 4, h + h // 4, 2))
        x1, y1 = max(x1, x0 + w // 8), max(y1, y0 + h // 8)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            points = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(points, fill=colour)
    # a little fine grain, so that the picture is not flat between edges
    grain = rng.normal(0, 4, (h, w, 3))
    out = np.asarray(im, dtype=np.float32) + grain
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def flat(colour: tuple[int, int, int] = (90, 140, 200), size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A picture of one colour."""
    return Image.new("RGB", size, colour)


def near_flat(seed: int, size: tuple[int, int] = (320, 240), spread: float = 3.0) -> Image.Image:
    """A nearly flat picture: one colour with faint smooth variation."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 200, 3)
    wobble = (_smooth_field(rng, size, 3) - 127.5) / 127.5 * spread
    arr = base[None, None, :] + wobble
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def alpha_only(seed: int, size: tuple[int, int] = (384, 288), rgb: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """An RGBA picture whose RGB is flat and whose whole picture is in the alpha channel."""
    alpha = photo(seed, size).convert("L")
    alpha = ImageOps.autocontrast(alpha)
    im = Image.new("RGBA", size, (*rgb, 0))
    im.putalpha(alpha)
    return im


def inverted(im: Image.Image) -> Image.Image:
    """The colour negative of an RGB picture."""
    return ImageOps.invert(im.convert("RGB"))


# --- files ------------------------------------------------------------------


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def invoice(total: str, line11: str | None = None) -> Image.Image:
    """An A4 page at 300 dpi (2480x3508): 40 priced lines (the eleventh ``line11`` if
    given) and a total in a 10 pt font."""
    im = Image.new("RGB", (2480, 3508), (252, 252, 250))
    d = ImageDraw.Draw(im)
    f = font(42)
    for i in range(40):
        text = line11 if (i == 10 and line11) else f"{i + 1:>2}  consulting hours, rate {40 + i}.00"
        d.text((200, 420 + 62 * i), text, font=f, fill=(30, 30, 30))
        d.text((1900, 420 + 62 * i), f"{(i * 37) % 900 + 10}.{i:02d}", font=f, fill=(30, 30, 30))
    d.text((1500, 3000), f"TOTAL DUE: {total}", font=f, fill=(10, 10, 10))
    return im


def corner_words(
    im: Image.Image, fill: tuple[int, ...], outline: tuple[int, ...] | None
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Words in the bottom-right corner, 5% of the height, where a stock site puts its
    watermark, drawn as an RGBA layer (``fill`` and ``outline`` with their alpha); and the
    box their ink covers."""
    size = max(8, round(im.height * 0.05))
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    text = "\u00a9 Example Photo 2024"
    stroke = max(1, size // 15) if outline else 0
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font(size), stroke_width=stroke)
    margin = round(min(im.size) * 0.02)
    x, y = im.width - margin - x1, im.height - margin - y1
    draw.text((x, y), text, font=font(size), fill=fill, stroke_width=stroke, stroke_fill=outline)
    return Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB"), (x + x0, y + y0, x + x1, y + y1)


def pasted(im: Image.Image) -> Image.Image:
    """A patch of the picture (15% of its shorter side) pasted elsewhere in it."""
    w, h = im.size
    side = round(0.15 * min(w, h))
    out = im.copy()
    out.paste(im.crop((w // 10, h * 6 // 10, w // 10 + side, h * 6 // 10 + side)), (w * 6 // 10, h * 3 // 10))
    return out


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    """The bytes of ``im`` saved in Pillow format ``fmt`` (sensible defaults per format)."""
    fmt = fmt.upper()
    if fmt == "JPEG":
        params.setdefault("quality", 92)
        if im.mode not in ("RGB", "L", "CMYK"):
            im = im.convert("RGB")
    elif fmt == "GIF" and im.mode not in ("P", "L"):
        im = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    elif fmt in ("HEIF", "AVIF"):
        params.setdefault("quality", 90)
    elif fmt == "WEBP":
        params.setdefault("quality", 90)
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def save(im: Image.Image, path: Path, **params: object) -> Path:
    """Save ``im`` at ``path`` in the format its suffix names; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(im, FORMATS[path.suffix.lower()], **params))
    return path


def exif_bytes(orientation: int | None = None, **tags: object) -> bytes:
    """An EXIF block (as Pillow's ``exif=`` takes it) with the given orientation."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    names = {"software": 0x0131, "artist": 0x013B, "description": 0x010E}
    for name, value in tags.items():
        exif[names[name]] = value
    return exif.tobytes()


# --- byte-level edits: metadata changes that leave the coded picture alone ---


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_insert_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    """Insert one marker segment after SOI and any APP0 (JFIF) segment."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    pos = 2
    if data[pos : pos + 2] == b"\xff\xe0":
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return data[:pos] + _jpeg_segment(marker, payload) + data[pos:]


def jpeg_with_comment(data: bytes, text: bytes) -> bytes:
    """The same JPEG with a COM segment added."""
    return jpeg_insert_segment(data, 0xFE, text)


def jpeg_with_exif(data: bytes, orientation: int | None = None, **tags: object) -> bytes:
    """The same JPEG with an APP1 EXIF segment added (the coded picture untouched)."""
    block = exif_bytes(orientation, **tags)
    if not block.startswith(b"Exif\x00\x00"):
        block = b"Exif\x00\x00" + block
    return jpeg_insert_segment(data, 0xE1, block)


def jpeg_with_xmp(data: bytes, xml: bytes) -> bytes:
    """The same JPEG with an APP1 XMP packet added."""
    return jpeg_insert_segment(data, 0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + xml)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_insert_chunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    """Insert a chunk right before the first IDAT."""
    at = data.index(b"IDAT") - 4
    return data[:at] + png_chunk(kind, payload) + data[at:]


def png_flip_idat_bytes(data: bytes, count: int = 16) -> bytes:
    """Corrupt the compressed picture: invert ``count`` bytes in the middle of the first IDAT."""
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    start = at + 4 + length // 2
    body = bytearray(data)
    for i in range(start, min(start + count, at + 4 + length)):
        body[i] ^= 0xFF
    return bytes(body)


def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid 1-bit greyscale PNG of ``width`` x ``height`` zeros: tiny file, huge picture."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    parts = [z.compress(row) for _ in range(height)]
    parts.append(z.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def file_state(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``root``: its bytes, inode and mtime, keyed by relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[str(p.relative_to(root))] = (p.read_bytes(), st.st_ino, st.st_mtime_ns)
    return out


# --- reading what the CLI left behind ---------------------------------------


def log_events(stderr: str) -> list[dict[str, object]]:
    """The JSON log lines the CLI wrote on stderr (logs are JSON when stderr is not a TTY)."""
    out = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def db_rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows of a query on the store, read with the standard library's sqlite3."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# --- running the real command line ---------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
CLI_TIMEOUT = 120.0
#: the type of the ``run_cli`` fixture
RunCli = Callable[..., subprocess.CompletedProcess[str]]
#: subcommands that take --db
DB_COMMANDS = frozenset({"scan", "groups", "status", "audit", "restore", "ignore", "ignores", "apply", "errors", "run", "migrate"})


def cli_environment(home: Path) -> dict[str, str]:
    """This process's environment with the package importable and every XDG dir under ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(
        PYTHONPATH=str(ROOT),
        XDG_STATE_HOME=str(home / "xdg-state"),
        XDG_CONFIG_HOME=str(home / "xdg-config"),
        XDG_CACHE_HOME=str(home / "xdg-cache"),
        LC_ALL="C.UTF-8",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def run_dedupd(
    *args: str | Path,
    db: Path | None,
    env: dict[str, str],
    cwd: Path,
    prefix: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """``python -m dedupd ARGS``.

    ``--db DB`` is added after a subcommand that takes it (unless given, or
    ``db`` is None), and ``scan`` gets ``--workers 1`` unless told otherwise.
    """
    argv = [str(a) for a in args]
    if db is not None and argv and argv[0] in DB_COMMANDS and "--db" not in argv:
        argv[1:1] = ["--db", str(db)]
    if argv and argv[0] == "scan" and "--workers" not in argv:
        # a worker pool (forkserver) costs about a second to start; tests that
        # exercise it ask for --workers 2 themselves
        argv[1:1] = ["--workers", "1"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "dedupd", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=CLI_TIMEOUT,
        check=False,
    )


def groups(db: Path) -> dict[str, list[str]]:
    """A store's groups by file name: original -> its duplicates, sorted; read with plain sqlite3."""
    out: dict[str, list[str]] = {}
    for orig, dup in db_rows(
        db, "SELECT o.path, d.path FROM matches m JOIN files o ON o.id = m.original_id JOIN files d ON d.id = m.file_id"
    ):
        out.setdefault(Path(os.fsdecode(orig)).name, []).append(Path(os.fsdecode(dup)).name)  # type: ignore[arg-type]
    return {k: sorted(v) for k, v in out.items()}
