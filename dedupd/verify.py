"""Pixel-level verification: is a candidate pair the same picture, edited?

Pure: two pictures as pixels in (RGB arrays, the longer side at most
:data:`~dedupd.hashing.VERIFY_SIDE`, as :func:`dedupd.hashing.verification_pixels`
returns them), an aligned comparison and a verdict with its reason out.
Only :mod:`dedupd.matching` calls it.

How it decides:

1. Align.  The new picture is turned into each orientation the caller allows,
   then mapped onto the stored one by a similarity transform (scale, rotation,
   shift) found two ways: ORB features matched with RANSAC (crops, pads, small
   rotations, any scale), and the frames' content boxes after trimming uniform
   borders (flat pictures with too few features).  The alignment that leaves
   the smaller residual wins.
2. Compare, in the frame of the smaller of the two (never upsampling), after a
   global gain and offset on grey (mild brightness and contrast edits):
   a pixel *differs* when it lies outside the range of its 3x3 neighbourhood
   in the other picture by more than :data:`PIXEL_TOLERANCE` (one pixel of
   misregistration, resampling and compression noise are tolerated; a moved
   arm, parallax, a changed line of text are not).  A differing pixel is
   *overlaid* when it is the other picture's pixel blended with white or black
   at one consistent opacity up to :data:`MAX_OVERLAY_ALPHA` over textured
   content (a light watermark); elsewhere it is *changed*.
3. Decide.  ``near`` needs a geometry that an edit makes (one frame inside
   the other, or a small rotation about the centre), no cell of the
   :data:`CELL`-pixel grid with changed pixels, little overlay and colours
   that a mild edit explains.  Otherwise ``similar`` when the pictures still
   line up (most of the frame agrees, or the hashes already said they look
   alike): another capture, or a copy changed in a region or strongly
   recoloured.  Otherwise different.
4. Look again, closer (:func:`second_look`), at a ``near`` pair of page-like
   pictures reduced at least :data:`FINE_GAIN`-fold: the caller re-reads both
   larger, and a mark of one where the other is blank (a changed figure in
   small print) makes the pair ``similar``.

OpenCV (headless) does the feature matching and warping: a 60 MB wheel,
30 ms to import, a few milliseconds per pair at this size; scikit-image would
need the same ORB/RANSAC in Python and is several times slower per pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from PIL import Image

from dedupd.hashing import VARIANT_TRANSPOSES, content_box
from dedupd.models import Orientation, Tier

#: grey levels (of 255) a pixel may lie outside its neighbourhood's range in
#: the other picture and still count as the same
PIXEL_TOLERANCE = 24.0
#: share of the local contrast (3x3 range) added to the tolerance at edges
EDGE_SLACK = 0.25
#: chroma levels (Cb or Cr, of 255) a pixel may lie outside its neighbourhood's
#: range in the other picture, once the chroma channels are fitted to each
#: other as a whole, and still count as the same (applied only where the
#: colours changed mildly as a whole: otherwise the pair is not near anyway)
CHROMA_TOLERANCE = 12.0
#: side (pixels of the compared frame) of the blocks on which colour alone is compared
CHROMA_BLOCK = 4
#: a change of colour alone counts in an area at least this many blocks wide and high
RECOLOURED_AREA = 3
#: side of the grid cells in which changes are counted (pixels of the compared frame)
CELL = 16
#: a cell with at least this many changed pixels differs (isolated specks are noise)
CELL_CHANGED_PIXELS = 3
#: the most opaque white or black overlay still taken as a light watermark
MAX_OVERLAY_ALPHA = 0.75
#: how far (grey levels, in any channel) a pixel may be from the layer fitted to it
FIT_MISFIT = 8.0
#: spread of the channels (grey levels) a pixel needs under an overlay for its opacity to be measured
OVERLAY_MIN_SPREAD = 5.0
#: at most this share of the compared area may be covered by an overlay, for ``near``
MAX_OVERLAY_SHARE = 0.04
#: the smaller picture must lie this much inside the larger one for a crop or pad
CONTAINED = 0.97
#: mean residual of the chroma channels (of 255) that a mild colour edit leaves at most
MAX_CHROMA_RESIDUAL = 6.0
#: the contrast change (the grey-level gain of the fit, either way) a mild
#: brightness or contrast edit makes at most: edits of 10% and a gamma of
#: 0.9 or 1.1 measure 0.78-1.11 on the shared photos; a light and a dark
#: render of one design measure 0.46-0.54 (a colourway, not an edit)
MAX_CONTRAST_CHANGE = 1.5
#: the turn of hue (degrees, the chroma-weighted mean over the coloured pixels)
#: a mild colour edit makes at most.  The per-channel fit above does not see a
#: turn of hue in a muted picture, whose colours lie along one line: a hue
#: rotation of 60° left a residual under MAX_CHROMA_RESIDUAL on 21 of 43 shared
#: photos.  Measured on them: a 5° hue rotation turns 6.4° at most, saturation,
#: contrast, gamma and brightness edits 2.5°, a 10% warm white balance (red up,
#: blue down) 22°; a 60° rotation 50-73°, the LXDE colourways 99-136°
MAX_HUE_TURN = 25.0
#: chroma (distance from grey in Cb/Cr, of 255) a pixel needs in both pictures for its hue to count
HUE_MIN_CHROMA = 10.0
#: share of the compared pixels that must be coloured for the turn of hue to be judged
HUE_MIN_SHARE = 0.01
#: share of the frame that may differ for a pair that lines up to be ``similar``
MAX_SIMILAR_DIFFERS = 0.6
#: the smallest picture (shorter side, pixels) that can be verified at all:
#: below it the motion between two video frames is finer than a pixel even
#: where the picture has texture, and a frame cannot be told from the next
MIN_SIDE = 56
#: features matched consistently by RANSAC to trust a feature alignment
MIN_INLIERS = 12
#: a compared frame whose shorter side is below this is *small*: one pixel of
#: tolerance there is over 1% of the frame, and the motion between two video
#: frames (or two shots of a burst) falls inside it
SMALL_FRAME = 160
#: side of the blocks in which a small frame's local motion is measured (pixels)
MOTION_CELL = 8
#: a block has moved when its content lies this far (pixels of the compared
#: frame) from where the alignment puts it, once a smooth (affine) field of
#: alignment error is taken out
MOTION_SHIFT = 0.5
#: at most this share of the textured blocks of a small frame may have moved, for ``near``
MAX_MOVED_SHARE = 0.2
#: fewer blocks than this that moved are noise (a sharpened or re-encoded edge), not motion
MIN_MOVED_BLOCKS = 3
#: gradient energy (grey levels squared per pixel, smaller eigenvalue) a block
#: needs in both directions for its motion to be measured
MOTION_MIN_TEXTURE = 4.0


@dataclass(frozen=True, slots=True)
class Check:
    """The verifier's answer for one pair."""

    tier: Tier | None  # NEAR, SIMILAR, or None for different pictures
    orientation: Orientation
    reason: str
    differs: float  # share of the compared area whose content differs, 0..1
    residual: float  # mean grey residual over the compared area, 0..255
    #: for ``near`` only: the new picture's content (uniform borders trimmed)
    #: lies inside the stored one's frame, so every part of it was compared
    #: (the new one is a resize, crop, turn, pad or border of the stored one)
    new_inside: bool = False
    #: for ``near`` only: the stored picture's content lies inside the new one's frame
    old_inside: bool = False
    #: the rotation of the alignment found, in degrees (counter-clockwise turns the new picture back)
    angle: float = 0.0
    #: the alignment found (2x3, maps the turned new picture's working pixels onto the stored one's)
    matrix: tuple[float, ...] | None = None
    #: not ``near`` only because the frames are not one inside the other: nothing else differs
    framing_only: bool = False
    #: ``similar`` only because a few cells differ, with an edit's geometry and colours: a
    #: watermark may be what differs (:func:`overlay_look` looks closer); those cells, in the
    #: compared frame (the new picture's when ``base_is_new``, else the stored one's)
    hot: np.ndarray | None = field(default=None, compare=False)
    base_is_new: bool = False

    @property
    def similarity(self) -> float:
        """Percent of the compared area that agrees."""
        return round(100.0 * (1.0 - self.differs), 1)


