"""Frozen values shared by every module: tiers, actions, stats, fingerprints, matches."""

from __future__ import annotations

import enum
import os
import re
import stat as stat_module
from dataclasses import dataclass, field
from pathlib import Path


#: default pixel limit: above it an image is refused as a decompression bomb
DEFAULT_MAX_PIXELS = 150_000_000
#: default size limit: a file larger than this is not read into memory
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
#: default decode budget: the memory a decoded frame and its working copies
#: may take (see dedupd.hashing.decode_cost); a 949 KB float TIFF can claim gigabytes
DEFAULT_MAX_DECODE_BYTES = 2 * 1024 * 1024 * 1024


class Tier(enum.StrEnum):
    """How two files were found to be the same picture, strongest first."""

    EXACT = "exact"  # identical bytes
    PIXEL = "pixel"  # identical picture, only metadata differs
    NEAR = "near"  # perceptually the same picture (resized, re-encoded, edited)
    #: looks alike but may be another capture (burst, video frame, stereo view,
    #: re-shoot, colourway) or a copy changed in a region: reported for review,
    #: never acted on
    SIMILAR = "similar"

    @property
    def actionable(self) -> bool:
        """May a configured action be applied to a pair of this tier?"""
        return self is not Tier.SIMILAR


class Action(enum.StrEnum):
    """What to do with a duplicate.  None of them deletes anything."""

    LOG = "log"
    QUARANTINE = "quarantine"
    SYMLINK = "symlink"


class Orientation(enum.StrEnum):
    """The eight rotations and mirror images of a picture (the dihedral group D4).

    The value names the transform that turns the *new* picture into the
    stored one.
    """

    IDENTITY = "identity"
    ROT90 = "rot90"
    ROT180 = "rot180"
    ROT270 = "rot270"
    MIRROR = "mirror"
    MIRROR_ROT90 = "mirror_rot90"
    MIRROR_ROT180 = "mirror_rot180"
    MIRROR_ROT270 = "mirror_rot270"


@dataclass(frozen=True, slots=True)
class FileStat:
    """What identifies one version of a file without reading it.

    Equality is device, inode, size and mtime: "the same version, no need to
    read it again".  ``ctime_ns`` is carried but not compared there, because
    a rename or a new hard link changes it without changing a byte; the
    stricter check before an action (:func:`dedupd.identity.unchanged`)
    compares it too.  0 means "not recorded".
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int = field(default=0, compare=False)

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(
            dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns
        )

    @classmethod
    def from_path(cls, path: Path) -> FileStat:
        """Stat without following a final symlink; raises OSError."""
        st = os.lstat(path)
        if not stat_module.S_ISREG(st.st_mode):
            raise IsADirectoryError(f"not a regular file: {path}")
        return cls.of(st)


@dataclass(frozen=True, slots=True)
class Hashes:
    """The perceptual hashes of one orientation of a picture."""

    phash: int  # 64-bit DCT hash: the index key
    dhash: int  # 64-bit gradient hash: the independent verifier
    colour: bytes  # 4x4 grid of mean colours (Y, Cb, Cr), 48 bytes


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Everything dedupd learns from one read of one file."""

    sha256: str  # of the file's bytes: the exact tier
    pixel_digest: str  # of the coded picture without metadata: the pixel tier
    hashes: Hashes  # as displayed (EXIF orientation applied)
    width: int  # as displayed
    height: int
    format: str  # Pillow's format name: JPEG, PNG, ...
    detail: float  # standard deviation of the small grey thumbnail, 0..127
    #: hashes of the other seven orientations, for rotated/mirrored copies
    variants: tuple[tuple[Orientation, Hashes], ...] = ()
    #: pHashes of the content box and of crop windows (``hashing.CROP_WINDOWS``),
    #: index keys that propose cropped, padded and bordered copies
    crop_keys: tuple[int, ...] = ()

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True, slots=True)
class Distances:
    """How far apart two pictures are, hash by hash."""

    phash: int  # bits out of 64
    dhash: int  # bits out of 64
    colour: float  # mean absolute difference of the colour grids, 0..255


