"""Deciding whether two fingerprints are the same picture, and which is the original.

Pure functions over :class:`~dedupd.models.Fingerprint` values: the store
and the index only find candidates; every verdict, in a scan, in the daemon
and in ``dedupd compare``, is made here, and says why.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from dedupd import errors, verify
from dedupd.config import Config, KeepRule, MatchSettings
from dedupd.hashing import VERIFY_SIDE, colour_distance, hamming, verification_pixels
from dedupd.models import (
    Distances,
    FileStat,
    Fingerprint,
    Hashes,
    Match,
    Orientation,
    Record,
    Tier,
    Verdict,
)

_ORIENTATION_WORDS = {
    Orientation.IDENTITY: "",
    Orientation.ROT90: ", rotated 90°",
    Orientation.ROT180: ", rotated 180°",
    Orientation.ROT270: ", rotated 270°",
    Orientation.MIRROR: ", mirrored",
    Orientation.MIRROR_ROT90: ", mirrored and rotated 90°",
    Orientation.MIRROR_ROT180: ", flipped upside down",
    Orientation.MIRROR_ROT270: ", mirrored and rotated 270°",
}

INVERSE = {
    Orientation.ROT90: Orientation.ROT270,
    Orientation.ROT270: Orientation.ROT90,
}


def similarity(d: Distances) -> float:
    """One percentage for a pair: 100 minus the mean share of differing hash bits."""
    return round(100.0 * (1.0 - (d.phash + d.dhash) / 128.0), 1)


def compare(
    new: Fingerprint,
    old: Fingerprint,
    settings: MatchSettings,
    pixels: tuple[np.ndarray, np.ndarray] | None = None,
    closer: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
) -> Verdict:
    """Is ``new`` a copy of ``old``?  The strongest tier that holds, with its reason.

    ``pixels``: both pictures as :func:`~dedupd.hashing.verification_pixels`
    returns them, for the pixel verifier.  Without them only the exact and
    pixel tiers can be decided; a pair whose hashes look alike is at most
    ``similar``, since the hashes cannot see what differs.

    ``closer``: both pictures again, the longer side at most the side it is
    given, for the verifier's second look at a page-like pair
    (:func:`~dedupd.verify.second_look_side`).  Without it such a pair is
    judged at the working size alone (``near`` when nothing differs there);
    when it raises :class:`~dedupd.errors.FileSkipped`, the pair is
    ``similar`` at most.
    """
    zero = Distances(0, 0, 0.0)
    if new.sha256 == old.sha256:
        return Verdict(
            Match(Tier.EXACT, zero, 100.0, Orientation.IDENTITY, "identical bytes (same SHA-256)"),
            "identical bytes",
            zero,
            new_inside=True,
            old_inside=True,
        )
    if new.pixel_digest == old.pixel_digest:
        reason = "the same picture data; only metadata (EXIF, XMP, ICC, comments) differs"
        return Verdict(
            Match(Tier.PIXEL, zero, 100.0, Orientation.IDENTITY, reason), reason, zero, new_inside=True, old_inside=True
        )

    identity = _distances(new.hashes, old.hashes)
    low = min(new.detail, old.detail)
    if low < settings.min_detail:
        return Verdict(
            None,
            f"not compared perceptually: too little detail to tell pictures apart "
            f"(detail {low:.1f} < {settings.min_detail:g}; flat or nearly flat)",
            identity,
        )

    tried: list[tuple[Orientation, Distances]] = [(Orientation.IDENTITY, identity)]
    if settings.rotations:
        tried.extend(
            (o, _distances(h, old.hashes)) for o, h in new.variants if _geometry_agrees(new, old, o)
        )
    passing = sorted(((o, d) for o, d in tried if _passes(d, settings)), key=lambda od: _score(od[1]))
    best = passing[0] if passing else None
    if pixels is None:
        if best is None:
            return Verdict(None, _why_not(identity, settings), identity)
        orientation, d = best
        reason = (
            f"looks alike{_ORIENTATION_WORDS[orientation]} by its hashes: pHash {d.phash}/64 bits "
            f"apart (limit {settings.near_distance}), dHash {d.dhash}/64 "
            f"(limit {settings.verify_distance}), colour difference {d.colour:.1f} "
            f"(limit {settings.colour_distance:g}); not verified on pixels: similar at most"
        )
        return Verdict(Match(Tier.SIMILAR, d, similarity(d), orientation, reason), reason, d)

    # the pixel verifier: identity, and the turns the hashes point at
    orientations = [Orientation.IDENTITY]
    orientations += [o for o, d in passing if o is not Orientation.IDENTITY][:2]
    check = verify.verify(pixels[0], pixels[1], orientations, looks_alike=best is not None)
    if check.tier is not Tier.NEAR and settings.rotations:
        # the features lined the pictures up by a quarter or half turn: a turn is not an edit's
        # small rotation, so that alignment cannot say near, yet it can outrank the same turn
        # tried as an orientation (or the hashes of a flat design did not point at the turn).
        # Try the turn alone, where the frames' shapes agree.
        seen = [o for o in _turns_seen(check.angle) if _geometry_agrees(new, old, o)]
        if seen:
            turned = verify.verify(pixels[0], pixels[1], seen, looks_alike=best is not None)
            if turned.tier is Tier.NEAR:
                check = turned
    if closer is not None:
        check = _closer_look(new, old, pixels, closer, check)
    d = dict(tried).get(check.orientation, identity)
    if check.tier is None:
        return Verdict(None, check.reason, d, framing_only=check.framing_only)
    match = Match(check.tier, d, check.similarity, check.orientation, check.reason)
    return Verdict(
        match, check.reason, d, new_inside=check.new_inside, old_inside=check.old_inside, framing_only=check.framing_only
    )


def _closer_look(
    new: Fingerprint,
    old: Fingerprint,
    pixels: tuple[np.ndarray, np.ndarray],
    closer: Callable[[int], tuple[np.ndarray, np.ndarray]],
    check: verify.Check,
) -> verify.Check:
    """The verifier's closer looks, where ``check`` calls for one: a ``similar`` pair that may be
    a watermarked copy, then a ``near`` pair of pages (a page under a watermark too)."""
    sides = (max(new.width, new.height), max(old.width, old.height))
    if check.tier is Tier.SIMILAR:
        side = verify.overlay_look_side(*pixels, *sides, check)
        if not side:
            return check
        try:
            fine = closer(side)
        except errors.FileSkipped:
            return check  # similar, as it was
        check = verify.overlay_look(*fine, *pixels, check)
    if check.tier is not Tier.NEAR:
        return check
    side = verify.second_look_side(*pixels, *sides)
    if not side:
        return check
    try:
        fine = closer(side)
    except errors.FileSkipped as exc:
        reason = (
            f"similar at most: a page-like pair is looked at again closer, and {exc.path} could not be "
            f"re-read ({exc.cause}); at the working size: {check.reason}"
        )
        return replace(check, tier=Tier.SIMILAR, reason=reason)
    return verify.second_look(*fine, *pixels, check)


class PixelSource(Protocol):
    """Where the pixels of another host's file come from (a store several hosts
    share: :class:`dedupd.exchange.Exchange`)."""

    def pixels(self, record: Record, side: int) -> np.ndarray | None:
        """``record``'s pixels as :func:`~dedupd.hashing.verification_pixels` gives
        them at ``side``, or None when they are not to be had yet (asked for)."""


def verdict_for(new: Record, old: Record, settings: MatchSettings, elsewhere: PixelSource | None = None) -> Verdict:
    """Is the file ``new`` a copy of the file ``old``?  The one entry point for
    stored files: grouping asks this, never :func:`compare` directly.

    Both files are re-read for the pixel verifier (the last few are kept
    decoded).  When one cannot be re-read, or is no longer the version that
    was fingerprinted, the pair is judged on its hashes alone, which never
    says ``near``.  A file of another host is not read here: its pixels come
    from ``elsewhere`` (its host shares them when asked), and until they do,
    the pair is judged on its hashes alone too.
    """
    assert new.fingerprint is not None and old.fingerprint is not None
    nf, of = new.fingerprint, old.fingerprint
    if nf.sha256 == of.sha256 or nf.pixel_digest == of.pixel_digest or min(nf.detail, of.detail) < settings.min_detail:
        return compare(nf, of, settings)
    try:
        pixels = (_pixels(new, elsewhere), _pixels(old, elsewhere))
    except errors.FileSkipped as exc:
        hashed = compare(nf, of, settings)
        why = f"{UNREAD} {exc.path} to verify it ({exc.cause})"
        if hashed.match is None:
            return Verdict(None, f"{hashed.reason}; {why}", hashed.distances)
        reason = f"{hashed.match.reason}; {why}"
        return Verdict(replace(hashed.match, reason=reason), reason, hashed.distances)

    def closer(side: int) -> tuple[np.ndarray, np.ndarray]:
        return _read(new, side, elsewhere), _read(old, side, elsewhere)

    return compare(nf, of, settings, pixels, closer)


#: the reason of a pair judged on hashes alone because a file could not be read
#: (gone from its recorded name, say): placed again once the file is seen again
UNREAD = "could not re-read"


# The last few pictures decoded for the verifier, by path and file version:
# a new file is compared with several stored ones in a row.  Module state,
# confined here; a few MB at most.
_PIXEL_CACHE: OrderedDict[tuple[Path, FileStat], np.ndarray] = OrderedDict()
_PIXEL_CACHE_SIZE = 8


def _read(record: Record, side: int, elsewhere: PixelSource | None) -> np.ndarray:
    """``record``'s pixels at ``side``: read here, or shared by its host (another
    host's path names a file on that host, and a file here at the same path is
    another file: it is never read)."""
    if record.host is None:
        return verification_pixels(record.path, expected=record.stat, side=side)
    found = elsewhere.pixels(record, side) if elsewhere is not None else None
    if found is None:
        asked = "; its pixels were asked of that host" if elsewhere is not None else ""
        raise errors.FileSkipped(record.path, f"it is on host {record.host}, not here{asked}")
    return found


def _pixels(record: Record, elsewhere: PixelSource | None) -> np.ndarray:
    if record.host is not None:
        return _read(record, VERIFY_SIDE, elsewhere)
    key = (record.path, record.stat)
    cached = _PIXEL_CACHE.get(key)
    if cached is not None:
        _PIXEL_CACHE.move_to_end(key)
        return cached
    pixels = _read(record, VERIFY_SIDE, elsewhere)
    _PIXEL_CACHE[key] = pixels
    while len(_PIXEL_CACHE) > _PIXEL_CACHE_SIZE:
        _PIXEL_CACHE.popitem(last=False)
    return pixels


_QUARTER_TURNS = frozenset(
    {Orientation.ROT90, Orientation.ROT270, Orientation.MIRROR_ROT90, Orientation.MIRROR_ROT270}
)


#: how far (degrees) from a quarter or half turn an alignment may be to point at that turn
TURN_SEEN_SLACK = 10.0


def _turns_seen(angle: float) -> list[Orientation]:
    """The turns (no mirror: an alignment cannot mirror) an alignment rotated by ``angle`` degrees may be."""
    a = abs(angle)
    if abs(a - 90.0) <= TURN_SEEN_SLACK:
        return [Orientation.ROT90, Orientation.ROT270]
    if a >= 180.0 - TURN_SEEN_SLACK:
        return [Orientation.ROT180]
    return []


def _geometry_agrees(new: Fingerprint, old: Fingerprint, orientation: Orientation) -> bool:
    """A quarter turn of a landscape picture is a portrait: try one only when it
    brings the shapes closer (or both are nearly square)."""
    if orientation not in _QUARTER_TURNS:
        return True
    old_shape = math.log(old.width / old.height)
    kept = abs(math.log(new.width / new.height) - old_shape)
    turned = abs(math.log(new.height / new.width) - old_shape)
    return turned <= kept + 0.1


def closeness(new: Fingerprint, old: Fingerprint, settings: MatchSettings) -> float:
    """How close two pictures look by their hashes, smaller is closer: the
    order in which candidates are verified when there are too many.  A crop
    key near the other's pHash (a cropped or padded copy) counts as its pHash
    distance twice, as if the dHash were as far."""
    scores = [_score(_distances(new.hashes, old.hashes))]
    if settings.rotations:
        scores += [_score(_distances(h, old.hashes)) for o, h in new.variants if _geometry_agrees(new, old, o)]
    scores += [2.0 * hamming(new.hashes.phash, k) for k in old.crop_keys]
    scores += [2.0 * hamming(k, old.hashes.phash) for k in new.crop_keys]
    return min(scores)


def _distances(a: Hashes, b: Hashes) -> Distances:
    return Distances(
        phash=hamming(a.phash, b.phash),
        dhash=hamming(a.dhash, b.dhash),
        colour=colour_distance(a.colour, b.colour),
    )


def _passes(d: Distances, s: MatchSettings) -> bool:
    return (
        d.phash <= s.near_distance
        and d.dhash <= s.verify_distance
        and d.colour <= s.colour_distance
    )


def _score(d: Distances) -> float:
    return d.phash + d.dhash + d.colour / 8.0


def _why_not(d: Distances, s: MatchSettings) -> str:
    failed = []
    if d.phash > s.near_distance:
        failed.append(f"pHash {d.phash}/64 bits apart (limit {s.near_distance})")
    if d.dhash > s.verify_distance:
        failed.append(f"dHash {d.dhash}/64 bits apart (limit {s.verify_distance})")
    if d.colour > s.colour_distance:
        failed.append(f"colour difference {d.colour:.1f} (limit {s.colour_distance:g})")
    if not failed:  # identity passed nowhere only when rotations were off
        failed.append("no orientation matched")
    return "different pictures: " + ", ".join(failed)


# --- which one is the original ------------------------------------------------


class Decision(enum.Enum):
    KEEP_OLD = "old"  # the stored file is the original
    KEEP_NEW = "new"  # the new file is the original; the stored one is the duplicate
    TIE = "tie"  # no rule decides: record the pair, act on neither


def is_under(path: Path, dirs: tuple[Path, ...]) -> bool:
    return any(path == d or path.is_relative_to(d) for d in dirs)


def choose_original(
    new: Record, old: Record, config: Config, references_elsewhere: Mapping[str, tuple[Path, ...]] | None = None
) -> tuple[Decision, str]:
    """Apply the configured keep rules in order; the first that decides wins.

    ``reference`` asks each file's own host: this host's ``reference_dirs``
    for its files, ``references_elsewhere`` (by host name, each host's as it
    recorded them in a store several hosts share) for another host's.

    ``first_seen`` compares ``Record.seq``, which belongs to the path (kept
    across new versions and renames), so touching, re-tagging or a remount
    never changes the answer.
    """
    assert new.fingerprint is not None and old.fingerprint is not None
    nf, of = new.fingerprint, old.fingerprint
    formats = [f.upper() for f in config.preferred_formats]

    def fmt_rank(f: Fingerprint) -> int:
        return formats.index(f.format.upper()) if f.format.upper() in formats else len(formats)

    for rule in config.keep:
        if rule is KeepRule.REFERENCE:
            # reference_dirs are each host's own: another host's path under the
            # same name as one of this host's is not in it, but in its host's
            a, b = (
                is_under(r.path, config.reference_dirs) if r.host is None
                else is_under(r.path, (references_elsewhere or {}).get(r.host, ()))
                for r in (new, old)
            )  # fmt: skip
            key_new, key_old = (0 if a else 1), (0 if b else 1)
        elif rule is KeepRule.HIGHEST_RESOLUTION:
            key_new, key_old = -nf.pixels, -of.pixels
        elif rule is KeepRule.LARGEST_FILE:
            # a larger file is taken as less compressed; between files with the
            # same picture data the difference is only metadata, and re-tagging
            # must not change which one is the original
            same_picture = nf.pixel_digest == of.pixel_digest
            key_new, key_old = (0, 0) if same_picture else (-new.stat.size, -old.stat.size)
        elif rule is KeepRule.PREFERRED_FORMAT:
            key_new, key_old = fmt_rank(nf), fmt_rank(of)
        elif rule is KeepRule.OLDEST:
            key_new, key_old = new.stat.mtime_ns, old.stat.mtime_ns
        else:  # FIRST_SEEN
            key_new, key_old = new.seq, old.seq
        if key_new != key_old:
            winner = Decision.KEEP_NEW if key_new < key_old else Decision.KEEP_OLD
            return winner, f"kept by rule {rule.value}"
    return Decision.TIE, "no keep rule tells them apart: no action"
