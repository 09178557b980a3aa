"""Build the evaluation dataset of the accuracy benchmark, and say which pairs are duplicates.

    python bench/dataset.py --photos /work/shared/photos --out /tmp/dedupd-eval
    python bench/dataset.py --photos ... --out DIR --transforms reencode,rotate_90 --limit 5
    python bench/dataset.py --out DIR --check      # verify an existing dataset
    python bench/dataset.py --list                 # the transforms and their categories

Every source photo is copied into ``--out`` (same sub-folder as in the photos folder) and
every transform of ``transforms.py`` is applied to it, giving
``<source-stem>__<transform>.<ext>`` beside the copy.  ``manifest.json`` lists every file
with its source, transform, category and duplicate group, and is written last, so a
dataset with a manifest is complete.

Sources above ``MAX_PIXELS`` (2.5 MP) are downscaled once, and that working copy
(transform ``downscale_2_5mp``) is the parent of all their other copies, which keeps the
dataset (about 2 GB) and the build time (about a minute on two cores) down; the original
file is kept too, so original <-> copy pairs exist.  Each manifest entry names its
``parent``.

Ground truth (``labels.json`` in the photos folder, applied by ``expected_relation``):

* files made from the same source are duplicates;
* otherwise, two files whose sources are in one ambiguous set are not scored;
* otherwise, files of different groups are distinct (a group is a source plus the
  sources labelled as its duplicates), files of one group are duplicates.

Copies in the ``strong`` category (grayscale, invert, ...) are reported for information
only: paired with their own group they are "ambiguous" (not scored); paired with
anything else they are distinct like every other file.

This module must not import ``dedupd``: the dataset is built before the package is.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import io
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.ExifTags import Base

try:
    from bench import transforms as tf
except ModuleNotFoundError:  # run as a script: bench/ itself is on sys.path
    import transforms as tf  # type: ignore[import-not-found, no-redef]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "dedupd-eval/1"
MAX_PIXELS = 2_500_000
ORIGINAL = "original"  # transform and category name of a source's own copy
WORKING_COPY = "downscale_2_5mp"  # transform name of the downscaled working copy
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
# Mean absolute error (of 255) allowed between an EXIF-rotated copy, as displayed, and
# its parent: JPEG copies are re-encoded at quality 95, 4:4:4 (measured at most 1.8);
# lossless ones must match exactly.
ROTATED_JPEG_TOLERANCE = 3.0

EX_USAGE, EX_NOINPUT, EX_CANTCREAT = 64, 66, 73  # sysexits.h


# The ground truth, as implemented by ``expected_relation`` (copied into the manifest).
RULES = (
    "files made from the same source are duplicates",
    "otherwise, files whose sources share an ambiguous set are not scored (ambiguous)",
    "otherwise, files of different groups are distinct",
    "otherwise (same group) they are duplicates",
    (
        "a pair that would be a duplicate but has a copy from an unscored category "
        "(strong) is ambiguous instead"
    ),
)


class DatasetError(Exception):
    """The dataset could not be built or read."""

    def __init__(self, message: str, exit_code: int = EX_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Relation(enum.StrEnum):
    """What the benchmark expects a detector to say about a pair of files."""

    DUPLICATE = "duplicate"
    DISTINCT = "distinct"
    AMBIGUOUS = "ambiguous"  # not scored


# --- ground truth ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileLabel:
    """What the ground truth needs to know about one file of the dataset."""

    source: str
    group: str
    scored: bool  # False for the strong edits, which are reported for information only
    ambiguous_sets: frozenset[int]  # indices of the manifest's ambiguous sets it is in


@dataclass(frozen=True)
class Manifest:
    """A dataset's manifest (``raw``), indexed for ``expected_relation``."""

    raw: Mapping[str, Any]
    root: Path | None  # the dataset folder, when known
    labels: Mapping[str, FileLabel]  # by path relative to the dataset folder

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], root: Path | None = None) -> Manifest:
        """Index a parsed manifest."""
        unscored = {
            name for name, info in raw["transforms"].items() if not info.get("scored", True)
        }
        member_of: dict[str, set[int]] = {}
        for index, ambiguous in enumerate(raw["ambiguous_sets"]):
            for path in ambiguous["files"]:
                member_of.setdefault(path, set()).add(index)
        labels = {
            entry["path"]: FileLabel(
                entry["source"],
                entry["group"],
                entry["transform"] not in unscored,
                frozenset(member_of.get(entry["path"], ())),
            )
            for entry in raw["files"]
        }
        return cls(raw, root, labels)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read ``DIR/manifest.json`` (``path`` may be the directory or the file)."""
        file = path if path.suffix == ".json" else path / MANIFEST_NAME
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DatasetError(f"cannot read manifest {file}: {error}", EX_NOINPUT) from error
        if raw.get("format") != MANIFEST_FORMAT:
            raise DatasetError(f"{file} is not a {MANIFEST_FORMAT} manifest", EX_NOINPUT)
        return cls.from_json(raw, file.parent)

    def key(self, path: str | os.PathLike[str]) -> str:
        """A file's manifest key: its path relative to the dataset, with '/' separators."""
        if isinstance(path, str) and not os.path.isabs(path) and os.sep == "/":
            return path  # the common case, kept cheap: benchmarks ask about many pairs
        candidate = Path(path)
        if candidate.is_absolute():
            if self.root is None:
                raise KeyError(f"absolute path but no dataset root known: {path}")
            candidate = candidate.relative_to(self.root)
        return PurePosixPath(candidate).as_posix()

    def label(self, path: str | os.PathLike[str]) -> FileLabel:
        """The ground-truth label of a dataset file; KeyError if it is not listed."""
        key = self.key(path)
        try:
            return self.labels[key]
        except KeyError:
            raise KeyError(f"not in the manifest: {key}") from None