@dataclass(frozen=True, slots=True)
class Match:
    """One file found to be a copy of another, and why."""

    tier: Tier
    distances: Distances
    similarity: float  # percent, 100 = identical
    orientation: Orientation
    reason: str  # one line a person can read


@dataclass(frozen=True, slots=True)
class Record:
    """One indexed file as the store knows it."""

    id: int
    path: Path
    stat: FileStat
    fingerprint: Fingerprint | None  # None when the file could not be read
    #: seniority: the order in which dedupd first saw this path.  A new
    #: version of the same path (touched, re-tagged, seen on a remounted
    #: device) keeps it, and so does a rename; the ``first_seen`` keep rule
    #: compares it
    seq: int
    error: str | None = None  # reason the file was skipped, when it was
    #: the file's original, when this file is a duplicate (the group's root)
    original_id: int | None = None
    #: the host that owns the file, when that is not this one (a store several
    #: hosts share): its path names a file on that host, never one here, so it
    #: is never read, checked or moved from here
    host: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to "are these two the same picture?", with the reason."""

    match: Match | None
    reason: str
    distances: Distances | None = None
    #: the new picture's content (uniform borders trimmed) lies inside the
    #: other's frame, all of it compared (known for exact, pixel and
    #: pixel-verified ``near`` verdicts; False when not known)
    new_inside: bool = False
    #: the other picture's content lies inside the new one's frame
    old_inside: bool = False
    #: pixel-verified, not ``near`` for one reason only: the frames are not one
    #: inside the other (no crop, pad or turn an edit makes); nothing differs
    #: where they overlap and the colours agree.  Any other ``similar`` saw
    #: the pictures differ (content, colour, motion, overlay).
    framing_only: bool = False


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A pair found: ``duplicate`` is a copy of ``original`` (the root of its group)."""

    duplicate: Record
    original: Record
    match: Match
    tie: bool  # no keep rule decided which is the original: act on neither
    rule: str  # the keep rule that decided, in words


class DecisionKind(enum.StrEnum):
    """What a person decided, so that dedupd does not undo it."""

    #: these two files are not copies of each other: never paired again
    NOT_DUPLICATES = "not_duplicates"
    #: a person restored this file: it is not acted on again until the
    #: decision is removed (``dedupd ignores remove ID``)
    KEEP = "keep"


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision a person made, as ``dedupd ignores list`` shows it.

    A file is named by its content and its path together (see
    :meth:`dedupd.store.Store.is_ignored` for why); ``path`` None means any
    file with that content (decisions recorded before paths were kept).
    """

    id: int
    kind: DecisionKind
    sha256: str
    path: Path | None
    other_sha256: str | None  # None for KEEP
    other_path: Path | None
    decided_at: float
    decided_by: str | None
    note: str


@dataclass(frozen=True, slots=True)
class PostgresUrl:
    """Where a PostgreSQL store is: a libpq URL (``postgresql://user@host/dbname``).

    Its password, if the URL holds one, never reaches a log line or a message:
    ``str()`` shows the URL with the password replaced.  The password belongs in
    ``PGPASSFILE`` (``~/.pgpass``) or ``PGPASSWORD``, which libpq reads itself.
    """

    url: str

    @staticmethod
    def matches(text: str) -> bool:
        """Does ``text`` name a PostgreSQL store rather than a SQLite file?"""
        return text.startswith(("postgresql://", "postgres://"))

    def __repr__(self) -> str:
        return f"PostgresUrl({str(self)!r})"

    def __str__(self) -> str:
        shown = re.sub(r"^(postgres(?:ql)?://[^:@/?]*):[^@/?]*@", r"\1:***@", self.url)
        return re.sub(r"([?&]password=)[^&]*", r"\1***", shown)


#: where a store is: a SQLite file, or a PostgreSQL database
StoreLocation = Path | PostgresUrl
