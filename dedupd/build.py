"""Which build of dedupd is running: its own code and the decoders it reads with.

A file dedupd could not read (``corrupt``, ``not_an_image``...) or that crashed
its decoder or its own code is recorded with the build that judged it, and is
not read again while it is unchanged.  Another build (an upgrade of dedupd, of
Pillow or of a decoder plugin) may judge it otherwise: such a file is read once
more, and its crash count starts again, so a file skipped for a bug that an
upgrade fixed is not skipped forever.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path

#: the distributions whose code reads pictures or fingerprints them
DECODERS = ("Pillow", "pillow-heif", "numpy", "scipy", "opencv-python-headless", "ImageHash", "PyWavelets")


@functools.cache
def build_id() -> str:
    """A short digest of dedupd's own sources and the decoders' versions."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for source in sorted(package.rglob("*.py")) + sorted(package.glob("*.c")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    for name in DECODERS:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{name}={version}\0".encode())
    return digest.hexdigest()[:16]
