"""Pixels between hosts: how a host verifies a copy of another host's file.

Several hosts sharing one store each read only their own files: another
host's path names a file on that host.  The verifier needs both pictures'
pixels, so without them a copy of another host's picture could be judged on
its hashes alone, which never says ``near``.  Instead the host that needs
them asks, through the store:

1. Placing a file, grouping asks :meth:`Exchange.pixels` for those of another
   host's file.  When that host has shared them (by content: any file with
   those bytes has those pixels), they are used at once.  When not, a row of
   ``pixels_asked`` names the file version, the size wanted and the file
   waiting for the answer, and the pair is judged on its hashes for now
   (``similar`` at most: reported, never acted on).
2. The host that owns the file reads it as the verifier would
   (:func:`~dedupd.hashing.verification_pixels`, the version it fingerprinted
   only) and shares the pixels as a PNG (:meth:`Exchange.share`), within its
   daemon's loop.
3. The asking host sees its questions answered (:meth:`~dedupd.grouping.Grouping.take_answers`)
   and places the waiting files again, now on pixels; a closer look (pages,
   watermarks) asks once more, at the larger size.

A host that is down answers when it is back; until then its files' copies
elsewhere stay ``similar``, which is never acted on.  Shared pixels are
dropped after :data:`SHARED_KEPT` (asked again if needed); questions after
:data:`ASKED_KEPT`.  A store of one host (SQLite) never asks.
"""

from __future__ import annotations

import io
import time
import zlib

import numpy as np
import structlog
from PIL import Image

from dedupd import errors, faults
from dedupd.backend import StoreBackend
from dedupd.hashing import verification_pixels
from dedupd.models import Record

log = structlog.get_logger()

#: seconds pixels stay shared: the asking host takes them in within a pass of its loop
SHARED_KEPT = 3600.0
#: seconds a question stays asked: a host gone for a week is gone
ASKED_KEPT = 7 * 86400.0
#: questions answered in one pass of the daemon's loop at most, and the time
#: spent on them (a read and a PNG of each: 0.05-0.5 s)
SHARE_AT_MOST = 8
SHARE_BUDGET = 1.0
#: seconds before a file that could not be read is tried again
RETRY_AFTER = 300.0
#: the largest picture taken from a shared PNG (the verifier's closer looks
#: read at most 3072 px a side)
MAX_SHARED_PIXELS = 4096 * 4096


class Exchange:
    """This host's side of the exchange, over the shared store."""

    def __init__(self, store: StoreBackend) -> None:
        self.store = store
        #: the file being placed: what waits for the pixels asked while placing it
        self.waiting: int | None = None

    def pixels(self, record: Record, side: int) -> np.ndarray | None:
        """The pixels of another host's file at ``side``, if its host shared them;
        otherwise asked of it (for :attr:`waiting`), and None."""
        assert record.fingerprint is not None and record.host is not None
        sha = record.fingerprint.sha256
        png = self.store.shared_pixels(sha, side)
        if png is not None:
            try:
                return decode(png)
            except ValueError as exc:
                # damaged in the store: dropped, and asked for again (read afresh by its host)
                log.warning("shared_pixels_unreadable", path=record.path, host=record.host, error=str(exc))
                self.store.drop_shared(sha, side)
        if self.waiting is not None:
            self.store.ask_pixels(record.id, sha, side, self.waiting)
            log.info("pixels_asked", path=record.path, host=record.host, side=side, waiting=self.waiting)
        return None

    def share(self, budget: float = SHARE_BUDGET, at_most: int = SHARE_AT_MOST) -> int:
        """Answer what other hosts asked of this host's files, within ``budget``
        seconds; how many were shared."""
        started = time.monotonic()
        shared = 0
        for file_id, sha, side in self.store.pixels_asked_here(at_most):
            if time.monotonic() - started > budget:
                break
            rec = self.store.record(file_id)
            if rec is None or rec.fingerprint is None or rec.fingerprint.sha256 != sha:
                # another version now: its placement verifies again and asks anew
                with self.store.atomic():
                    self.store.drop_asked(file_id, sha, side)
                continue
            try:
                faults.point("exchange.share", rec.path)
                png = encode(verification_pixels(rec.path, expected=rec.stat, side=side))
            except (errors.UnreadableFile, errors.OutOfMemory, OSError) as exc:
                # for a moment, it may be (a permission, a server, memory): tried again later
                log.warning("pixels_not_shared_yet", path=rec.path, side=side, reason=str(exc), retry_in=RETRY_AFTER)
                with self.store.atomic():
                    self.store.retry_asked(file_id, sha, side, time.time() + RETRY_AFTER)
                continue
            except errors.FileSkipped as exc:
                # gone, changed, not an image: the asking host places its file again when
                # this one is stored again, and asks anew if it needs to
                log.warning("pixels_not_shared", path=rec.path, side=side, reason=str(exc))
                with self.store.atomic():
                    self.store.drop_asked(file_id, sha, side)
                continue
            with self.store.atomic():
                self.store.share_pixels(sha, side, png)
            log.info("pixels_shared", path=rec.path, side=side, bytes=len(png))
            shared += 1
        return shared

    def prune(self) -> None:
        self.store.prune_pixels(SHARED_KEPT, ASKED_KEPT)


def encode(pixels: np.ndarray) -> bytes:
    """Pixels as a PNG: lossless, so the verifier sees what the owning host read."""
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def decode(png: bytes) -> np.ndarray:
    """The pixels of a shared PNG (RGB, as the verifier takes them); ValueError when it is not one."""
    try:
        with Image.open(io.BytesIO(png)) as im:
            if im.format != "PNG" or im.size[0] * im.size[1] > MAX_SHARED_PIXELS:
                raise ValueError(f"not a shared picture: {im.format} {im.size[0]}x{im.size[1]}")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    # what Pillow raises for damaged data: OSError (truncated, unidentified), SyntaxError (a
    # broken chunk), EOFError, zlib's error, a bomb's
    except (OSError, SyntaxError, EOFError, zlib.error, Image.DecompressionBombError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