def expected_relation(
    manifest: Manifest | Mapping[str, Any], a: str | os.PathLike[str], b: str | os.PathLike[str]
) -> Relation:
    """The expected relation of two dataset files, by the rules of labels.json.

    ``a`` and ``b`` are paths relative to the dataset folder (or absolute paths inside
    it when the manifest was loaded with ``Manifest.load``).  Pass a ``Manifest``: a
    plain dict (the parsed JSON) works too but is re-indexed on every call.

    1. Files made from the same source are duplicates: a resized copy of a file is a
       duplicate of it even when the file is in an ambiguous set.
    2. Files whose sources share an ambiguous set are not scored.
    3. Files of different groups are distinct.
    4. Files of one group are duplicates.

    A pair with a ``strong`` copy that would be a duplicate by rule 1 or 4 is
    ambiguous instead: strong edits are reported for information, not scored.
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_json(manifest)
    first, second = manifest.label(a), manifest.label(b)
    if first.source != second.source:
        if first.ambiguous_sets & second.ambiguous_sets:
            return Relation.AMBIGUOUS
        if first.group != second.group:
            return Relation.DISTINCT
    return Relation.DUPLICATE if first.scored and second.scored else Relation.AMBIGUOUS


@dataclass(frozen=True, slots=True)
class AmbiguousSet:
    """A set of sources whose pairs labels.json leaves unscored, and why."""

    why: str
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Labels:
    """The parts of labels.json the dataset uses."""

    duplicates: tuple[tuple[str, ...], ...]
    ambiguous: tuple[AmbiguousSet, ...]

    @classmethod
    def read(cls, photos: Path) -> Labels:
        file = photos / "labels.json"
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
            return cls(
                tuple(tuple(names) for names in raw.get("duplicates", [])),
                tuple(
                    AmbiguousSet(s.get("why", ""), tuple(s["files"]))
                    for s in raw.get("ambiguous", {}).get("sets", [])
                ),
            )
        except FileNotFoundError:
            return cls((), ())  # no labels: every source is distinct
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise DatasetError(f"cannot read {file}: {error}", EX_NOINPUT) from error

    def named(self) -> set[str]:
        """Every file the labels mention."""
        return {name for group in self.duplicates for name in group} | {
            name for s in self.ambiguous for name in s.sources
        }


def assign_groups(sources: Sequence[str], duplicates: Iterable[Sequence[str]]) -> dict[str, str]:
    """Map each source to its group: the first (sorted) source of its duplicate cluster.

    Clusters are the transitive closure of the duplicate lists (union-find).
    """
    parent = {source: source for source in sources}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for names in duplicates:
        present = [name for name in names if name in parent]
        for other in present[1:]:
            a, b = root(present[0]), root(other)
            parent[max(a, b)] = min(a, b)
    return {source: root(source) for source in sources}


def find_sources(photos: Path) -> list[str]:
    """Image files under the photos folder, relative, with '/' separators, sorted."""
    found = sorted(
        path.relative_to(photos).as_posix()
        for path in photos.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(photos).parts)
    )
    # <stem>__<transform>.<ext> must be unique within a folder.
    stems = Counter(PurePosixPath(rel).with_suffix("").as_posix() for rel in found)
    clashes = sorted(stem for stem, count in stems.items() if count > 1)
    if clashes:
        raise DatasetError(f"sources differing only by extension: {', '.join(clashes)}")
    return found


# --- building (runs in worker processes) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceJob:
    """Everything a worker needs to make the copies of one source."""

    photos: Path
    source: str  # relative to ``photos``
    out: Path
    group: str
    transforms: tuple[str, ...]
    max_pixels: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of the dataset, as listed in the manifest."""

    path: str  # relative to the dataset folder
    source: str  # relative to the photos folder
    transform: str
    category: str
    group: str
    parent: str | None  # the file this one was made from (None for a source's own copy)
    format: str
    width: int  # as stored (an EXIF-rotated copy is stored rotated)
    height: int
    bytes: int
    sha256: str
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON object for this file (``notes`` only when there are some)."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        if not self.notes:
            del data["notes"]
        return data


