"""Tests for the pixel verifier (dedupd.verify through dedupd.matching.compare):
pictures that differ in one region are never `near`; edits that keep the picture are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from dedupd import hashing
from dedupd.config import MatchSettings
from dedupd.matching import compare
from dedupd.models import Fingerprint, Tier, Verdict

import helpers as H

SETTINGS = MatchSettings()


def file_of(picture: Image.Image, fmt: str = "PNG", **params: object) -> tuple[Fingerprint, np.ndarray]:
    data = H.encode(picture, fmt, **params)
    return hashing.fingerprint_bytes(data), hashing.verification_pixels_of(data)


def judge(new: Image.Image, old: Image.Image, fmt: str = "PNG", **params: object) -> Verdict:
    """``new`` saved as ``fmt`` against ``old`` as PNG, as ``verdict_for`` judges two stored files."""
    new_data, old_data = H.encode(new, fmt, **params), H.encode(old, "PNG")
    a, b = file_of(new, fmt, **params), file_of(old)

    def closer(side: int) -> tuple[np.ndarray, np.ndarray]:
        return hashing.verification_pixels_of(new_data, side=side), hashing.verification_pixels_of(old_data, side=side)

    return compare(a[0], b[0], SETTINGS, (a[1], b[1]), closer)


font = H.font


# --- pictures that differ in one region -------------------------------------------


def screenshot(lines: list[str], size: tuple[int, int] = (1280, 800)) -> Image.Image:
    im = Image.new("RGB", size, (250, 250, 250))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, size[0], 36), fill=(40, 44, 52))
    d.text((12, 8), "editor.py - Code", font=font(16), fill=(220, 220, 220))
    for i, line in enumerate(lines):
        d.text((48, 56 + 22 * i), f"{i + 1:>3}", font=font(15), fill=(150, 150, 150))
        d.text((96, 56 + 22 * i), line, font=font(15), fill=(30, 30, 30))
    return im


CODE = [
    "import numpy as np",
    "",
    "def total(values, weights):",
    "    \"\"\"The weighted sum of the values.\"\"\"",
    "    checked = [v for v in values if v is not None]",
    "    return sum(v * w for v, w in zip(checked, weights))",
    "",
    "def mean(values):",
    "    return total(values, [1] * len(values)) / len(values)",
    "",
    "class Report:",
    "    def __init__(self, rows):",
    "        self.rows = list(rows)",
    "    def render(self):",
    "        return '\\n'.join(str(r) for r in self.rows)",
] * 2


def bar_chart(values: list[int]) -> Image.Image:
    im = Image.new("RGB", (800, 600), "white")
    d = ImageDraw.Draw(im)
    d.line((80, 40, 80, 540), fill="black", width=2)
    d.line((80, 540, 760, 540), fill="black", width=2)
    for tick in range(0, 101, 20):
        y = 540 - tick * 5
        d.line((74, y, 80, y), fill="black", width=2)
        d.text((30, y - 8), str(tick), font=font(14), fill="black")
    for i, v in enumerate(values):
        x = 120 + i * 160
        d.rectangle((x, 540 - v * 5, x + 100, 540), fill=(70, 110, 200))
        d.text((x + 30, 550), f"Q{i + 1}", font=font(14), fill="black")
    return im


def form(ticked: set[int]) -> Image.Image:
    im = Image.new("RGB", (900, 700), (252, 252, 248))
    d = ImageDraw.Draw(im)
    d.text((40, 30), "Application form", font=font(28), fill="black")
    for i in range(10):
        y = 100 + i * 55
        d.rectangle((40, y, 64, y + 24), outline="black", width=2)
        d.text((80, y + 2), f"I agree with statement number {i + 1} of the terms", font=font(18), fill="black")
        if i in ticked:
            d.line((44, y + 12, 51, y + 20), fill="black", width=3)
            d.line((51, y + 20, 61, y + 4), fill="black", width=3)
    return im


def sign(word: str) -> Image.Image:
    im = H.photo(21, (640, 480))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle((220, 190, 420, 270), radius=10, fill=(30, 30, 30))
    d.text((320, 230), word, font=font(40), fill=(240, 200, 40), anchor="mm")
    return im


def traffic_light(green: bool) -> Image.Image:
    im = H.photo(22, (480, 640))
    d = ImageDraw.Draw(im)
    d.rectangle((200, 150, 280, 390), fill=(25, 25, 25))
    for k, colour in enumerate(((220, 30, 30), (230, 180, 30), (40, 200, 60))):
        lit = (k == 2) == green and k != 1
        fill = colour if lit else tuple(c // 5 for c in colour)
        d.ellipse((215, 160 + k * 75, 265, 210 + k * 75), fill=fill)
    return im


def with_object(seed: int, at: tuple[int, int], colour: tuple[int, int, int] = (200, 40, 40)) -> Image.Image:
    im = H.photo(seed, (640, 480))
    d = ImageDraw.Draw(im)
    x, y = at
    d.ellipse((x, y, x + 36, y + 36), fill=colour)
    return im


def with_caption(seed: int) -> Image.Image:
    im = H.photo(seed, (640, 480))
    ImageDraw.Draw(im).text((320, 440), "Summer 2019, the lake house", font=font(22), fill="white", anchor="mm")
    return im


REGION_PAIRS = {
    "line-of-code-changed": (screenshot(CODE), screenshot([*CODE[:5], "    checked = [v for v in values if v]", *CODE[6:]])),
    "chart-value-60-to-65": (bar_chart([40, 60, 85, 30]), bar_chart([40, 65, 85, 30])),
    "box-ticked": (form({0, 3}), form({0, 3, 6})),
    "sign-open-closed": (sign("OPEN"), sign("CLOSED")),
    "traffic-light-red-green": (traffic_light(False), traffic_light(True)),
    "object-added": (H.photo(23, (640, 480)), with_object(23, (400, 120))),
    "object-moved": (with_object(24, (100, 300)), with_object(24, (460, 80))),
    "caption-added": (H.photo(25, (640, 480)), with_caption(25)),
}


@pytest.mark.parametrize(
    ("name", "fmt"),
    [(name, "PNG") for name in REGION_PAIRS] + [("line-of-code-changed", "JPEG"), ("box-ticked", "JPEG"), ("caption-added", "JPEG")],
)
def test_pictures_that_differ_in_one_region_are_never_near(name: str, fmt: str) -> None:
    """An object added or moved, a chart value, a line of text, a ticked box, a caption: similar at most, and the reason says where."""
    old, new = REGION_PAIRS[name]
    for a, b in ((new, old), (old, new)):
        verdict = judge(a, b, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        assert verdict.match is None or verdict.match.tier is Tier.SIMILAR, verdict.reason
        if verdict.match is not None:
            assert "differs" in verdict.reason


def corner_caption(im: Image.Image) -> Image.Image:
    """Opaque white words in the bottom-right corner, 5% of the height: where and how
    large a text watermark would be, but nothing of the picture shows through them."""
    out = im.copy()
    draw = ImageDraw.Draw(out)
    text = "\u00a9 Example Photo 2024"
    f = font(max(8, round(im.height * 0.05)))
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=f)
    margin = round(min(im.size) * 0.02)
    draw.text((im.width - margin - x1, im.height - margin - y1), text, font=f, fill=(255, 255, 255))
    return out


@pytest.mark.skipif(not (H.PHOTOS / "Storm.jpg").is_file(), reason="the shared photos are not here")
@pytest.mark.parametrize("name", ["Storm.jpg", "Garden.jpg", "RainDrops.jpg", "umang_by_Abhishek_Mudgal.jpg"])
def test_an_opaque_corner_caption_on_a_real_photo_is_never_near(name: str) -> None:
    """Thin opaque words where a watermark would be are a change, not a watermark: at the compared
    size their stroke edges fit a translucent layer, and a rule trusting that would call them near."""
    with Image.open(H.PHOTOS / name) as im:
        im.draft("RGB", (im.width // 4, im.height // 4))
        old = im.convert("RGB")
    verdict = judge(corner_caption(old), old, "JPEG", quality=90)
    assert verdict.match is not None and verdict.match.tier is Tier.SIMILAR, verdict.reason
    assert "bottom-right" in verdict.reason


def test_similar_reason_says_how_much_and_where() -> None:
    """A copy changed in one corner is similar, with the share of the frame and the corner named."""
    old = H.photo(26, (640, 480))
    new = old.copy()
    ImageDraw.Draw(new).rectangle((20, 20, 150, 110), fill=(240, 240, 240))
    verdict = judge(new, old)
    assert verdict.match is not None and verdict.match.tier is Tier.SIMILAR, verdict.reason
    assert "% of the frame differs, top-left" in verdict.reason


# --- edits that keep the picture ---------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        pytest.param(lambda im: im.crop((64, 0, im.width, im.height)), "cropped", id="crop-15pct-left"),
        pytest.param(lambda im: im.crop((24, 18, im.width - 24, im.height - 18)), "cropped", id="crop-5pct-all"),
        pytest.param(lambda im: ImageOps.expand(im, border=16, fill=(0, 0, 0)), "padded", id="pad-16px"),
        pytest.param(lambda im: im.rotate(3, resample=Image.Resampling.BICUBIC), "counter-clockwise", id="rotate-3"),
    ],
)
def test_framing_edits_are_near_and_the_reason_says_what(edit: object, words: str) -> None:
    """A crop, a pad or a small rotation is near, and the reason names the edit."""
    old = H.photo(27, (480, 360))
    verdict = judge(edit(old), old, "JPEG", quality=90)  # type: ignore[operator]
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR, verdict.reason
    assert words in verdict.reason


def test_grayscale_copy_is_similar_not_near() -> None:
    """A grayscale copy of a colourful picture is similar (strongly recoloured), never near."""
    old = H.photo(28, (480, 360))
    verdict = judge(old.convert("L").convert("RGB"), old)
    assert verdict.match is not None and verdict.match.tier is Tier.SIMILAR, verdict.reason
    assert "recoloured" in verdict.reason


PHOTOS = H.PHOTOS  # ../shared/photos, or /work/shared/photos from a clone elsewhere


def _contrast(im: Image.Image, gain: float) -> Image.Image:
    """``im`` with its contrast scaled by ``gain`` about mid-grey, no pixel clipped."""
    arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    return Image.fromarray(np.clip((arr - 128.0) * gain + 128.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


@pytest.mark.parametrize(("gain", "tier"), [(0.85, Tier.NEAR), (1.15, Tier.NEAR), (0.5, Tier.SIMILAR), (0.6, Tier.SIMILAR)])
def test_contrast_changed_strongly_is_similar_and_mildly_is_near(gain: float, tier: Tier) -> None:
    """Contrast changed by 15% is a mild edit (near); halved, it is another render (similar), like a colourway."""
    old = Image.open(PHOTOS / "Blinds.jpg").convert("RGB")
    old.thumbnail((640, 640))
    old = _contrast(old, 0.7)  # room for 1.15 without clipping
    verdict = judge(_contrast(old, gain), old, "JPEG", quality=92)
    assert verdict.match is not None and verdict.match.tier is tier, verdict.reason
    if tier is Tier.SIMILAR:
        assert "contrast" in verdict.reason


def test_light_and_dark_renders_stay_apart_when_one_is_framed() -> None:
    """MATE-Stripes Light with a 3% white frame against Dark: another render of the design, never near."""
    dark = Image.open(PHOTOS / "variants" / "MATE-Stripes-Dark.png")
    light = Image.open(PHOTOS / "variants" / "MATE-Stripes-Light.png").convert("RGBA")
    framed = ImageOps.expand(light, border=(light.width * 3 // 100, light.height * 3 // 100), fill=(255, 255, 255, 255))
    for a, b in ((framed, dark), (dark, framed)):
        verdict = judge(a, b)
        assert verdict.match is None or verdict.match.tier is Tier.SIMILAR, verdict.reason


@pytest.mark.skipif(not (PHOTOS / "variants" / "MATE-Stripes-Dark.png").is_file(), reason="the shared photos are not here")
@pytest.mark.parametrize("turn", [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_180])
def test_a_turned_copy_of_a_flat_design_is_near(turn: Image.Transpose) -> None:
    """A resized and turned copy of a flat design is near: its features line the frames up by the turn, and
    that alignment (not an edit's small rotation) must not outrank the same turn tried as an orientation."""
    with Image.open(PHOTOS / "variants" / "MATE-Stripes-Dark.png") as im:
        old = im.copy()  # its stripes are in the alpha channel, composited as the verifier sees them
    # downscaled to 2.5 MP as bench/dataset.py makes its working copies, then turned
    small = old.resize((1826, 1369), Image.Resampling.LANCZOS, reducing_gap=3.0)
    verdict = judge(small.transpose(turn), old)
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR, verdict.reason
    assert "rotated" in verdict.reason


def _hue_turned(im: Image.Image, degrees: float) -> Image.Image:
    """``im`` with every pixel's hue turned by ``degrees``: its Cb/Cr vector rotated, its luma kept."""
    ycc = np.asarray(im.convert("YCbCr"), dtype=np.float32)
    cb, cr = ycc[..., 1] - 128.0, ycc[..., 2] - 128.0
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    ycc[..., 1], ycc[..., 2] = 128.0 + c * cb - s * cr, 128.0 + s * cb + c * cr
    return Image.fromarray(np.clip(ycc + 0.5, 0, 255).astype(np.uint8), "YCbCr").convert("RGB")


def _warmer(im: Image.Image, amount: float) -> Image.Image:
    """A white-balance edit: red up and blue down by ``amount``."""
    arr = np.asarray(im.convert("RGB"), dtype=np.float32) * np.array([1 + amount, 1.0, 1 - amount], dtype=np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


@pytest.mark.skipif(not (PHOTOS / "Wood.jpg").is_file(), reason="the shared photos are not here")
@pytest.mark.parametrize(
    ("photo", "edit", "tier"),
    [
        ("Wood.jpg", lambda im: _hue_turned(im, 60), Tier.SIMILAR),
        ("Storm.jpg", lambda im: _hue_turned(im, 45), Tier.SIMILAR),
        ("Aqua.jpg", lambda im: _hue_turned(im, -60), Tier.SIMILAR),
        ("Wood.jpg", lambda im: _hue_turned(im, 5), Tier.NEAR),
        ("Aqua.jpg", lambda im: _hue_turned(im, -5), Tier.NEAR),
        ("Aqua.jpg", lambda im: _warmer(im, 0.08), Tier.NEAR),
    ],
    ids=["wood-60", "storm-45", "aqua-minus-60", "wood-5", "aqua-minus-5", "aqua-warmer-8pct"],
)
def test_a_copy_whose_hue_is_turned_far_is_similar_and_slightly_near(photo: str, edit: Any, tier: Tier) -> None:
    """A turn of hue is a colourway, not a mild recolour, even on a muted photo whose colours lie along one
    line (where a per-channel fit of the chroma leaves almost no residual); a turn of 5° or a warmer white
    balance is a mild edit."""
    old = Image.open(PHOTOS / photo).convert("RGB")
    old.thumbnail((1024, 1024))
    verdict = judge(edit(old), old, "JPEG", quality=92)
    assert verdict.match is not None and verdict.match.tier is tier, verdict.reason
    if tier is Tier.SIMILAR:
        assert "hue turned" in verdict.reason


@pytest.mark.skipif(not (PHOTOS / "Wood.jpg").is_file(), reason="the shared photos are not here")
@pytest.mark.parametrize(("photo", "share", "degrees"), [
    ("Wood.jpg", 0.02, 90), ("Aqua.jpg", 0.05, 180), ("TwoWings.jpg", 0.1, 90), ("umang_by_Abhishek_Mudgal.jpg", 0.02, 180),
])  # fmt: skip
def test_an_object_recoloured_with_its_lightness_kept_is_never_near(photo: str, share: float, degrees: float) -> None:
    """A product in another colour, the rest of the photo unchanged: a region whose hue alone changed
    differs as one whose lightness did, however little the colours of the whole picture moved."""
    old = Image.open(PHOTOS / photo).convert("RGB")
    old.thumbnail((1024, 1024))
    w, h = old.size
    side = share**0.5
    box = (int(w * 0.55), int(h * 0.2), int(w * (0.55 + side)), int(h * (0.2 + side)))
    new = old.copy()
    new.paste(_hue_turned(old.crop(box), degrees), box[:2])
    for a, b in ((new, old), (old, new)):
        verdict = judge(a, b, "JPEG", quality=90)
        assert verdict.match is not None and verdict.match.tier is Tier.SIMILAR, verdict.reason
        assert "differs" in verdict.reason


@pytest.mark.parametrize("scale", [1.0, 0.5], ids=["300dpi", "150dpi-copy"])
def test_two_invoices_that_differ_in_the_total_are_not_near(scale: float) -> None:
    """Two scanned invoices whose totals differ (1,250.00 and 7,250.00) are different
    documents, and so are a 150 dpi copy of one and the other.

    At the working size the 10 pt text is 6 px tall and the changed digit is
    within the tolerance every edit needs; the second look, closer, sees it."""
    new = H.invoice("7,250.00")
    new = new.resize((round(new.width * scale), round(new.height * scale)), Image.Resampling.LANCZOS)
    verdict = judge(new, H.invoice("1,250.00"), "JPEG", quality=90)
    assert verdict.match is not None and verdict.match.tier is Tier.SIMILAR, verdict.reason
    assert "looked at again at" in verdict.reason and "bottom" in verdict.reason, verdict.reason


def _padded(im: Image.Image, share: float) -> Image.Image:
    pad = int(max(im.size) * share)
    out = Image.new("RGB", (im.width + 2 * pad, im.height + 2 * pad), (0, 0, 0))
    out.paste(im, (pad, pad))
    return out


@pytest.mark.parametrize(
    ("edit", "fmt", "params"),
    [
        (lambda im: im, "JPEG", {"quality": 50}),
        (lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS), "JPEG", {"quality": 85}),
        (lambda im: im.crop((124, 175, im.width - 124, im.height - 175)), "JPEG", {"quality": 90}),
        (lambda im: _padded(im, 0.03), "PNG", {}),
        (lambda im: im.rotate(1, resample=Image.Resampling.BICUBIC, fillcolor=(252, 252, 250)), "JPEG", {"quality": 90}),
        (lambda im: im.transpose(Image.Transpose.ROTATE_90), "JPEG", {"quality": 90}),
        (lambda im: im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "GIF", {}),
        (lambda im: im.convert("L"), "PNG", {}),
    ],
    ids=["q50", "half-size", "crop-5pct", "pad-3pct", "rotated-1deg", "rotated-90", "gif", "grey"],
)
def test_copies_of_a_page_stay_near_after_the_second_look(edit: Any, fmt: str, params: dict[str, object]) -> None:
    """The second look does not take a page's edited copy for a changed one: re-encoded,
    halved, cropped, padded, turned a little or a quarter, converted to GIF or grey."""
    page = H.invoice("1,250.00")
    verdict = judge(edit(page), page, fmt, **params)
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR, verdict.reason


def test_the_second_look_is_taken_only_at_a_page_like_pair_reduced_enough() -> None:
    """A photo's copies are not re-read (their detail is not small print), nor a page
    already compared near its own size; a large page is, at most at FINE_SIDE."""
    from dedupd import verify

    photo = hashing.verification_pixels_of(H.encode(Image.open(PHOTOS / "Storm.jpg").convert("RGB"), "JPEG"))
    page = hashing.verification_pixels_of(H.encode(H.invoice("1,250.00"), "PNG"))
    assert verify.second_look_side(photo, photo, 4000, 4000) == 0
    assert verify.second_look_side(page, page, 3508, 3508) == verify.FINE_SIDE
    assert verify.second_look_side(page, page, 3508, 1754) == 1754
    assert verify.second_look_side(page, page, 800, 3508) == 0


def test_a_scan_quarantines_a_copy_of_a_page_and_never_the_changed_one(tmp_path: Path, run_cli: H.RunCli) -> None:
    """Through the real CLI: with near set to quarantine, the halved copy of an invoice is
    moved; the invoice whose total differs is listed similar, never moved; `compare` says why."""
    root, quarantine = tmp_path / "docs", tmp_path / "q"
    root.mkdir()
    H.invoice("1,250.00").save(root / "a_invoice.png")
    changed = H.invoice("7,250.00")
    changed.save(root / "b_invoice_total_changed.jpg", quality=90)
    copy = H.invoice("1,250.00")
    copy.resize((1240, 1754), Image.Resampling.LANCZOS).save(root / "c_invoice_copy.jpg", quality=85)
    config = tmp_path / "c.yaml"
    config.write_text(f"quarantine_dir: {quarantine}\nactions: {{near: quarantine}}\n")
    quarantine.mkdir(parents=True, exist_ok=True)
    result = run_cli("scan", root, "--config", config)
    assert result.returncode == 0, result.stderr
    audit = run_cli("audit", "--format", "json").stdout
    assert sorted(p.name for p in root.iterdir()) == ["a_invoice.png", "b_invoice_total_changed.jpg"], audit
    similar = json.loads(run_cli("groups", "--format", "json", "--tier", "similar").stdout)
    assert [(Path(g["original"]).name, [Path(d["path"]).name for d in g["duplicates"]]) for g in similar] == [
        ("a_invoice.png", ["b_invoice_total_changed.jpg"])
    ]
    said = run_cli("compare", root / "a_invoice.png", root / "b_invoice_total_changed.jpg", "--format", "json")
    assert said.returncode == 4, said.stdout + said.stderr
    assert "looked at again at" in json.loads(said.stdout)["reason"]


# --- a closer look at a watermark ----------------------------------------------------


def _watermarked(im: Image.Image, fill: tuple[int, int, int, int], outline: tuple[int, int, int, int] | None) -> Image.Image:
    """Translucent words in the bottom-right corner, as a stock site marks a photo."""
    return H.corner_words(im, fill, outline)[0]


def _full_size(name: str) -> Image.Image:
    with Image.open(PHOTOS / name) as im:
        return im.convert("RGB")


@pytest.mark.skipif(not (PHOTOS / "FreshFlower.jpg").is_file(), reason="the shared photos are not here")
@pytest.mark.parametrize(
    ("name", "fill", "outline"),
    [
        ("FreshFlower.jpg", (255, 255, 255, 170), (0, 0, 0, 120)),
        ("Blinds.jpg", (255, 255, 255, 170), (0, 0, 0, 120)),
        ("Wine_by_Jakkub_Mede.jpg", (255, 255, 255, 170), (0, 0, 0, 120)),
        ("Storm.jpg", (255, 255, 255, 110), None),
        ("FreshFlower.jpg", (255, 255, 255, 110), None),
    ],
)
def test_a_photo_under_a_translucent_text_watermark_is_near(
    name: str, fill: tuple[int, int, int, int], outline: tuple[int, int, int, int] | None
) -> None:
    """Looked at again closer, the insides of the watermark's strokes show the photo through them."""
    old = _full_size(name)
    verdict = judge(_watermarked(old, fill, outline), old, "JPEG", quality=90)
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR, verdict.reason
    assert "under a light overlay (watermark): looked at again" in verdict.reason


@pytest.mark.skipif(not (PHOTOS / "Storm.jpg").is_file(), reason="the shared photos are not here")
@pytest.mark.parametrize("name", ["Storm.jpg", "Garden.jpg", "FreshFlower.jpg"])
def test_opaque_words_or_a_pasted_patch_on_a_full_size_photo_are_never_near(name: str) -> None:
    """Where the closer look can judge strokes, an opaque caption (plain, or outlined as the
    watermark is), a patch of the photo pasted elsewhere, and a watermark beside an added
    object all stay similar."""
    old = _full_size(name)
    outlined = _watermarked(old, (255, 255, 255, 255), (0, 0, 0, 255))
    w, h = old.size
    patched = H.pasted(old)
    both = _watermarked(old, (255, 255, 255, 170), (0, 0, 0, 120))
    ImageDraw.Draw(both).ellipse((w // 4, h // 4, w // 4 + h // 25, h // 4 + h // 25), fill=(200, 40, 40))
    for new in (corner_caption(old), outlined, patched, both):
        verdict = judge(new, old, "JPEG", quality=90)
        assert verdict.match is not None and verdict.match.tier is Tier.SIMILAR, verdict.reason


@pytest.mark.skipif(not (PHOTOS / "Storm.jpg").is_file(), reason="the shared photos are not here")
@pytest.mark.parametrize("side", [10, 14, 20])
def test_a_small_change_beside_a_watermark_keeps_the_pair_similar(side: int) -> None:
    """A red dot just above the watermark's words, seen at the working size on its own, is
    not hidden by the watermark's translucent layer around it."""
    old = _full_size("Storm.jpg")
    new, (x0, top, x1, _) = H.corner_words(old, (255, 255, 255, 170), (0, 0, 0, 120))
    x, y = (x0 + x1) // 2, top  # the dot 4 px above the words' ink, half way along
    ImageDraw.Draw(new).ellipse((x, y - side - 4, x + side, y - 4), fill=(200, 40, 40))
    alone = old.copy()
    ImageDraw.Draw(alone).ellipse((x, y - side - 4, x + side, y - 4), fill=(200, 40, 40))
    assert judge(alone, old, "JPEG", quality=90).match.tier is Tier.SIMILAR  # type: ignore[union-attr]
    verdict = judge(new, old, "JPEG", quality=90)
    assert verdict.match is not None and verdict.match.tier is Tier.SIMILAR, verdict.reason


@pytest.mark.skipif(not (PHOTOS / "Storm.jpg").is_file(), reason="the shared photos are not here")
@pytest.mark.parametrize("name", ["Storm.jpg", "FreshFlower.jpg"])
def test_a_watermark_partly_over_grey_is_near_and_a_grey_change_beside_it_is_not(name: str) -> None:
    """Half the watermark's words lie over a grey area (no colour underneath to judge a
    stroke by): judged against the layer the other half shows (its grey and opacity known),
    they are the photo under the watermark, and the pair is near. A light grey dot beside
    them in that area fits no such layer and keeps the pair similar (taken as fitting
    unchecked, the grey pixels would make it near)."""
    photo = _full_size(name)
    probe, (x0, top, x1, bottom) = H.corner_words(photo, (255, 255, 255, 170), (0, 0, 0, 120))
    grey_box = ((x0 + x1) // 2, top - 60, photo.width, photo.height)
    old = photo.copy()
    old.paste(photo.crop(grey_box).convert("L").convert("RGB"), grey_box[:2])
    new, _ = H.corner_words(old, (255, 255, 255, 170), (0, 0, 0, 120))
    verdict = judge(new, old, "JPEG", quality=90)
    assert verdict.match is not None and verdict.match.tier is Tier.NEAR, verdict.reason
    # a dot a little lighter than the grey it covers: no white layer at the watermark's
    # opacity gives that, and no black one (a flat dot darker than a flat grey would be
    # what a black layer gives: over a smooth area the two cannot be told apart)
    x = (x0 + 3 * x1) // 4
    dot = (x, top - 22, x + 16, top - 6)
    level = min(255, round(float(np.asarray(old.crop(dot).convert("L")).mean())) + 35)
    ImageDraw.Draw(new).ellipse(dot, fill=(level, level, level))
    verdict = judge(new, old, "JPEG", quality=90)
    assert verdict.match is not None and verdict.match.tier is Tier.SIMILAR, verdict.reason
