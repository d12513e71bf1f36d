"""The SmartWatch renderer: an attributes record in, a watch image out.

Geometry follows the authors' renders at 224 px (see shared/paper/notes.md): a face of radius
0.4 x size in a random colour, three white hands, a weather icon and a battery gauge in two
different corners. Every length is given at 224 px and scaled to the requested size, so any
size from 64 up draws the same picture. Icons are drawn procedurally (no asset files) and
the battery text uses Pillow's bundled scalable font (no system fonts).

Rendering is a pure function of (attributes, style): same inputs, same pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from uvlm.errors import UvlmError

WEATHERS = ("sunny", "cloudy", "rainy")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
HOUR_RANGES = ("1-12", "0-12")
MIN_SIZE = 64

# Lengths in pixels at the paper's 224 px canvas.
_REF = 224
_ICON = 30
_MARGIN = 10
_BATTERY_BOX = (25, 10)
_FONT = 11
_HAND_WIDTHS = (6, 4, 2)  # hour, minute, second
_HAND_LENGTHS = (0.5, 0.7, 0.9)  # fraction of the face radius

_BACKGROUND = (255, 255, 255)
_HAND = (255, 255, 255)
_INK = (0, 0, 0)
_BATTERY_FILL = (0, 170, 0)
_SUN = (255, 176, 0)
_CLOUD = (160, 160, 170)
_RAIN_CLOUD = (90, 95, 110)
_RAIN = (30, 90, 230)


@dataclass(frozen=True)
class Attributes:
    """Ground truth of one watch image. `face_color` is drawn but never named in text."""

    hour: int
    minute: int
    second: int
    weather: str
    weather_pos: str
    battery: int
    battery_pos: str
    face_color: tuple[int, int, int]

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.hour <= 12, f"hour {self.hour} not in 0..12"),
            (0 <= self.minute <= 59, f"minute {self.minute} not in 0..59"),
            (0 <= self.second <= 59, f"second {self.second} not in 0..59"),
            (self.weather in WEATHERS, f"weather {self.weather!r} not one of {WEATHERS}"),
            (self.weather_pos in POSITIONS, f"position {self.weather_pos!r} not one of {POSITIONS}"),
            (self.battery_pos in POSITIONS, f"position {self.battery_pos!r} not one of {POSITIONS}"),
            (self.weather_pos != self.battery_pos, "weather and battery share a corner"),
            (0 <= self.battery <= 100, f"battery {self.battery} not in 0..100"),
            (len(self.face_color) == 3 and all(0 <= c <= 255 for c in self.face_color),
             f"face colour {self.face_color} is not RGB"),
        ]
        for ok, message in checks:
            if not ok:
                raise UvlmError(f"invalid attributes: {message}")

    @property
    def time(self) -> str:
        """The time as the answers spell it: HH:MM:SS."""
        return f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"

    @property
    def battery_text(self) -> str:
        """The battery level as the answers and the gauge spell it: NN%."""
        return f"{self.battery}%"

    def answer(self, attribute: str) -> str:
        """The terse ground-truth answer for one VQA attribute."""
        return {
            "time": self.time,
            "weather": self.weather,
            "weather_pos": self.weather_pos,
            "battery": self.battery_text,
            "battery_pos": self.battery_pos,
        }[attribute]

    def visual_key(self) -> tuple:
        """What the pixels show: hour 0 and 12 render alike, so they share a key."""
        return (self.hour % 12, self.minute, self.second, self.weather, self.weather_pos,
                self.battery, self.battery_pos, tuple(self.face_color))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["face_color"] = list(self.face_color)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Attributes:
        return cls(**{**d, "face_color": tuple(d["face_color"])})


def sample_attributes(rng: np.random.Generator, hours: str = "1-12") -> Attributes:
    """Draw one attributes record uniformly, as the authors do.

    hours="1-12" (default) gives every image one label; "0-12" reproduces the authors'
    draw, where 00 and 12 render identically but carry different labels.
    """
    if hours not in HOUR_RANGES:
        raise UvlmError(f"unknown hour range {hours!r}; use one of {HOUR_RANGES}")
    low = 1 if hours == "1-12" else 0
    hour = int(rng.integers(low, 13))
    minute, second = (int(v) for v in rng.integers(0, 60, size=2))
    weather = WEATHERS[int(rng.integers(3))]
    corners = rng.permutation(len(POSITIONS))[:2]
    battery = int(rng.integers(0, 101))
    color = tuple(int(c) for c in rng.integers(0, 256, size=3))
    return Attributes(hour, minute, second, weather, POSITIONS[corners[0]], battery,
                      POSITIONS[corners[1]], color)


# The CPU preset's rendering: 64 px, details twice the paper's relative size, a smaller face
# so nothing overlaps (docs/data.md, "Rendering at low resolution").
CPU_STYLE = {"size": 64, "detail_scale": 2.0, "face_radius": 0.32}


@dataclass(frozen=True)
class RenderStyle:
    """How to draw: canvas size and the scale of the small details.

    detail_scale enlarges the weather icon, the battery gauge and its text relative to the
    paper's proportions; at 64 px the paper's 9 px icon and 3 px text are too small for a
    tiny model to read (shared/field-notes.md), so low-resolution presets enlarge them.
    hand_scale thickens the clock hands likewise: at 64 px the paper's minute and second
    hands are about one pixel wide, thinner than an 8 x 8-pixel VQ code can keep.
    """

    size: int = 224
    detail_scale: float = 1.0
    face_radius: float = 0.4
    hand_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("detail_scale", "face_radius", "hand_scale"):  # 3 and 3.0: one style, one cache key
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.size < MIN_SIZE:
            raise UvlmError(f"image size {self.size} is below {MIN_SIZE} px; use --size {MIN_SIZE} or more")
        if not 0.25 <= self.detail_scale <= 4:
            raise UvlmError(f"detail scale {self.detail_scale} outside [0.25, 4]")
        if not 0.1 <= self.face_radius <= 0.5:
            raise UvlmError(f"face radius {self.face_radius} outside [0.1, 0.5] of the image size")
        if not 0.25 <= self.hand_scale <= 4:
            raise UvlmError(f"hand scale {self.hand_scale} outside [0.25, 4]")

    @classmethod
    def of(cls, config: dict) -> RenderStyle:
        """The style fields of any config mapping (a dataset manifest's, a preset's data section)."""
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})

    def to_dict(self) -> dict:
        """The style as configs and cache keys hold it: the hand scale only where it is not the
        neutral 1.0, so the keys of everything made before it existed stay valid."""
        d = asdict(self)
        if d["hand_scale"] == 1.0:
            del d["hand_scale"]
        return d

    @property
    def supersample(self) -> int:
        """Draw this many times larger and box-filter down: anti-aliased edges at any size."""
        return 4 if self.size < 128 else 2


@lru_cache(maxsize=16)
def _font(pixels: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=pixels)


def _corner_box(pos: str, width: float, height: float, canvas: int, margin: float) -> tuple:
    """Top-left corner of a width x height box placed `margin` from the named corner."""
    vertical, horizontal = pos.split("-")
    x = margin if horizontal == "left" else canvas - margin - width
    y = margin if vertical == "top" else canvas - margin - height
    return x, y


def _draw_cloud(draw: ImageDraw.ImageDraw, x: float, y: float, w: float, h: float, color) -> None:
    """A cloud of three puffs on a flat base, filling the box (x, y, w, h)."""
    base_top = y + 0.45 * h
    draw.rounded_rectangle((x, base_top, x + w, y + h), radius=0.25 * h, fill=color)
    for cx, cy, r in ((0.30, 0.55, 0.24), (0.55, 0.40, 0.32), (0.78, 0.58, 0.20)):
        draw.ellipse((x + cx * w - r * w, y + cy * h - r * w, x + cx * w + r * w, y + cy * h + r * w),
                     fill=color)


def _draw_weather(draw: ImageDraw.ImageDraw, weather: str, x: float, y: float, s: float) -> None:
    """Draw a sun, a cloud, or a cloud with rain drops in the s x s box at (x, y)."""
    if weather == "sunny":
        cx, cy = x + s / 2, y + s / 2
        ray_width = max(1, round(s / 14))
        for k in range(8):
            a = k * math.pi / 4
            draw.line((cx + 0.32 * s * math.cos(a), cy + 0.32 * s * math.sin(a),
                       cx + 0.49 * s * math.cos(a), cy + 0.49 * s * math.sin(a)),
                      fill=_SUN, width=ray_width)
        r = 0.26 * s
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_SUN)
    elif weather == "cloudy":
        _draw_cloud(draw, x, y + 0.15 * s, s, 0.7 * s, _CLOUD)
    else:
        _draw_cloud(draw, x, y, s, 0.6 * s, _RAIN_CLOUD)
        drop_width = max(1, round(s / 12))
        for dx in (0.25, 0.5, 0.75):
            draw.line((x + dx * s, y + 0.68 * s, x + (dx - 0.08) * s, y + 0.98 * s),
                      fill=_RAIN, width=drop_width)


def _battery_geometry(level: int, pos: str, canvas: int, k: float, margin: float) -> dict:
    """Boxes of the battery gauge and its text on a canvas (k = canvas px per paper px)."""
    box_w, box_h = _BATTERY_BOX[0] * k, _BATTERY_BOX[1] * k
    gap = 2 * k
    font = _font(max(4, round(_FONT * k)))
    text = f"{level}%"
    left, top, right, bottom = font.getbbox(text)
    text_w, text_h = right - left, bottom - top
    group_w, group_h = box_w + gap + text_w, max(box_h, text_h)
    x, y = _corner_box(pos, group_w, group_h, canvas, margin)
    by = y + (group_h - box_h) / 2
    ty = y + (group_h - text_h) / 2
    return {
        "box": (x, by, x + box_w, by + box_h),
        "text": (x + box_w + gap, ty, x + box_w + gap + text_w, ty + text_h),
        "text_origin": (x + box_w + gap - left, ty - top),
        "font": font,
        "label": text,
    }


def _draw_battery(draw: ImageDraw.ImageDraw, level: int, geometry: dict, k: float) -> None:
    """Outlined box with a nub and a green fill proportional to the level, 'NN%' beside it."""
    x0, y0, x1, y1 = geometry["box"]
    outline = max(1, round(k))
    nub = max(1, round(2 * k))
    draw.rectangle((x0, y0, x1 - nub, y1), outline=_INK, width=outline)
    draw.rectangle((x1 - nub, y0 + 0.3 * (y1 - y0), x1, y0 + 0.7 * (y1 - y0)), fill=_INK)
    inner = x1 - x0 - nub - 2 * outline
    if level > 0:
        draw.rectangle((x0 + outline, y0 + outline, x0 + outline + inner * level / 100, y1 - outline),
                       fill=_BATTERY_FILL)
    draw.text(geometry["text_origin"], geometry["label"], fill=_INK, font=geometry["font"])


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Layout:
    """Where the details sit, in output pixels (x0, y0, x1, y1)."""

    icon: Box
    battery: Box
    battery_text: Box


def _canvas_layout(attrs: Attributes, style: RenderStyle) -> tuple[int, float, Box, dict]:
    canvas = style.size * style.supersample
    unit = canvas / _REF  # canvas pixels per paper pixel
    detail = unit * style.detail_scale
    icon = _ICON * detail
    ix, iy = _corner_box(attrs.weather_pos, icon, icon, canvas, _MARGIN * unit)
    battery = _battery_geometry(attrs.battery, attrs.battery_pos, canvas, detail, _MARGIN * unit)
    return canvas, unit, (ix, iy, ix + icon, iy + icon), battery


def layout(attrs: Attributes, style: RenderStyle | None = None) -> Layout:
    """Boxes of the weather icon, the battery gauge and its text: for tests and probes."""
    style = style or RenderStyle()
    _, _, icon, battery = _canvas_layout(attrs, style)
    ss = style.supersample

    def scale(box: Box) -> Box:
        return tuple(v / ss for v in box)  # type: ignore[return-value]

    return Layout(scale(icon), scale(battery["box"]), scale(battery["text"]))


def render(attrs: Attributes, style: RenderStyle | None = None) -> Image.Image:
    """Draw one SmartWatch image (RGB, style.size x style.size)."""
    style = style or RenderStyle()
    canvas, unit, icon, battery = _canvas_layout(attrs, style)
    img = Image.new("RGB", (canvas, canvas), _BACKGROUND)
    draw = ImageDraw.Draw(img)

    c = canvas / 2
    radius = style.face_radius * canvas
    draw.ellipse((c - radius, c - radius, c + radius, c + radius), fill=tuple(attrs.face_color))
    angles = ((attrs.hour % 12 + attrs.minute / 60) * 30, attrs.minute * 6, attrs.second * 6)
    for angle, frac, width in zip(angles, _HAND_LENGTHS, _HAND_WIDTHS, strict=True):
        a = math.radians(angle)
        end = (c + frac * radius * math.sin(a), c - frac * radius * math.cos(a))
        draw.line((c, c, *end), fill=_HAND, width=max(1, round(width * unit * style.hand_scale)))

    _draw_weather(draw, attrs.weather, icon[0], icon[1], icon[2] - icon[0])
    _draw_battery(draw, attrs.battery, battery, unit * style.detail_scale)
    ss = style.supersample
    return img.reduce(ss) if ss > 1 else img