@dataclass(frozen=True, slots=True)
class Skip:
    """A copy that was not made, and why."""

    source: str
    transform: str
    reason: str


@dataclass(frozen=True, slots=True)
class SourceResult:
    """What a worker made of one source."""

    entries: tuple[Entry, ...]
    skipped: tuple[Skip, ...] = ()


def _write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet, through a hidden temporary name beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(f"refusing to overwrite {path}")
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    os.replace(partial, path)


def _normalised(img: Image.Image) -> Image.Image:
    """The picture as displayed (EXIF orientation applied), in RGB or RGBA, no metadata.

    ``info`` is emptied because some Pillow writers pick metadata up from it (a JPEG
    comment, a PNG's ICC profile): copies carry only what ``encode`` is given.
    """
    shown = ImageOps.exif_transpose(img)
    picture = shown.convert("RGBA" if shown.has_transparency_data else "RGB")
    picture.info.clear()
    return picture


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded source or working copy."""

    picture: Image.Image  # as displayed, RGB or RGBA
    format: str  # Pillow's format name; MPO (multi-picture JPEG) counts as JPEG
    icc_profile: bytes | None  # an RGB profile to carry over to the copies
    stored_size: tuple[int, int]  # before applying the EXIF orientation
    # EXIF (without Orientation) and JPEG comment, as save options: carried over to the
    # working copy, as an editor's export would, so that its metadata copies have
    # something to edit and strip.
    metadata: Mapping[str, object]


def _decode(data: bytes) -> Decoded:
    with Image.open(io.BytesIO(data)) as img:
        fmt = "JPEG" if img.format == "MPO" else str(img.format)
        icc = img.info.get("icc_profile")
        # A grey or CMYK profile would not fit the RGB copies.
        keep_icc = icc if img.mode in ("RGB", "RGBA") else None
        metadata: dict[str, object] = {}
        exif = img.getexif()
        exif.pop(Base.Orientation, None)  # copies are stored as displayed
        if len(exif):
            metadata["exif"] = exif.tobytes()
        if fmt == "JPEG" and img.info.get("comment"):
            metadata["comment"] = img.info["comment"]
        return Decoded(_normalised(img), fmt, keep_icc, img.size, metadata)


def make_source_copies(job: SourceJob) -> SourceResult:
    """Copy one source into the dataset and write all its transformed copies."""
    rel = PurePosixPath(job.source)
    stem = rel.with_suffix("")  # keeps the sub-folder
    data = (job.photos / rel).read_bytes()
    try:
        decoded = _decode(data)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        return SourceResult((), (Skip(job.source, "*", f"unreadable source: {error}"),))
    entries: list[Entry] = []
    skipped: list[Skip] = []

    def add(  # write one file and list it
        path: PurePosixPath,
        blob: bytes,
        *,
        transform: str,
        category: str,
        parent: str | None,
        fmt: str,
        size: tuple[int, int],
        notes: tuple[str, ...] = (),
    ) -> None:
        _write_new(job.out / path, blob)
        entries.append(
            Entry(
                path.as_posix(),
                job.source,
                transform,
                category,
                job.group,
                parent,
                fmt,
                size[0],
                size[1],
                len(blob),
                hashlib.sha256(blob).hexdigest(),
                notes,
            )
        )

    picture, fmt, icc = decoded.picture, decoded.format, decoded.icc_profile
    add(
        rel,
        data,
        transform=ORIGINAL,
        category=ORIGINAL,
        parent=None,
        fmt=fmt,
        size=decoded.stored_size,
    )
    parent_path, parent_data, parent_fmt, parent_size = rel, data, fmt, decoded.stored_size

    width, height = picture.size
    if width * height > job.max_pixels:
        scale = math.sqrt(job.max_pixels / (width * height))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # reducing_gap: a fast box reduction first, then Lanczos; same result to the eye.
        small = picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        encoding = tf.working_copy_encoding(fmt)
        encoded = tf.encode(small, encoding, icc_profile=icc, metadata=decoded.metadata)
        parent_path = PurePosixPath(f"{stem}__{WORKING_COPY}.{encoding.ext}")
        add(
            parent_path,
            encoded.data,
            transform=WORKING_COPY,
            category=tf.Category.RESIZE.value,
            parent=rel.as_posix(),
            fmt=encoding.format,
            size=small.size,
            notes=(f"working copy: downscaled from {width}x{height}", *encoded.notes),
        )
        parent_data, parent_fmt, parent_size = encoded.data, encoding.format, small.size
        # Copies are made from the working copy as written, so each file's ``parent``
        # is exactly what it was made from.
        picture = _decode(parent_data).picture

    for name in job.transforms:
        transform = tf.BY_NAME[name]
        try:
            if transform.rewrite is not None:
                blob = transform.rewrite(parent_data, parent_fmt)
                ext, out_fmt, size = parent_path.suffix.lstrip("."), parent_fmt, parent_size
                notes: tuple[str, ...] = ()
            else:
                result = transform.apply(picture)
                encoding = transform.encoding_for(parent_fmt)
                encoded = tf.encode(
                    result, encoding, icc_profile=icc, orientation=transform.orientation
                )
                blob, ext, out_fmt = encoded.data, encoding.ext, encoding.format
                size, notes = result.size, encoded.notes
        except tf.NotApplicableError as reason:
            skipped.append(Skip(job.source, name, str(reason)))
            continue
        except (OSError, ValueError) as error:  # an encoder refusing this picture
            skipped.append(Skip(job.source, name, f"{type(error).__name__}: {error}"))
            continue
        add(
            PurePosixPath(f"{stem}__{name}.{ext}"),
            blob,
            transform=name,
            category=transform.category.value,
            parent=parent_path.as_posix(),
            fmt=out_fmt,
            size=size,
            notes=notes,
        )
    return SourceResult(tuple(entries), tuple(skipped))


# --- building (main process) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildReport:
    """What ``build_dataset`` made, how long it took, and what it could not make."""

    files: int
    seconds: float
    unavailable: tuple[tuple[str, str], ...]  # (transform, reason)
    skipped: tuple[Skip, ...]


def _prepare_output(out: Path, photos: Path) -> None:
    if out.resolve().is_relative_to(photos.resolve()):
        raise DatasetError(f"the output folder must not be inside the photos folder: {out}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(
            f"{out} exists and is not an empty folder; choose another --out or remove it",
            EX_CANTCREAT,
        )
    out.mkdir(parents=True, exist_ok=True)


def _cost(photos: Path, source: str, max_pixels: int) -> float:
    """A rough relative cost of a source's copies, to hand out the biggest jobs first."""
    try:
        with Image.open(photos / source) as img:
            pixels, lossless = img.width * img.height, img.format != "JPEG"
    except (OSError, UnidentifiedImageError):
        return 0.0
    # PNG copies cost about three times JPEG ones; a large source also pays a decode.
    return min(pixels, max_pixels) * (3.0 if lossless else 1.0) + 0.05 * pixels