@dataclass(frozen=True, slots=True)
class _Aligned:
    """One alignment's measurements."""

    matrix: tuple[float, ...]  # 2x3, maps the new picture (working pixels) onto the old
    method: str
    covered_new: float  # share of the new frame that lands in the old one
    covered_old: float
    residual: float
    changed_cells: int
    cells: int
    differs: float
    overlay: float
    chroma: float
    gain: float
    where: str
    geometry: str  # words: "cropped 4.8% left", "rotated 3.0°", ...
    edit_like: bool  # the geometry is one an edit makes
    #: the cells (CELL px) whose content differs, in the compared frame; None when nothing was compared
    hot: np.ndarray | None = None
    #: the compared frame is the new picture's (it is the smaller one), else the old one's
    base_is_new: bool = False
    moved: float = 0.0  # small frames only: share of the textured blocks whose content moved
    hue: float = 0.0  # the turn of hue, degrees (0 where too few pixels are coloured to say)


def verify(
    new: np.ndarray,
    old: np.ndarray,
    orientations: Sequence[Orientation],
    *,
    looks_alike: bool,
) -> Check:
    """Compare the pixels of a new picture with a stored one.

    ``orientations``: the orientations of ``new`` to try (each turns the new
    picture into the stored one), identity first.  ``looks_alike``: the
    hashes already say the two look alike, which makes a pair that fails
    to line up closely ``similar`` rather than different.
    """
    if min(new.shape[:2]) < MIN_SIDE or min(old.shape[:2]) < MIN_SIDE:
        tier = Tier.SIMILAR if looks_alike else None
        return Check(
            tier,
            Orientation.IDENTITY,
            f"too small to verify on pixels ({_size(new)} and {_size(old)})"
            + ("; the hashes look alike: similar at most" if looks_alike else ""),
            1.0,
            255.0,
        )
    best: tuple[Orientation, _Aligned] | None = None
    for orientation in orientations:
        turned = _turn(new, orientation)
        for aligned in _alignments(turned, old):
            if best is None or _rank(aligned) < _rank(best[1]):
                best = (orientation, aligned)
    if best is None:  # pragma: no cover - the frame alignment always exists
        return Check(None, Orientation.IDENTITY, "could not align the pictures", 1.0, 255.0)
    orientation, a = best
    check = replace(
        _decide(orientation, a, looks_alike), angle=math.degrees(math.atan2(a.matrix[3], a.matrix[0])), matrix=a.matrix
    )
    if (
        check.tier is Tier.SIMILAR and a.edit_like and a.changed_cells and a.differs <= OVERLAY_LOOK_SHARE
        and a.moved <= MAX_MOVED_SHARE and a.overlay <= MAX_OVERLAY_SHARE and _mild(a)
    ):  # fmt: skip
        check = replace(check, hot=a.hot, base_is_new=a.base_is_new)
    if check.tier is Tier.NEAR:
        new_inside, old_inside = _contents_inside(a, _grey(_turn(new, orientation)), _grey(old))
        check = replace(check, new_inside=new_inside, old_inside=old_inside)
    return check


def difference_map(new: np.ndarray, old: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Where two pictures differ, for a person to see.

    The pictures are aligned as :func:`verify` aligns them (``orientation``
    turns ``new`` into ``old``); the result is the frame they are compared
    in (the smaller picture, as RGB), dimmed, with every cell whose content
    differs from the other picture tinted red.  No cell tinted: the verifier
    found no region that differs.
    """
    turned = _turn(new, orientation)
    if min(turned.shape[:2]) < MIN_SIDE or min(old.shape[:2]) < MIN_SIDE:
        return old.copy()
    a = min(_alignments(turned, old), key=_rank)
    base = turned if a.base_is_new else old
    out = base.astype(np.float32) * 0.6 + 40.0
    if a.hot is not None and a.hot.any():
        h, w = base.shape[:2]
        mask = np.kron(a.hot, np.ones((CELL, CELL), dtype=bool))[:h, :w]
        out[mask] = out[mask] * 0.35 + np.array([255.0, 0.0, 0.0], dtype=np.float32) * 0.65
    return np.asarray(np.clip(out, 0, 255), dtype=np.uint8)


def _decide(orientation: Orientation, a: _Aligned, looks_alike: bool) -> Check:
    turned = _ORIENTATION_WORDS[orientation]
    geometry = ", ".join(w for w in (turned, a.geometry) if w) or "same framing"
    residual = f"residual {a.residual:.1f}/255"
    still = a.moved <= MAX_MOVED_SHARE
    mild = _mild(a)
    if a.edit_like and a.changed_cells == 0 and still and a.overlay <= MAX_OVERLAY_SHARE and mild:
        extra = f", {a.overlay:.1%} under a light overlay (watermark)" if a.overlay >= 0.001 else ""
        reason = f"the same picture: {geometry}; {residual}, no region differs{extra}"
        return Check(Tier.NEAR, orientation, reason, a.differs, a.residual)
    lines_up = a.differs <= MAX_SIMILAR_DIFFERS and a.gain > 0
    if a.changed_cells:
        what = f"{a.differs:.0%} of the frame differs" + (f", {a.where}" if a.where else "")
    elif not still:
        what = f"{a.moved:.0%} of the frame moved by a pixel or less (a small picture, motion finer than its pixels)"
    elif a.overlay > MAX_OVERLAY_SHARE:
        what = f"{a.overlay:.0%} of the frame is covered by an overlay (banner or large watermark)"
    elif a.chroma > MAX_CHROMA_RESIDUAL or a.gain <= 0:
        what = f"strongly recoloured (colour residual {a.chroma:.1f}/255)"
    elif abs(a.hue) > MAX_HUE_TURN:
        what = f"strongly recoloured (hue turned {abs(a.hue):.0f}°, a mild edit stays within {MAX_HUE_TURN:g}°)"
    elif not mild:
        what = f"strongly recoloured (contrast x{a.gain:.2f}, a mild edit stays within x{MAX_CONTRAST_CHANGE:g})"
    else:
        what = "the frames overlap only in part (a different framing, not a crop)"
    framing_only = not a.changed_cells and still and a.overlay <= MAX_OVERLAY_SHARE and mild
    if lines_up or looks_alike:
        kind = _kind(a)
        reason = f"similar, not the same picture: {what}: {kind}; aligned: {geometry}; {residual}"
        return Check(Tier.SIMILAR, orientation, reason, a.differs, a.residual, framing_only=framing_only)
    reason = f"different pictures: {what}; {residual}"
    return Check(None, orientation, reason, a.differs, a.residual, framing_only=framing_only)


def _kind(a: _Aligned) -> str:
    if a.changed_cells and a.differs < 0.25:
        return "a copy changed in a region, or a different capture"
    if a.changed_cells or a.moved > MAX_MOVED_SHARE:
        return "a different capture"
    if a.overlay > MAX_OVERLAY_SHARE:
        return "a copy with a large overlay"
    if not _mild(a):
        return "a recoloured copy or another colourway or render"
    return "a different framing"


def _mild(a: _Aligned) -> bool:
    """The colours differ as a mild edit leaves them: small residual, contrast and turn of hue."""
    return _mild_colours(a.chroma, a.hue) and 1 / MAX_CONTRAST_CHANGE <= a.gain <= MAX_CONTRAST_CHANGE


def _mild_colours(chroma: float, hue: float) -> bool:
    """The chroma residual and the turn of hue are within a mild edit's."""
    return chroma <= MAX_CHROMA_RESIDUAL and abs(hue) <= MAX_HUE_TURN


def _rank(a: _Aligned) -> tuple[float, float]:
    return (a.differs + a.overlay, a.residual)


# --- orientation ----------------------------------------------------------------

_ORIENTATION_WORDS = {
    Orientation.IDENTITY: "",
    Orientation.ROT90: "rotated 90°",
    Orientation.ROT180: "rotated 180°",
    Orientation.ROT270: "rotated 270°",
    Orientation.MIRROR: "mirrored",
    Orientation.MIRROR_ROT90: "mirrored and rotated 90°",
    Orientation.MIRROR_ROT180: "flipped upside down",
    Orientation.MIRROR_ROT270: "mirrored and rotated 270°",
}


def _turn(pixels: np.ndarray, orientation: Orientation) -> np.ndarray:
    if orientation is Orientation.IDENTITY:
        return pixels
    im = Image.fromarray(pixels).transpose(VARIANT_TRANSPOSES[orientation])
    return np.asarray(im, dtype=np.uint8)


def _size(pixels: np.ndarray) -> str:
    return f"{pixels.shape[1]}x{pixels.shape[0]} px"


# --- alignment ------------------------------------------------------------------


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def _alignments(new: np.ndarray, old: np.ndarray) -> list[_Aligned]:
    gn, go = _grey(new), _grey(old)
    found = [_measure(new, old, gn, go, _frames(gn, go), "frames")]
    if found[0].edit_like and found[0].changed_cells == 0 and found[0].overlay == 0.0:
        return found  # a plain resize or re-encode: nothing for features to improve
    features = _features(gn, go)
    if features is not None:
        found.append(_measure(new, old, gn, go, features, "features"))
    else:  # too few corners (smooth or flat pictures): look for one frame inside the other
        inside = _template(gn, go)
        if inside is not None:
            found.append(_measure(new, old, gn, go, inside, "template"))
    return found


def _frames(gn: np.ndarray, go: np.ndarray) -> np.ndarray:
    """Map the new picture's content box onto the old one's (a resize, with any border trimmed)."""
    ax0, ay0, ax1, ay1 = content_box(gn)
    bx0, by0, bx1, by1 = content_box(go)
    sx = (bx1 - bx0) / (ax1 - ax0)
    sy = (by1 - by0) / (ay1 - ay0)
    return np.array([[sx, 0.0, bx0 - sx * ax0], [0.0, sy, by0 - sy * ay0]], dtype=np.float64)


_ORB: list[Any] = []  # one detector per process: creating it costs more than using it


def _orb() -> Any:
    if not _ORB:
        _ORB.append(cv2.ORB.create(nfeatures=700, fastThreshold=12))
    return _ORB[0]


def _features(gn: np.ndarray, go: np.ndarray) -> np.ndarray | None:
    """A similarity transform from ORB features matched both ways and RANSAC, or None."""
    orb = _orb()
    kn, dn = orb.detectAndCompute(gn, None)
    ko, do = orb.detectAndCompute(go, None)
    if dn is None or do is None or len(kn) < MIN_INLIERS or len(ko) < MIN_INLIERS:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(dn, do)
    if len(matches) < MIN_INLIERS:
        return None
    src = np.array([kn[m.queryIdx].pt for m in matches], dtype=np.float32)
    dst = np.array([ko[m.trainIdx].pt for m in matches], dtype=np.float32)
    matrix, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0, maxIters=2000, confidence=0.995
    )
    if matrix is None or inliers is None or int(inliers.sum()) < MIN_INLIERS:
        return None
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    if not 0.2 <= scale <= 5.0:
        return None
    return np.asarray(matrix, dtype=np.float64)


