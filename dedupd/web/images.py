"""Thumbnails and difference maps for the review page, made on demand and cached.

An image is asked for by file id, never by path: the path is the one the
store holds for that id, and the file must still be the version that was
fingerprinted (size, modification time, inode), read with the same limits
as a scan (``max_pixels``, ``max_file_bytes``).  The cache lives in the
state directory, keyed by id, SHA-256 and size, so that a changed file never
shows a stale picture; entries are written to a temporary name and renamed.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import structlog
from PIL import Image

from dedupd import errors
from dedupd.config import Config
from dedupd.hashing import verification_pixels
from dedupd.models import Orientation, Record
from dedupd.verify import difference_map

log = structlog.get_logger()

#: thumbnail sizes the page asks for (the longer side, pixels)
SIZES = {"small": 240, "large": 512}


class ImageUnavailable(errors.DedupdError):
    """The picture cannot be shown."""


class Images:
    """Makes and caches the pictures of one store's files."""

    def __init__(self, config: Config, cache_dir: Path) -> None:
        self.config = config
        self.cache_dir = cache_dir

    def thumbnail(self, record: Record, size: str) -> bytes:
        """A JPEG of the file as displayed, its longer side at most ``SIZES[size]``."""
        fp = record.fingerprint
        if fp is None:
            raise ImageUnavailable("the file could not be read when it was scanned")
        side = SIZES[size]
        key = f"{record.id}-{fp.sha256[:24]}-{side}.jpg"
        cached = self._get(key)
        if cached is not None:
            return cached
        im = Image.fromarray(self._pixels(record))
        im.thumbnail((side, side), Image.Resampling.LANCZOS)
        return self._put(key, _jpeg(im))

    def difference(self, new: Record, old: Record, orientation: Orientation) -> bytes:
        """A PNG: where ``new`` differs from ``old`` (cells tinted red), in the frame they are compared in."""
        if new.fingerprint is None or old.fingerprint is None:
            raise ImageUnavailable("one of the files could not be read when it was scanned")
        key = f"diff-{new.id}-{new.fingerprint.sha256[:16]}-{old.id}-{old.fingerprint.sha256[:16]}-{orientation.value}.png"
        cached = self._get(key)
        if cached is not None:
            return cached
        picture = difference_map(self._pixels(new), self._pixels(old), orientation)
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, "PNG", optimize=False)
        return self._put(key, buf.getvalue())

    def _pixels(self, record: Record) -> np.ndarray:
        if record.host is not None:  # its path names a file on that host, never one here
            raise ImageUnavailable(f"on host {record.host}: shown on that host's review page")
        try:
            return verification_pixels(
                record.path,
                expected=record.stat,
                max_pixels=self.config.max_pixels,
                max_bytes=self.config.max_file_bytes,
            )
        except errors.FileSkipped as exc:
            raise ImageUnavailable(exc.cause or exc.message) from exc

    def _get(self, key: str) -> bytes | None:
        try:
            return (self.cache_dir / key).read_bytes()
        except OSError:
            return None

    def _put(self, key: str, data: bytes) -> bytes:
        """Cache ``data`` (a failure to is logged, never fatal: the picture is served anyway)."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.cache_dir / key)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("thumbnail_not_cached", cache=self.cache_dir, error=exc.strerror or str(exc))
        return data


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()