def _transform_table(max_pixels: int) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {
        ORIGINAL: {
            "category": ORIGINAL,
            "description": "the source file, copied unchanged",
            "scored": True,
        },
        WORKING_COPY: {
            "category": tf.Category.RESIZE.value,
            "description": f"downscaled (Lanczos) to about {max_pixels / 1e6:g} MP; made only "
            "for larger sources, and the parent of their other copies",
            "scored": True,
        },
    }
    for t in tf.TRANSFORMS:
        table[t.name] = {
            "category": t.category.value,
            "description": t.description,
            "scored": t.category.scored,
        }
    return table


def build_dataset(
    photos: Path,
    out: Path,
    *,
    transforms: Sequence[tf.Transform] = tf.TRANSFORMS,
    limit: int | None = None,
    jobs: int | None = None,
    max_pixels: int = MAX_PIXELS,
    warn: Callable[[str], None] = print,
) -> BuildReport:
    """Write the dataset and its manifest; return what was made and what was skipped."""
    started = time.monotonic()
    if not photos.is_dir():
        raise DatasetError(f"no photos folder at {photos}", EX_NOINPUT)
    labels = Labels.read(photos)
    all_sources = find_sources(photos)
    for name in sorted(labels.named() - set(all_sources)):
        warn(f"warning: labels.json names {name}, which is not in {photos}")
    sources = all_sources[:limit] if limit is not None else all_sources
    if not sources:
        raise DatasetError(f"no images in {photos}", EX_NOINPUT)
    groups = assign_groups(sources, labels.duplicates)

    tf.register_optional_codecs()
    unavailable: list[tuple[str, str]] = []
    usable: list[str] = []
    for t in transforms:
        # Try each fixed encoding on a tiny picture: a missing codec (AVIF, HEIC) or an
        # option this build rejects skips the transform instead of failing every file.
        reason = tf.probe_codec(t.encoding) if t.encoding is not None else None
        if reason is not None:
            unavailable.append((t.name, reason))
            warn(f"warning: skipping {t.name}: {reason}")
        else:
            usable.append(t.name)

    _prepare_output(out, photos)
    source_jobs = sorted(
        (SourceJob(photos, s, out, groups[s], tuple(usable), max_pixels) for s in sources),
        key=lambda job: -_cost(photos, job.source, max_pixels),
    )
    entries: list[Entry] = []
    skipped: list[Skip] = []
    with ProcessPoolExecutor(jobs, initializer=tf.register_optional_codecs) as pool:
        for result in pool.map(make_source_copies, source_jobs):
            entries.extend(result.entries)
            skipped.extend(result.skipped)
    entries.sort(key=lambda e: e.path)
    skipped.sort(key=lambda s: (s.transform, s.source))

    files_of: dict[str, list[str]] = {}
    for entry in entries:
        files_of.setdefault(entry.source, []).append(entry.path)
    members: dict[str, list[str]] = {}
    for source, group in sorted(groups.items()):
        members.setdefault(group, []).append(source)
    chosen = set(sources)
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "photos": str(photos.resolve()),
        "max_pixels": max_pixels,
        "rules": RULES,
        "categories": {c.value: {"scored": c.scored} for c in tf.Category},
        "transforms": _transform_table(max_pixels),
        "unavailable": [{"transform": n, "reason": r} for n, r in unavailable],
        "skipped": [asdict(s) for s in skipped],
        "groups": members,
        "ambiguous_sets": [
            {
                "why": a.why,
                "sources": [s for s in a.sources if s in chosen],
                "files": sorted(p for s in a.sources for p in files_of.get(s, [])),
            }
            for a in labels.ambiguous
        ],
        "files": [e.to_json() for e in entries],
    }
    target = out / MANIFEST_NAME
    partial = out / f".{MANIFEST_NAME}.part"
    partial.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, target)
    return BuildReport(len(entries), time.monotonic() - started, tuple(unavailable), tuple(skipped))