#: the longer side at which the template search runs
_SEARCH_SIDE = 160


def _template(gn: np.ndarray, go: np.ndarray) -> np.ndarray | None:
    """One picture found inside the other (a crop, at any size) by normalised
    cross-correlation over a range of scales, refined by ECC; None if nothing fits well."""
    best: tuple[float, np.ndarray] | None = None
    for small, big, swapped in ((gn, go, False), (go, gn, True)):
        f = _SEARCH_SIDE / max(big.shape)
        big_s = cv2.resize(big, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        hb, wb = big_s.shape
        hs, ws = small.shape
        for share in np.linspace(0.55, 1.0, 19):  # the share of the big picture's width the small one covers
            tw = round(share * wb)
            th = round(tw * hs / ws)
            if th > hb or tw < 16 or th < 16:
                continue
            tmpl = cv2.resize(small, (tw, th), interpolation=cv2.INTER_AREA)
            scores = cv2.matchTemplate(big_s, tmpl, cv2.TM_CCOEFF_NORMED)
            _, score, _, (x, y) = cv2.minMaxLoc(scores)
            if best is None or score > best[0]:
                k = tw / ws / f  # big pixels per small pixel
                m = np.array([[k, 0.0, x / f], [0.0, k, y / f]], dtype=np.float64)
                best = (float(score), _invert(m) if swapped else m)
    if best is None or best[0] < 0.8:
        return None
    return _ecc(gn, go, best[1])


def _ecc(gn: np.ndarray, go: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Refine a new-to-old transform by maximising the enhanced correlation (OpenCV's ECC)."""
    try:
        _, warp = cv2.findTransformECC(
            gn.astype(np.float32), go.astype(np.float32), m.astype(np.float32), cv2.MOTION_AFFINE,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-5), None,
        )  # fmt: skip
    except cv2.error:
        return m  # did not converge: keep the estimate
    return np.asarray(warp, dtype=np.float64)


# --- measuring ------------------------------------------------------------------


def _invert(m: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.invertAffineTransform(m), dtype=np.float64)


def _measure(
    new: np.ndarray, old: np.ndarray, gn: np.ndarray, go: np.ndarray, m: np.ndarray, method: str
) -> _Aligned:
    """Warp the larger picture onto the smaller one's frame and measure what differs there."""
    det = abs(float(np.linalg.det(m[:, :2])))  # area of one new pixel in old pixels
    if det >= 1.0:  # the new picture is the smaller: compare in its frame
        base, moving, gb, gm, to_base = new, old, gn, go, _invert(m)
    else:
        base, moving, gb, gm, to_base = old, new, go, gn, m
    h, w = gb.shape
    shrink = math.sqrt(abs(float(np.linalg.det(to_base[:, :2]))))
    rgb_m = moving
    if shrink < 0.8:  # low-pass before sampling down, like a resize would
        sigma = 0.45 / shrink
        rgb_m = cv2.GaussianBlur(moving, (0, 0), sigma)
    warped = cv2.warpAffine(rgb_m, to_base, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ones = np.full(gm.shape, 255, dtype=np.uint8)
    inside = cv2.warpAffine(ones, to_base, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    # two pixels in from every edge, the frame's own included: interpolation there mixes in the border
    eroded = cv2.erode(inside, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    valid = np.asarray(eroded > 0)
    area = int(valid.sum())
    overlap = int(np.count_nonzero(inside))
    moving_area_in_base = gm.size * abs(float(np.linalg.det(to_base[:, :2])))
    covered_base = overlap / gb.size
    covered_moving = min(1.0, overlap / max(moving_area_in_base, 1.0))
    if det >= 1.0:
        covered_new, covered_old = covered_base, covered_moving
    else:
        covered_new, covered_old = covered_moving, covered_base
    geometry, edit_like = _geometry(m, new.shape[1], new.shape[0], old.shape[1], old.shape[0], covered_new, covered_old, gn, go)
    if area < 0.25 * gb.size or area < 64:
        return _Aligned(tuple(m.ravel()), method, covered_new, covered_old, 255.0, 0, 0, 1.0, 0.0, 0.0, 1.0, "", geometry, False)

    warped_raw = cv2.warpAffine(moving, to_base, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    b = cv2.GaussianBlur(base, (0, 0), 0.8).astype(np.float32)
    a = cv2.GaussianBlur(warped, (0, 0), 0.8).astype(np.float32)
    yb = b @ _LUMA
    ya = a @ _LUMA
    gain, offset = _fit(ya[valid], yb[valid])
    ya_fit = ya * gain + offset
    r = np.maximum(_outside(yb, ya_fit), _outside(ya_fit, yb))
    differing = (r > PIXEL_TOLERANCE) & valid
    residual = float(np.abs(ya_fit - yb)[valid].mean())
    ycc_a, ycc_b = _ycrcb(a), _ycrcb(b)
    chroma, hue = _colour_change(ycc_a, ycc_b, valid)
    if _mild_colours(chroma, hue):
        # the colours changed mildly as a whole, if at all: a region whose colour alone changed
        # (an object recoloured with its lightness kept) differs as one whose lightness did
        differing |= _recoloured(ycc_a, ycc_b, a, b, valid)

    overlaid = np.zeros_like(differing)
    if differing.any():
        ys, xs = np.nonzero(differing)
        # judged on the unblurred pixels: blurring a thin opaque stroke would make it look translucent
        pa, pb = warped_raw[ys, xs].astype(np.float32), base[ys, xs].astype(np.float32)
        over = _overlay(pa, pb) | _overlay(pb, pa)
        overlaid[ys[over], xs[over]] = True
    changed = differing & ~overlaid
    # isolated specks are compression noise: a change has neighbours
    neighbours = cv2.boxFilter(changed.astype(np.float32), -1, (3, 3), normalize=False)
    changed &= neighbours >= 2

    rows, cols = -(-h // CELL), -(-w // CELL)
    pad = ((0, rows * CELL - h), (0, cols * CELL - w))
    per_cell = np.pad(changed, pad).reshape(rows, CELL, cols, CELL).sum(axis=(1, 3))
    valid_cell = np.pad(valid, pad).reshape(rows, CELL, cols, CELL).sum(axis=(1, 3)) >= CELL * CELL // 4
    hot = (per_cell >= CELL_CHANGED_PIXELS) & valid_cell
    cells = int(valid_cell.sum())
    changed_cells = int(hot.sum())
    differs = changed_cells / max(cells, 1)
    moved = _moved(ya_fit, yb, valid & ~overlaid) if min(h, w) < SMALL_FRAME else 0.0
    return _Aligned(
        tuple(m.ravel()), method, covered_new, covered_old, residual, changed_cells, cells,
        differs, float(overlaid.sum()) / area, chroma, gain, _where(hot), geometry, edit_like,
        hot, det >= 1.0, moved, hue,
    )  # fmt: skip


def _moved(y: np.ndarray, base: np.ndarray, valid: np.ndarray) -> float:
    """Share of the textured blocks of a small frame whose content moved against the base.

    In each :data:`MOTION_CELL` block the difference is fitted as the base
    shifted by (dx, dy), plus a blur or sharpening (its Laplacian) and an
    offset: a sub-pixel shift estimate (one Lucas-Kanade step) that an edit
    does not move.  A smooth field of shifts is what a slightly wrong
    alignment leaves (a scale or angle a fraction off) and is taken out by
    a robust affine fit; the blocks left more than :data:`MOTION_SHIFT`
    pixels off moved on their own: a different capture (0.0 when fewer
    than :data:`MIN_MOVED_BLOCKS` did)."""
    c = MOTION_CELL
    h, w = base.shape
    rows, cols = h // c, w // c
    if rows * cols == 0:
        return 0.0
    crop = (slice(0, rows * c), slice(0, cols * c))
    gx = cv2.Sobel(base, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(base, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    terms = (gx, gy, cv2.Laplacian(base, cv2.CV_32F, ksize=3) / 4.0, np.ones_like(base))
    diff = (y - base).astype(np.float32)

    def block_sums(x: np.ndarray) -> np.ndarray:
        return np.asarray(x[crop].reshape(rows, c, cols, c).sum(axis=(1, 3)), dtype=np.float64)

    normal = np.zeros((rows, cols, 4, 4))
    rhs = np.zeros((rows, cols, 4))
    for i, ti in enumerate(terms):
        rhs[..., i] = block_sums(ti * diff)
        for j in range(i, 4):
            normal[..., i, j] = normal[..., j, i] = block_sums(ti * terms[j])
    tensor = normal[..., :2, :2] / (c * c)
    half_trace = (tensor[..., 0, 0] + tensor[..., 1, 1]) / 2
    det = tensor[..., 0, 0] * tensor[..., 1, 1] - tensor[..., 0, 1] ** 2
    weakest = half_trace - np.sqrt(np.maximum(half_trace**2 - det, 0.0))
    whole = valid[crop].reshape(rows, c, cols, c).all(axis=(1, 3))
    textured = whole & (weakest >= MOTION_MIN_TEXTURE)
    if int(textured.sum()) < 6:
        return 0.0  # too few blocks to tell motion from a wrong alignment
    shift = np.linalg.solve(normal[textured] + 1e-3 * np.eye(4), rhs[textured][..., None])[:, :2, 0]
    ys, xs = np.nonzero(textured)
    where = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float64)
    keep = np.ones(len(xs), dtype=bool)
    for _ in range(2):  # least squares, then again on the better half: moving blocks do not bend the fit
        fit, *_ = np.linalg.lstsq(where[keep], shift[keep], rcond=None)
        off = np.hypot(*(shift - where @ fit).T)
        keep = off <= np.median(off)
    moved = off > MOTION_SHIFT
    return float(moved.mean()) if int(moved.sum()) >= MIN_MOVED_BLOCKS else 0.0


def _outside(y: np.ndarray, other: np.ndarray) -> np.ndarray:
    """How far each pixel of ``y`` lies outside the range of the 3x3
    neighbourhood of ``other`` there, widened by a share of that range (an
    edge blurred or sharpened by an edit moves within it; new content in a
    flat area does not)."""
    kernel = np.ones((3, 3), np.uint8)
    hi, lo = cv2.dilate(other, kernel), cv2.erode(other, kernel)
    slack = EDGE_SLACK * (hi - lo)
    return np.asarray(np.maximum(np.maximum(y - hi - slack, lo - slack - y), 0.0))


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares gain and offset with y ~ gain * x + offset (gain 1, offset 0 for flat x)."""
    sx = float(x.std())
    if sx < 1e-3:
        return 1.0, float(y.mean() - x.mean())
    gain = float(((x - x.mean()) * (y - y.mean())).mean()) / (sx * sx)
    return gain, float(y.mean()) - gain * float(x.mean())


def _overlay(top: np.ndarray, under: np.ndarray) -> np.ndarray:
    """Which pixels (rows of RGB) of ``top`` are ``under`` seen through a
    translucent layer of one colour: ``top = alpha * c + (1 - alpha) * under``
    with the same alpha and colour in every channel, alpha at most
    MAX_OVERLAY_ALPHA.  Solved per pixel over its three channels, so it needs
    a pixel with some colour underneath (on grey the layer's opacity cannot
    be told from new content, and the pixel counts as changed)."""
    alpha, misfit, colour, var = _layer(top, under)
    return np.asarray(
        (var >= OVERLAY_MIN_SPREAD**2)
        & (alpha >= 0.05)
        & (alpha <= MAX_OVERLAY_ALPHA)
        & (misfit <= FIT_MISFIT)
        & (colour >= -16.0)
        & (colour <= 271.0)
    )


def _layer(top: np.ndarray, under: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel, the layer of one grey ``c`` at opacity ``alpha`` that best turns ``under``
    into ``top`` (least squares over the three channels): alpha, the largest misfit of a
    channel, c, and the spread (variance) of ``under``'s channels."""
    u = under
    d = top - under
    um = u.mean(axis=1, keepdims=True)
    dm = d.mean(axis=1, keepdims=True)
    var = ((u - um) ** 2).mean(axis=1)
    cov = ((u - um) * (d - dm)).mean(axis=1)
    alpha = -cov / np.maximum(var, 1e-6)
    fit = dm[:, 0] + alpha * um[:, 0]  # alpha * c
    misfit = np.abs(d - (fit[:, None] - alpha[:, None] * u)).max(axis=1)
    colour = fit / np.maximum(alpha, 1e-6)
    return alpha, misfit, colour, var


def _ycrcb(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2YCrCb), dtype=np.float32)


def _recoloured(ca: np.ndarray, cb: np.ndarray, a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The pixels of areas whose colour differs between two pictures whose colours agree as a whole.

    Judged on blocks of CHROMA_BLOCK pixels, as JPEG keeps its colour at
    half resolution at most; a block counts where the chroma lies more than
    CHROMA_TOLERANCE outside the other picture's (``_chroma_outside``), but
    not where a channel reaches 250 in either picture (brightening a bright
    colour clips it there and turns its hue), and only as part of an area of at
    least RECOLOURED_AREA blocks on each side: a palette's bands (GIF) or a
    re-encode's colour fringes follow edges, an object in another colour has
    an inside.
    """
    h, w = valid.shape
    rows, cols = h // CHROMA_BLOCK, w // CHROMA_BLOCK
    if rows < RECOLOURED_AREA or cols < RECOLOURED_AREA:
        return np.zeros_like(valid)

    def blocks(x: np.ndarray) -> np.ndarray:
        cut = x[: rows * CHROMA_BLOCK, : cols * CHROMA_BLOCK]
        return np.asarray(cv2.resize(cut, (cols, rows), interpolation=cv2.INTER_AREA))

    clipped = (np.maximum(a.max(axis=2), b.max(axis=2)) >= 250) & valid
    usable = (blocks(valid.astype(np.float32)) >= 1.0) & (blocks(clipped.astype(np.float32)) == 0.0)
    if not usable.any():
        return np.zeros_like(valid)
    changed = (_chroma_outside(blocks(ca), blocks(cb), usable) > CHROMA_TOLERANCE) & usable
    kernel = np.ones((RECOLOURED_AREA, RECOLOURED_AREA), np.uint8)
    area = cv2.dilate(cv2.erode(changed.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0), kernel)
    out = np.zeros_like(valid)
    out[: rows * CHROMA_BLOCK, : cols * CHROMA_BLOCK] = np.kron(area, np.ones((CHROMA_BLOCK, CHROMA_BLOCK), np.uint8)) > 0
    return np.asarray(out & valid)


def _chroma_outside(ca: np.ndarray, cb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per pixel, how far the chroma of one picture lies outside the 3x3 neighbourhood range of the
    other's fitted to it (each channel, each way: the worst).

    The fit is a gain and offset over ``valid``, the gain held to what a mild
    edit makes: a least-squares gain alone would fit a recoloured region away.
    In a picture of nearly one colour, the region is most of the variance of
    the chroma, so the gain that fits the rest best is close to 0.
    """
    out = np.zeros(ca.shape[:2], dtype=np.float32)
    for ch in (1, 2):
        for x, y in ((ca[..., ch], cb[..., ch]), (cb[..., ch], ca[..., ch])):
            g, _ = _fit(x[valid], y[valid])
            g = min(max(g, 1 / MAX_CONTRAST_CHANGE), MAX_CONTRAST_CHANGE)
            x_fit = x * g + (float(np.median(y[valid])) - g * float(np.median(x[valid])))
            out = np.maximum(out, np.maximum(_outside(y, x_fit), _outside(x_fit, y)))
    return out


def _colour_change(ca: np.ndarray, cb: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """How the colours of ``cb`` differ from ``ca``'s (YCrCb pixels) over ``valid``.

    Returns the chroma residual (how far each chroma channel is from a gain
    and offset of the other's, both ways, the worse) and the turn of hue in
    degrees (0 where too few pixels are coloured to say).
    """
    worst = 0.0
    for ch in (1, 2):
        x, y = ca[..., ch][valid], cb[..., ch][valid]
        for p, q in ((x, y), (y, x)):
            g, o = _fit(p, q)
            worst = max(worst, float(np.abs(p * g + o - q).mean()))
    return worst, _hue_turn(ca[valid], cb[valid])


def _hue_turn(ca: np.ndarray, cb: np.ndarray) -> float:
    """The chroma-weighted mean turn of hue (degrees) from ``ca`` to ``cb`` (YCrCb pixels, n x 3).

    Each pixel coloured in both counts by its smaller chroma, so that the
    hue of a near-grey pixel, which compression noise turns at random,
    weighs little.
    """
    za = (ca[:, 2] - 128.0) + 1j * (ca[:, 1] - 128.0)
    zb = (cb[:, 2] - 128.0) + 1j * (cb[:, 1] - 128.0)
    weight = np.minimum(np.abs(za), np.abs(zb))
    coloured = weight >= HUE_MIN_CHROMA
    if np.count_nonzero(coloured) < max(64, HUE_MIN_SHARE * len(weight)):
        return 0.0
    turn = zb[coloured] * np.conj(za[coloured])
    mean = np.sum(turn / np.abs(turn) * weight[coloured])
    return math.degrees(float(np.angle(mean)))


def _where(hot: np.ndarray) -> str:
    """Where the differing cells are, in words: "top-left", "centre", "all over"."""
    if not hot.any():
        return ""
    rows, cols = hot.shape
    if hot.mean() > 0.5:
        return "all over"
    ys, xs = np.nonzero(hot)
    y, x = ys.mean() / rows, xs.mean() / cols
    v = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    hpos = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    return "-".join(p for p in (v, hpos) if p) or "centre"


def _geometry(
    m: np.ndarray, wn: int, hn: int, wo: int, ho: int,
    covered_new: float, covered_old: float, gn: np.ndarray, go: np.ndarray,
) -> tuple[str, bool]:  # fmt: skip
    """Words for the alignment, and whether it is a geometry an edit makes:
    one frame (less any uniform border) inside the other, or a small turn about the centre."""
    angle = math.degrees(math.atan2(m[1, 0], m[0, 0]))
    words = []
    if abs(angle) >= 0.5:
        # the matrix turns the new picture back; the new one was turned the other way
        words.append(f"rotated {abs(angle):.1f}° {'counter-clockwise' if angle > 0 else 'clockwise'}")
    # the new frame's corners, in old coordinates
    corners = np.array([[0, 0, 1], [wn, 0, 1], [0, hn, 1], [wn, hn, 1]], dtype=np.float64) @ m.T
    x0, y0 = corners[:, 0].min(), corners[:, 1].min()
    x1, y1 = corners[:, 0].max(), corners[:, 1].max()
    cuts = {"left": x0 / wo, "top": y0 / ho, "right": (wo - x1) / wo, "bottom": (ho - y1) / ho}
    turned = abs(angle) >= 0.5
    # a turned frame's corners stick out by design: name crops and pads only when square
    cropped = {} if turned else {k: v for k, v in cuts.items() if v >= 0.01}
    padded = {} if turned else {k: -v for k, v in cuts.items() if v <= -0.01}
    if cropped:
        words.append("cropped " + ", ".join(f"{v:.1%} {k}" for k, v in cropped.items()))
    if padded:
        words.append("padded or bordered " + ", ".join(f"{v:.1%} {k}" for k, v in padded.items()))
    if cropped and padded:
        # one frame is not inside the other: a shifted view, unless the
        # overhang is a uniform border of one picture
        inside = max(covered_new, covered_old) >= CONTAINED and _trimmed_inside(m, gn, go)
    else:
        inside = max(covered_new, covered_old) >= CONTAINED
    if turned:
        centre_new = np.array([wn / 2, hn / 2, 1.0]) @ m.T
        centred = math.hypot(centre_new[0] - wo / 2, centre_new[1] - ho / 2) <= 0.02 * max(wo, ho)
        edit_like = abs(angle) <= 15.0 and (centred or inside) and min(covered_new, covered_old) >= 0.8
    else:
        edit_like = inside
    return ", ".join(words), edit_like


#: a turned frame whose share inside the other frame is at least this holds
#: nothing the other lacks: what sticks out are the corners a turn fills
TURNED_INSIDE = 0.9


def _contents_inside(a: _Aligned, gn: np.ndarray, go: np.ndarray) -> tuple[bool, bool]:
    """Does the new picture's content lie inside the old one's frame, and the
    old one's inside the new one's, for this alignment?  Uniform borders (a
    pad, a frame) are not content.  Grouping relies on it to chain two
    verdicts only through a picture that holds what both ends show."""
    m = np.array(a.matrix, dtype=np.float64).reshape(2, 3)
    if abs(math.degrees(math.atan2(m[1, 0], m[0, 0]))) >= 0.5:
        return a.covered_new >= TURNED_INSIDE, a.covered_old >= TURNED_INSIDE
    return _box_inside(content_box(gn), m, go.shape), _box_inside(content_box(go), _invert(m), gn.shape)


def _box_inside(box: tuple[int, int, int, int], m: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Is ``box`` (x0, y0, x1, y1), mapped by ``m``, inside a frame of ``shape`` (1% tolerance)?"""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], dtype=np.float64) @ m.T
    h, w = shape[:2]
    tol = 0.01 * max(w, h)
    return bool(
        corners[:, 0].min() >= -tol and corners[:, 1].min() >= -tol
        and corners[:, 0].max() <= w + tol and corners[:, 1].max() <= h + tol
    )  # fmt: skip


def _trimmed_inside(m: np.ndarray, gn: np.ndarray, go: np.ndarray) -> bool:
    """Is the content box (uniform borders trimmed) of one picture inside the other's frame?"""
    ax0, ay0, ax1, ay1 = content_box(gn)
    box = np.array([[ax0, ay0, 1], [ax1, ay0, 1], [ax0, ay1, 1], [ax1, ay1, 1]], dtype=np.float64) @ m.T
    ho, wo = go.shape
    tol = 0.01 * max(wo, ho)
    if box[:, 0].min() >= -tol and box[:, 1].min() >= -tol and box[:, 0].max() <= wo + tol and box[:, 1].max() <= ho + tol:
        return True
    bx0, by0, bx1, by1 = content_box(go)
    inv = _invert(m)
    back = np.array([[bx0, by0, 1], [bx1, by0, 1], [bx0, by1, 1], [bx1, by1, 1]], dtype=np.float64) @ inv.T
    hn, wn = gn.shape
    tol = 0.01 * max(wn, hn)
    return bool(back[:, 0].min() >= -tol and back[:, 1].min() >= -tol and back[:, 0].max() <= wn + tol and back[:, 1].max() <= hn + tol)


# --- the second look: small print -------------------------------------------------
#
# At the working size the text of a page or a large screenshot is a few pixels
# tall: one changed digit (a total of 1,250.00 against 7,250.00) is within
# the tolerance every edit needs.  A pair judged ``near`` whose pictures are
# page-like (mostly one flat background) and were reduced at least
# FINE_GAIN-fold is looked at again, closer: both files re-read with the
# longer side up to FINE_SIDE, the alignment found carried over, and every
# mark (ink) of one where the other is blank around it counts.

#: the longer side of the second look (at most the smaller file's own)
FINE_SIDE = 3072
#: the second look is taken when it sees at least this many times the working size across
FINE_GAIN = 2.0
#: page-like: at least this share of a picture's working pixels is one flat background
PAGE_BACKGROUND = 0.4
#: a background pixel is within this many grey levels of the background's level, and so is its 5x5 range
BACKGROUND_SPREAD = 8
#: a mark: a pixel this many grey levels from the other picture (after the brightness fit) ...
MARK_CONTRAST = 64.0
#: ... where the other picture is blank: its range within BLANK_RADIUS pixels is at most BLANK_RANGE
#: (a pixel of misregistration at the second look's size is tolerated, after the alignment is refined: an edge
#: that moved lands next to the other's ink, not on blank paper)
BLANK_RANGE = 16.0
BLANK_RADIUS = 1
#: a change in the small print: at least this many connected mark pixels
MARK_AREA = 6
#: another alignment may clear a page only if it compares at least this share of what the found one did
LOOK_COVERED = 0.9
#: cells (second-look pixels) for saying where the marks are and how much of the frame they touch
MARK_CELL = 64
#: the alignment carried over is refined (ECC) on both pictures reduced to this longer side: an
#: error of a third of a working pixel is two pixels at the second look's size
REFINE_SIDE = 1024
#: a refinement that moves a corner of the frame by more than this many second-look pixels diverged
REFINE_LIMIT = 12.0


def second_look_side(new: np.ndarray, old: np.ndarray, new_side: int, old_side: int) -> int:
    """The longer side to look at a ``near`` pair again with, or 0 for no second look.

    ``new``, ``old``: the working pixels; ``new_side``, ``old_side``: each
    file's own longer side.  Only page-like pictures (documents, screenshots,
    charts: mostly one flat background with small print on it) reduced at
    least :data:`FINE_GAIN`-fold are looked at again; a photo's detail is
    not small print, and its copies are not re-read.
    """
    side = min(FINE_SIDE, new_side, old_side)
    working = max(max(new.shape[:2]), max(old.shape[:2]))
    if side < FINE_GAIN * working:
        return 0
    return side if _page_like(_grey(old)) or _page_like(_grey(new)) else 0


def _page_like(grey: np.ndarray) -> bool:
    """At least :data:`PAGE_BACKGROUND` of the picture is one flat background."""
    g = grey.astype(np.uint8) if grey.dtype != np.uint8 else grey
    level = int(np.argmax(np.bincount(g.ravel(), minlength=256)))
    kernel = np.ones((5, 5), np.uint8)
    flat = (cv2.dilate(g, kernel) - cv2.erode(g, kernel)) <= BACKGROUND_SPREAD
    near_level = np.abs(g.astype(np.int16) - level) <= BACKGROUND_SPREAD
    return float((flat & near_level).mean()) >= PAGE_BACKGROUND


def second_look(new: np.ndarray, old: np.ndarray, new_work: np.ndarray, old_work: np.ndarray, check: Check) -> Check:
    """Look at a ``near`` pair again on larger pixels (``new``, ``old``), with
    the alignment ``check`` found on the working pixels (``new_work``,
    ``old_work``) carried over.  ``check`` as it was when no mark of one
    lies where the other is blank; else ``similar``, saying where."""
    if check.tier is not Tier.NEAR or check.matrix is None:
        return check
    turned, turned_work = _turn(new, check.orientation), _turn(new_work, check.orientation)
    # the alignment found, then others the working size could not tell from it (a content box
    # trimmed differently, features): a mark counts only where every one of them leaves it
    marked, cells, hot, size, first = 0, 0.0, np.zeros((1, 1), dtype=bool), "", 0
    for n, matrix in enumerate(_other_alignments(turned_work, old_work, check.matrix)):
        found = _marks(turned, old, _carried(turned, old, turned_work, old_work, matrix)[:2])
        if n == 0:
            first = found[4]
        elif found[4] < LOOK_COVERED * first:
            continue  # an alignment that compares less of the page cannot clear it
        if found[4] and not found[0]:
            return check
        if n == 0 or found[0] < marked:
            marked, cells, hot, size = found[:4]
    if not marked:  # nothing could be compared: not seen the same, so not near
        reason = f"similar at most: the pages could not be compared closer; at the working size: {check.reason}"
        return replace(check, tier=Tier.SIMILAR, reason=reason, new_inside=False, old_inside=False)
    reason = (
        f"similar, not the same picture: looked at again at {size}, {marked} px of marks where the other is "
        f"blank ({cells:.1%} of the frame, {_where(hot)}): small print or marks changed, a different "
        f"document or a copy changed in a region; at the working size: {check.reason}"
    )
    return replace(
        check, tier=Tier.SIMILAR, reason=reason, differs=max(check.differs, cells), framing_only=False,
        new_inside=False, old_inside=False,
    )  # fmt: skip


def _other_alignments(new: np.ndarray, old: np.ndarray, found: tuple[float, ...]) -> list[tuple[float, ...]]:
    """``found``, then the whole frame mapped onto the whole frame, then the features'
    alignment (working pixels, new to old), each once."""
    sx, sy = old.shape[1] / new.shape[1], old.shape[0] / new.shape[0]
    frame = (sx, 0.0, (sx - 1) / 2, 0.0, sy, (sy - 1) / 2)
    out = [tuple(float(v) for v in found), frame]
    features = _features(_grey(new), _grey(old))
    if features is not None:
        out.append(tuple(float(v) for v in features.ravel()))
    return [m for n, m in enumerate(out) if all(np.abs(np.subtract(m, o)).max() > 1e-3 for o in out[:n])]


def _scaling(big: np.ndarray, small: np.ndarray) -> np.ndarray:
    """From ``small``'s pixels to ``big``'s, the same picture at two sizes (pixel centres: (x + 0.5) * s - 0.5)."""
    sx, sy = big.shape[1] / small.shape[1], big.shape[0] / small.shape[0]
    return np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]])


def _carried(
    new: np.ndarray, old: np.ndarray, new_work: np.ndarray, old_work: np.ndarray, matrix: tuple[float, ...]
) -> np.ndarray:
    """The working alignment ``matrix`` (new to old, working pixels) carried over to the larger
    pixels, refined by ECC on both reduced to :data:`REFINE_SIDE` (kept unless it diverged); 3x3."""
    m = np.vstack([np.array(matrix, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    m_fine = _scaling(old, old_work) @ m @ np.linalg.inv(_scaling(new, new_work))
    f = min(1.0, REFINE_SIDE / max(*new.shape[:2], *old.shape[:2]))
    small_new = cv2.resize(_grey(new), None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    small_old = cv2.resize(_grey(old), None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    to_new, to_old = _scaling(new, small_new), _scaling(old, small_old)
    refined = _ecc(small_new, small_old, (np.linalg.inv(to_old) @ m_fine @ to_new)[:2])
    refined_fine = to_old @ np.vstack([refined, [0.0, 0.0, 1.0]]) @ np.linalg.inv(to_new)
    h, w = new.shape[:2]
    corners = np.array([[0.0, 0.0, 1.0], [w, 0.0, 1.0], [0.0, h, 1.0], [w, h, 1.0]]).T
    if np.abs((refined_fine - m_fine)[:2] @ corners).max() <= REFINE_LIMIT:
        return np.asarray(refined_fine)
    return np.asarray(m_fine)


def _warped_onto(base: np.ndarray, moving: np.ndarray, to_base: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``moving`` mapped into ``base``'s frame by ``to_base`` (low-passed first where that
    shrinks it, as a resize would), and where it covers that frame, ``margin`` pixels in
    from the edges; None for a degenerate alignment (nothing to compare)."""
    h, w = base.shape[:2]
    shrink = math.sqrt(abs(float(np.linalg.det(to_base[:, :2]))))
    if shrink < 1e-3:
        return None
    if shrink < 0.8:
        moving = cv2.GaussianBlur(moving, (0, 0), 0.45 / shrink)
    warped = cv2.warpAffine(moving, to_base, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ones = np.full(moving.shape[:2], 255, dtype=np.uint8)
    inside = cv2.warpAffine(ones, to_base, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    reach = 2 * margin + 1
    valid = cv2.erode(inside, np.ones((reach, reach), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return np.asarray(warped), np.asarray(valid)


def _fitted_grey(warped: np.ndarray, base: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both pictures in grey, ``warped``'s brightness and contrast fitted to ``base``'s over
    ``valid`` (grey taken in 8 bits: a float copy of the RGB would be 12 bytes a pixel at
    the closer looks' sizes, and the fit needs a sample, not every pixel)."""
    ya, yb = _grey(warped).astype(np.float32), _grey(base).astype(np.float32)
    step = max(1, int(valid.sum()) // 200_000)
    gain, offset = _fit(ya[valid][::step], yb[valid][::step])
    return ya * gain + offset, yb


def _marks(new: np.ndarray, old: np.ndarray, m: np.ndarray) -> tuple[int, float, np.ndarray, str, int]:
    """Marks (ink) of either picture where the other is blank around them, with
    ``new`` mapped onto ``old`` by ``m``: how many pixels, the share of
    :data:`MARK_CELL` cells they touch, those cells, the compared size, and how
    many pixels were compared (0: the alignment leaves nothing to compare)."""
    if abs(float(np.linalg.det(m[:, :2]))) >= 1.0:  # the new picture is the smaller: compare in its frame
        base, moving, to_base = new, old, _invert(m)
    else:
        base, moving, to_base = old, new, m
    h, w = base.shape[:2]
    size = f"{w}x{h} px"
    empty = np.zeros((1, 1), dtype=bool)
    onto = _warped_onto(base, moving, to_base, BLANK_RADIUS)
    if onto is None or not onto[1].any():  # nothing compared
        return 0, 0.0, empty, size, 0
    warped, valid = onto
    compared = int(valid.sum())
    ya, yb = _fitted_grey(warped, base, valid)
    reach = 2 * BLANK_RADIUS + 1
    kernel = np.ones((reach, reach), np.uint8)

    def blank(y: np.ndarray) -> np.ndarray:
        return np.asarray((cv2.dilate(y, kernel) - cv2.erode(y, kernel)) <= BLANK_RANGE)

    mark = (np.abs(ya - yb) >= MARK_CONTRAST) & (blank(ya) | blank(yb)) & valid
    if mark.any():  # a light watermark's layer over coloured pixels is not a mark
        ys, xs = np.nonzero(mark)
        pa, pb = warped[ys, xs].astype(np.float32), base[ys, xs].astype(np.float32)
        over = _overlay(pa, pb) | _overlay(pb, pa)
        mark[ys[over], xs[over]] = False
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mark.astype(np.uint8), connectivity=8)
    big = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= MARK_AREA) + 1
    if big.size == 0:
        return 0, 0.0, empty, size, compared
    kept = np.isin(labels, big)
    rows, cols = -(-h // MARK_CELL), -(-w // MARK_CELL)
    padded = np.pad(kept, ((0, rows * MARK_CELL - h), (0, cols * MARK_CELL - w)))
    hot = np.asarray(padded.reshape(rows, MARK_CELL, cols, MARK_CELL).any(axis=(1, 3)))
    return int(kept.sum()), float(hot.mean()), hot, size, compared


# --- a closer look at a watermark -------------------------------------------------
#
# At the working size the strokes of a text watermark are a pixel or two wide:
# each is an edge, mixed with the picture around it, and a translucent white
# stroke cannot be told from an opaque one (a caption, which must never be
# ``near``).  A ``similar`` pair whose only difference is a few cells, with an
# edit's geometry and colours, is looked at again at up to OVERLAY_SIDE: there
# the insides of the strokes are pixels of their own, and the picture shows
# through a watermark's (they fit a translucent layer over what is
# underneath) and not through a caption's.

#: a pair whose differing cells cover at most this share of the frame may be a watermarked copy
OVERLAY_LOOK_SHARE = 0.08
#: the longer side of the closer look at a watermark
OVERLAY_SIDE = 2048
#: insides of strokes judged (differing pixels whose 3x3 neighbours all differ, over colour): at least
OVERLAY_MIN_INSIDE = 200
#: ``near`` when at least this share of them fit a translucent layer (over the real photos of
#: the benchmark: a text watermark 0.35-1.00, an opaque caption in its place at most 0.03,
#: a patch of the picture pasted elsewhere at most 0.56) ...
OVERLAY_LIGHT_SHARE = 0.75
#: ... at most this share an opaque one (a layer of opacity at least OPAQUE_ALPHA; a
#: watermark 0-0.07, a caption 0.75-1.00) ...
OVERLAY_OPAQUE_SHARE = 0.03
OPAQUE_ALPHA = 0.85
#: ... what differs is strokes, not a blob: at most this share of the differing pixels are
#: insides (a text watermark 0.30-0.77; a shadow or a pasted patch mostly 0.8-0.98) ...
OVERLAY_STROKE_SHARE = 0.75
#: ... no blob of the insides judged that fit no translucent layer (a change beside the
#: watermark) is this large after one erosion: a red dot of 8 px over the words on Storm at
#: 1920 px leaves 26, what a watermark leaves unfit (slivers along its strokes' edges) 0-5 on
#: most of the benchmark's photos, up to 44 on one ...
OVERLAY_MAX_UNFIT = 12
#: ... and every differing cell is explained: at least this many insides judged, half of them
#: fitting a translucent layer, or fewer judged but next to such a cell (the edge of the same
#: overlay).  A watermark does not hide a change elsewhere.
OVERLAY_CELL_JUDGED = 20


def overlay_look_side(new: np.ndarray, old: np.ndarray, new_side: int, old_side: int, check: Check) -> int:
    """The longer side to look at a possibly watermarked pair again with, or 0 for none."""
    if check.tier is not Tier.SIMILAR or check.hot is None or check.matrix is None:
        return 0
    side = min(OVERLAY_SIDE, new_side, old_side)
    working = max(max(new.shape[:2]), max(old.shape[:2]))
    return side if side >= FINE_GAIN * working else 0


def overlay_look(new: np.ndarray, old: np.ndarray, new_work: np.ndarray, old_work: np.ndarray, check: Check) -> Check:
    """Look again at a pair that differs only in a few cells, on larger pixels: ``near``
    when what differs there is the picture seen through a translucent layer (a
    watermark), judged inside its strokes; else ``check`` as it was."""
    if check.hot is None or check.matrix is None:
        return check
    turned, turned_work = _turn(new, check.orientation), _turn(new_work, check.orientation)
    m_fine = _carried(turned, old, turned_work, old_work, check.matrix)
    inside, light, opaque, differing, interior, cell_inside, cell_light, unfit = _overlay_stats(
        turned, old, turned_work, old_work, m_fine, check.hot, check.base_is_new
    )
    cell_ok = _cells_explained(check.hot, cell_inside, cell_light)
    if (
        inside < OVERLAY_MIN_INSIDE or light < OVERLAY_LIGHT_SHARE * inside
        or opaque > OVERLAY_OPAQUE_SHARE * inside or not cell_ok
        or interior > OVERLAY_STROKE_SHARE * differing or unfit >= OVERLAY_MAX_UNFIT
    ):  # fmt: skip
        return check
    reason = (
        f"the same picture under a light overlay (watermark): looked at again, {light / inside:.0%} of "
        f"{inside} px inside its strokes show the picture through a translucent layer, "
        f"{opaque / inside:.0%} an opaque one; {_where(check.hot)}"
    )
    return replace(check, tier=Tier.NEAR, reason=reason, hot=None)


def _cells_explained(hot: np.ndarray, judged: np.ndarray, light: np.ndarray) -> bool:
    """Every differing cell of ``hot`` (``judged`` and ``light``: per cell, in the order of
    ``np.nonzero(hot)``) is shown to be under the overlay, or lies next to one that is."""
    enough = judged >= OVERLAY_CELL_JUDGED
    if np.any(enough & (2 * light < judged)) or not enough.any():
        return False
    shown = np.zeros(hot.shape, dtype=np.uint8)
    shown[np.nonzero(hot)] = enough.astype(np.uint8)
    near_shown = cv2.dilate(shown, np.ones((3, 3), np.uint8))[np.nonzero(hot)] > 0
    return bool(np.all(enough | near_shown))


def _overlay_stats(
    new: np.ndarray, old: np.ndarray, new_work: np.ndarray, old_work: np.ndarray,
    m: np.ndarray, hot: np.ndarray, base_is_new: bool,
) -> tuple[int, int, int, int, int, np.ndarray, np.ndarray, int]:  # fmt: skip
    """Inside the differing cells ``hot`` (of the compared frame at the working size),
    with ``new`` mapped onto ``old`` by ``m``: the insides of strokes judged (differing
    pixels whose 3x3 neighbours all differ, with colour underneath), how many of them fit
    a translucent layer, how many an opaque one; the pixels whose lightness differs and
    the insides of those (strokes or a blob); and per differing cell, the insides judged
    and those fitting a translucent layer; and the largest connected piece of insides
    judged that fit no translucent layer.  A pixel differs in lightness or, as at the
    working size, in colour alone."""
    if base_is_new:
        base, base_work, moving, to_base = new, new_work, old, np.linalg.inv(m)[:2]
    else:
        base, base_work, moving, to_base = old, old_work, new, m[:2]
    h, w = base.shape[:2]
    cells = int(hot.sum())
    none = np.zeros(cells, dtype=np.int64)
    onto = _warped_onto(base, moving, to_base, 2)
    if onto is None:  # a degenerate alignment: nothing to judge
        return 0, 0, 0, 0, 0, none, none, 0
    warped, valid = onto
    # the differing cells, numbered from 1, at this size
    hw, ww = base_work.shape[:2]
    numbered = np.zeros(hot.shape, dtype=np.int32)
    numbered[hot] = np.arange(1, cells + 1)
    cells_work = np.kron(numbered, np.ones((CELL, CELL), dtype=np.int32))[:hw, :ww]
    cell_of = cv2.resize(cells_work.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    region = (cell_of > 0) & valid
    if not region.any():
        return 0, 0, 0, 0, 0, none, none, 0
    ya, yb = _fitted_grey(warped, base, valid)
    apart = cv2.absdiff(cv2.cvtColor(warped, cv2.COLOR_RGB2YCrCb), cv2.cvtColor(base, cv2.COLOR_RGB2YCrCb))
    chroma_moved = np.maximum(apart[..., 1], apart[..., 2]) > CHROMA_TOLERANCE
    lighter = (np.abs(ya - yb) > PIXEL_TOLERANCE) & region
    # what the working size saw differ, in lightness or in colour alone
    differing = lighter | (chroma_moved & region)
    # strokes or a blob: judged on lightness (colour is at half resolution in most JPEGs)
    lighter_inside = int((cv2.erode(lighter.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0).sum())
    ys, xs = np.nonzero(differing)
    pa, pb = warped[ys, xs].astype(np.float32), base[ys, xs].astype(np.float32)
    interior = cv2.erode(differing.astype(np.uint8), np.ones((3, 3), np.uint8))[ys, xs] > 0
    # judged per pixel, over its three channels, so only where there is colour underneath: a
    # region-wide fit on grey was tried and fits a smooth patch pasted over a smooth area too
    coloured = (pb.var(axis=1) >= OVERLAY_MIN_SPREAD**2) | (pa.var(axis=1) >= OVERLAY_MIN_SPREAD**2)
    judged = interior & coloured
    light, layers = _one_layer(_translucent(pa, pb), _translucent(pb, pa), judged)
    opaque = _opaque(pa, pb) | _opaque(pb, pa)
    # The layers the coloured insides showed, their grey and opacity known, judge every
    # inside again: one with no colour underneath (grey, black, white), which the fit
    # above cannot, and one over a dark colour, where that fit trades grey for opacity
    # (white at 0.66 over brown reads as light grey at 0.8).  Known, the layer leaves
    # nothing to fit a pasted or changed patch with.
    grey_judged = interior & ~coloured & bool(layers)
    under = _under_layers(pa, pb, layers)
    shown_px, fit_px = judged | grey_judged, ((light | under) & judged) | (grey_judged & under)
    where = cell_of[ys, xs]
    cell_judged = np.bincount(where[shown_px], minlength=cells + 1)[1:]
    cell_light = np.bincount(where[fit_px], minlength=cells + 1)[1:]
    # What fits no layer, where the lightness differs too: a pixel that differs in colour
    # alone, a little, is JPEG's colour at half resolution bleeding past a stroke's edge.
    bleed = ~lighter[ys, xs] & (np.maximum(apart[ys, xs, 1], apart[ys, xs, 2]) <= 2 * CHROMA_TOLERANCE)
    unfit_px = shown_px & ~fit_px & ~bleed
    unfit_map = np.zeros((h, w), dtype=np.uint8)
    unfit_map[ys[unfit_px], xs[unfit_px]] = 1
    # a change is a blob of its own; what a watermark leaves unfit is slivers along its strokes'
    # edges (another opacity, JPEG's colour at half resolution): a blob survives one erosion
    blobs = np.asarray(cv2.erode(unfit_map, np.ones((3, 3), np.uint8)), dtype=np.uint8)
    _, _, pieces, _ = cv2.connectedComponentsWithStats(blobs, connectivity=8)
    unfit = int(pieces[1:, cv2.CC_STAT_AREA].max()) if len(pieces) > 1 else 0
    return (
        # an opaque grey fits where a known translucent layer does too (white at 0.66 over
        # black is an opaque grey of 168): only what the layers do not explain counts opaque
        int(judged.sum()), int((judged & (light | under)).sum()), int((judged & opaque & ~under).sum()),
        int(lighter.sum()), lighter_inside, cell_judged, cell_light, unfit,
    )  # fmt: skip


def _translucent(top: np.ndarray, under: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which pixels of ``top`` are ``under`` seen through a translucent layer of one grey, as
    :func:`_overlay` says, except that the layer's grey is held within black and white and its
    opacity solved again for it (a white layer whose opacity comes out a little low from the
    colours alone would otherwise read as whiter than white); with each pixel's opacity and grey."""
    _, _, colour, var = _layer(top, under)
    c = np.clip(colour, 0.0, 255.0)
    towards = c[:, None] - under  # top - under = alpha * (c - under)
    d = top - under
    alpha = (d * towards).sum(axis=1) / np.maximum((towards**2).sum(axis=1), 1e-6)
    misfit = np.abs(d - alpha[:, None] * towards).max(axis=1)
    ok = (var >= OVERLAY_MIN_SPREAD**2) & (alpha >= 0.05) & (alpha <= MAX_OVERLAY_ALPHA) & (misfit <= FIT_MISFIT)
    return np.asarray(ok), alpha, c


#: a watermark is one layer (or two: a fill and an outline) of one opacity each: a pixel fits it
#: when its opacity is within this of the median of the pixels whose layer has its grey
LAYER_ALPHA_SPREAD = 0.1


#: a layer is learned (for the pixels with no colour underneath) from at least this many
#: insides that fit it
LAYER_LEARNED_FROM = 100

#: a layer the insides showed: whether the first picture is the one on top, its grey, its opacity
Layer = tuple[bool, float, float]


def _one_layer(
    first: tuple[np.ndarray, np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray, np.ndarray],
    judged: np.ndarray,
) -> tuple[np.ndarray, list[Layer]]:
    """The pixels that fit a translucent layer (either picture on top: ``first`` or ``second``
    from :func:`_translucent`) whose opacity is the one most pixels of that grey have: a layer
    of white, one of black, one of any other grey, each with one opacity.  A picture's own
    content pasted or changed fits a layer pixel by pixel now and then, at opacities all over.
    With the layers themselves, as the ``judged`` pixels that fit them show them (at least
    :data:`LAYER_LEARNED_FROM` each): which picture is on top, the grey, the opacity."""
    ok = first[0] | second[0]
    alpha = np.where(first[0], first[1], second[1])
    grey = np.where(first[0], first[2], second[2])
    kind = np.where(grey >= 224.0, 2, np.where(grey <= 32.0, 0, 1))
    kept = np.zeros_like(ok)
    layers: list[Layer] = []
    for k in (0, 1, 2):
        members = ok & (kind == k)
        if members.any():
            fit = members & (np.abs(alpha - float(np.median(alpha[members]))) <= LAYER_ALPHA_SPREAD)
            kept |= fit
            shown = fit & judged
            if k != 1 and shown.sum() >= LAYER_LEARNED_FROM:  # white or black: one grey
                layers.append(
                    (bool(first[0][shown].mean() >= 0.5), float(np.median(grey[shown])), float(np.median(alpha[shown])))
                )
    return np.asarray(kept), layers


#: how far (grey levels, in any channel) a pixel may be from what a known layer over the
#: other picture gives: a little more than a free fit's :data:`FIT_MISFIT`, since nothing
#: is fitted (JPEG errs by 10-12 at a stroke's edge, over a saturated colour)
KNOWN_LAYER_MISFIT = 12.0


def _under_layers(first: np.ndarray, second: np.ndarray, layers: list[Layer]) -> np.ndarray:
    """Which pixels are the other picture seen through one of ``layers`` (known grey and
    opacity: no freedom left to fit a pasted or changed patch), within the misfit a
    translucent fit allows."""
    out = np.zeros(len(first), dtype=bool)
    for first_on_top, grey, alpha in layers:
        top, under = (first, second) if first_on_top else (second, first)
        out |= np.abs(top - (under + alpha * (grey - under))).max(axis=1) <= KNOWN_LAYER_MISFIT
    return out


def _opaque(top: np.ndarray, under: np.ndarray) -> np.ndarray:
    """Which pixels of ``top`` fit an opaque layer of one grey over ``under`` (opacity at
    least :data:`OPAQUE_ALPHA`), solved as :func:`_overlay` solves a translucent one."""
    alpha, misfit, _, var = _layer(top, under)
    return np.asarray((var >= OVERLAY_MIN_SPREAD**2) & (alpha >= OPAQUE_ALPHA) & (misfit <= FIT_MISFIT))
