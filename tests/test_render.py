"""The renderer: pure, scaled geometry, and every detail really drawn at every size."""

from __future__ import annotations

import io

import numpy as np
import pytest

from uvlm.data.smartwatch import (
    POSITIONS,
    WEATHERS,
    Attributes,
    RenderStyle,
    layout,
    render,
    sample_attributes,
)
from uvlm.errors import UvlmError

STYLES = [RenderStyle(224), RenderStyle(64), RenderStyle(64, 2.0, 0.32), RenderStyle(96, 1.5)]
# At 64 px the paper's proportions give 3 px text, which nothing can read; the low-resolution
# style enlarges it (docs/data.md, "Rendering at low resolution").
LEGIBLE_TEXT = [s for s in STYLES if s.size * s.detail_scale >= 96]


def attrs(**kw) -> Attributes:
    base = dict(hour=3, minute=15, second=30, weather="sunny", weather_pos="top-left",
                battery=50, battery_pos="bottom-right", face_color=(40, 90, 160))
    return Attributes(**{**base, **kw})


def crop(img, box) -> np.ndarray:
    x0, y0, x1, y1 = (round(v) for v in box)
    return np.asarray(img, dtype=np.float32)[y0:y1 + 1, x0:x1 + 1]


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("style", STYLES, ids=lambda s: f"{s.size}px-x{s.detail_scale}")
def test_render_is_pure_and_sized(style):
    a = attrs()
    img = render(a, style)
    assert img.size == (style.size, style.size) and img.mode == "RGB"
    assert png(render(a, style)) == png(img)


@pytest.mark.parametrize("style", STYLES, ids=lambda s: f"{s.size}px-x{s.detail_scale}")
@pytest.mark.parametrize("pos", POSITIONS)
def test_weather_icons_are_drawn_and_distinct(style, pos):
    battery_pos = next(p for p in POSITIONS if p != pos)
    crops = {w: crop(render(attrs(weather=w, weather_pos=pos, battery_pos=battery_pos), style),
                     layout(attrs(weather=w, weather_pos=pos, battery_pos=battery_pos), style).icon)
             for w in WEATHERS}
    for w, c in crops.items():
        # The icon region is not blank background: at least a fifth of it is drawn.
        drawn = (np.abs(c - 255).sum(axis=-1) > 60).mean()
        assert drawn > 0.2, f"{w} icon not drawn at {style}"
    for i, w in enumerate(WEATHERS):
        for v in WEATHERS[i + 1:]:
            assert np.abs(crops[w] - crops[v]).mean() > 10, f"{w} and {v} look alike at {style}"


@pytest.mark.parametrize("style", LEGIBLE_TEXT, ids=lambda s: f"{s.size}px-x{s.detail_scale}")
def test_battery_text_is_drawn_and_digits_differ(style):
    # 11% and 17% have nearly the same fill; only the text tells them apart.
    a, b = attrs(battery=11), attrs(battery=17)
    box_a = layout(a, style).battery_text
    ca, cb = crop(render(a, style), box_a), crop(render(b, style), box_a)
    assert (ca.mean(axis=-1) < 128).sum() >= 3, "no ink where the battery text belongs"
    assert np.abs(ca - cb).sum(axis=-1).max() > 100, "the digit change is invisible"


def test_battery_fill_is_proportional():
    style = RenderStyle(224)
    greens = []
    for level in (0, 25, 50, 100):
        box = crop(render(attrs(battery=level), style), layout(attrs(battery=level), style).battery)
        green = (box[..., 1] > 120) & (box[..., 0] < 80) & (box[..., 2] < 80)
        greens.append(int(green.sum()))
    assert greens[0] == 0
    assert greens[0] < greens[1] < greens[2] < greens[3]
    assert abs(greens[2] / greens[3] - 0.5) < 0.1


def test_hands_follow_the_time():
    style = RenderStyle(224)
    base = render(attrs(hour=12, minute=0, second=0), style)
    arr = np.asarray(base, dtype=np.float32)
    # At 12:00:00 all hands point up: white pixels above the centre, none below it.
    assert (arr[40:105, 110:114] > 250).all(axis=-1).any()
    assert not (arr[125:180, 108:116] > 250).all(axis=-1).any()
    moved = np.asarray(render(attrs(hour=12, minute=0, second=30), style), dtype=np.float32)
    assert (moved[125:180, 108:116] > 250).all(axis=-1).any(), "second hand at 30 s points down"


def test_hour_zero_and_twelve_render_alike():
    assert png(render(attrs(hour=0))) == png(render(attrs(hour=12)))
    assert attrs(hour=0).visual_key() == attrs(hour=12).visual_key()


def test_sample_attributes_ranges():
    rng = np.random.default_rng(0)
    draws = [sample_attributes(rng) for _ in range(3000)]
    assert {a.hour for a in draws} == set(range(1, 13))
    assert {a.weather for a in draws} == set(WEATHERS)
    assert all(a.weather_pos != a.battery_pos for a in draws)
    assert min(a.battery for a in draws) == 0 or max(a.battery for a in draws) == 100
    authors = [sample_attributes(rng, "0-12") for _ in range(3000)]
    assert {a.hour for a in authors} == set(range(0, 13))


@pytest.mark.parametrize("kw", [dict(weather="foggy"), dict(weather_pos="middle"),
                                dict(battery=101), dict(battery_pos="top-left"), dict(minute=60)])
def test_invalid_attributes_are_refused(kw):
    with pytest.raises(UvlmError):
        attrs(**kw)


def test_small_sizes_are_refused():
    with pytest.raises(UvlmError, match="below 64"):
        RenderStyle(32)


def test_hand_scale_thickens_only_the_hands():
    a, plain = attrs(), RenderStyle(64, 2.0, 0.32)
    thick = RenderStyle(64, 2.0, 0.32, hand_scale=2.0)
    before, after = (np.asarray(render(a, s), dtype=np.float32) for s in (plain, thick))
    y, x = np.mgrid[:64, :64]
    face = np.hypot(x - 31.5, y - 31.5) < 0.32 * 64 - 1  # inside the watch face
    white = [(img.min(axis=2) > 200)[face].sum() for img in (before, after)]  # the hands are white
    assert white[1] > 1.5 * white[0]
    # Nothing outside the face changes: icon, gauge and text are untouched.
    changed = np.abs(before - after).max(axis=2) > 0
    assert changed.any() and not changed[~face].any()
    with pytest.raises(UvlmError, match="hand scale"):
        RenderStyle(64, hand_scale=5.0)


def test_hand_scale_at_its_neutral_value_keeps_dataset_keys():
    """Datasets cached before the field existed keep their config (and so their cache key)."""
    from uvlm.data.mixture import MixtureConfig

    assert "hand_scale" not in MixtureConfig(size=64).to_dict()
    assert "hand_scale" not in RenderStyle(64, 2.0, 0.32).to_dict()
    thick = MixtureConfig(size=64, hand_scale=2.0)
    assert thick.to_dict()["hand_scale"] == 2.0
    assert MixtureConfig.from_dict(thick.to_dict()) == thick
    # 2 and 2.0 are one style: one config, one cache key (json tells them apart)
    import json

    assert json.dumps(MixtureConfig(size=64, hand_scale=2).to_dict()) == json.dumps(thick.to_dict())
    assert json.dumps(RenderStyle(64, 1, 0.4, 2).to_dict()) == json.dumps(thick.style.to_dict())