# --- checking ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckJob:
    """One manifest entry to check, with its parent's entry."""

    root: Path
    entry: Mapping[str, Any]
    parent: Mapping[str, Any] | None


def _pixels(img: Image.Image) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.asarray(img.convert("RGBA" if img.has_transparency_data else "RGB"))


def check_entry(job: CheckJob) -> list[str]:
    """Problems with one file: missing, changed, unreadable, or not matching its parent."""
    entry, path = job.entry, job.root / job.entry["path"]
    where = entry["path"]
    try:
        data = path.read_bytes()
    except OSError as error:
        return [f"{where}: cannot read: {error}"]
    problems: list[str] = []
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        problems.append(f"{where}: content differs from the manifest")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            stored, fmt = img.copy(), ("JPEG" if img.format == "MPO" else str(img.format))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        return [*problems, f"{where}: does not open with Pillow: {error}"]
    if stored.size != (entry["width"], entry["height"]):
        problems.append(
            f"{where}: size {stored.size} but manifest says {(entry['width'], entry['height'])}"
        )
    if job.parent is None or entry["category"] not in ("metadata", "exif_rotated"):
        return problems

    parent_data = (job.root / job.parent["path"]).read_bytes()
    with Image.open(io.BytesIO(parent_data)) as parent_img:
        parent_img.load()
        parent_stored = parent_img.copy()
    if entry["category"] == "metadata":
        if tf.coded_image_data(data, fmt) != tf.coded_image_data(parent_data, fmt):
            problems.append(f"{where}: coded image data differ from {job.parent['path']}")
        if not np.array_equal(_pixels(stored), _pixels(parent_stored)):
            problems.append(f"{where}: decoded pixels differ from {job.parent['path']}")
    else:  # exif_rotated: as displayed, the copy must look like its parent as displayed
        shown, parent = ImageOps.exif_transpose(stored), ImageOps.exif_transpose(parent_stored)
        if shown.size != parent.size:
            problems.append(f"{where}: displayed size {shown.size} != parent {parent.size}")
        else:
            mean_error = float(np.abs(_pixels(shown).astype(np.int16) - _pixels(parent)).mean())
            limit = ROTATED_JPEG_TOLERANCE if fmt == "JPEG" else 0.0
            if mean_error > limit:
                problems.append(
                    f"{where}: displayed picture differs from its parent "
                    f"(mean error {mean_error:.2f} > {limit})"
                )
    return problems


def check_dataset(root: Path, jobs: int | None = None) -> tuple[int, list[str]]:
    """Check every file of a dataset; return the number checked and the problems found."""
    manifest = Manifest.load(root)
    files = manifest.raw["files"]
    by_path = {entry["path"]: entry for entry in files}
    check_jobs = [
        CheckJob(root, entry, by_path.get(entry["parent"]) if entry["parent"] else None)
        for entry in files
    ]
    problems: list[str] = []
    listed = set(by_path) | {MANIFEST_NAME}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.relative_to(root).as_posix() not in listed:
            problems.append(f"{path.relative_to(root).as_posix()}: not in the manifest")
    with ProcessPoolExecutor(jobs, initializer=tf.register_optional_codecs) as pool:
        for found in pool.map(check_entry, check_jobs, chunksize=16):
            problems.extend(found)
    return len(files), problems


# --- command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build (or check) the evaluation dataset of the dedupd accuracy benchmark.",
    )
    parser.add_argument("--photos", type=Path, help="the source photos folder (read only)")
    parser.add_argument("--out", type=Path, help="the dataset folder to create (must be empty)")
    parser.add_argument(
        "--transforms",
        metavar="NAMES",
        help="comma-separated transform and/or category names (default: all)",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="only the first N sources (sorted by path)"
    )
    parser.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: CPUs)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="verify the dataset in --out (after building it, if --photos)",
    )
    parser.add_argument("--list", action="store_true", help="list the transforms and exit")
    return parser


def _print_transforms() -> None:
    for category, members in tf.by_category():
        note = "" if category.scored else "  (information only, not scored)"
        print(f"{category.value}{note}")
        for t in members:
            print(f"  {t.name:20} {t.description}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        _print_transforms()
        return 0
    if args.out is None or (args.photos is None and not args.check):
        _parser().error("--out and --photos are required (only --out with --check alone)")
    if args.limit is not None and args.limit < 1:
        _parser().error("--limit must be at least 1")
    try:
        chosen = tf.select(args.transforms)
    except KeyError as unknown:
        _parser().error(f"unknown transform or category {unknown}; see --list")

    def warn(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        if args.photos is not None:
            report = build_dataset(
                args.photos,
                args.out,
                transforms=chosen,
                limit=args.limit,
                jobs=args.jobs,
                warn=warn,
            )
            reasons = Counter((s.transform, s.reason) for s in report.skipped)
            for (name, reason), count in sorted(reasons.items()):
                warn(f"warning: {name} skipped for {count} source(s): {reason}")
            print(
                f"wrote {report.files} files and {args.out / MANIFEST_NAME} "
                f"in {report.seconds:.1f} s"
            )
        if args.check:
            started = time.monotonic()
            checked, problems = check_dataset(args.out, args.jobs)
            for problem in problems:
                print(f"check: {problem}", file=sys.stderr)
            print(
                f"checked {checked} files in {time.monotonic() - started:.1f} s: "
                f"{len(problems)} problem(s)"
            )
            if problems:
                return 1
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
