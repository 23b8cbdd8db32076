"""Regions drawn onto images: RefCOCOg's box and PointQA's arrow (paper.md §4).

Some raw annotations are about one region of an image. The paper shows the region to the
rewriter by drawing it: a green bounding box for RefCOCOg ("Describe the object inside this
green bounding box."), a coloured arrow for PointQA. A row asks for it with a ``draw``
entry in its ``meta`` (:data:`DRAW_KEY`), in 0-1 image coordinates like ``boxes``::

    {"shape": "box", "box": [x1, y1, x2, y2], "color": "green"}
    {"shape": "arrow", "point": [x, y], "color": "red"}

``color`` is any PIL colour name or ``#rrggbb`` (PIL's ``green`` is #008000); ``width``, the
line width in pixels, defaults to 0.6% of the shorter side (at least 2). The ingest job
renders the region into ``image_bytes`` (PNG) and keeps the source image's reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image, ImageColor, ImageDraw

DRAW_KEY = "draw"
Shape = Literal["box", "arrow"]
DEFAULT_COLORS: dict[str, str] = {"box": "green", "arrow": "red"}


class RegionError(ValueError):
    """A ``draw`` request that cannot be drawn; the message names the field."""


@dataclass(frozen=True)
class Region:
    """A box ``(x1, y1, x2, y2)`` or an arrow's tip ``(x, y)``, in 0-1 coordinates."""

    shape: Shape
    coords: tuple[float, ...]
    color: tuple[int, int, int]
    width: int | None = None


def _coords(value: Any, n: int, field: str) -> tuple[float, ...]:
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != n
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise RegionError(f"draw.{field}: expected {n} numbers in 0-1, received {value!r}")
    out = tuple(float(v) for v in value)
    if not all(0.0 <= v <= 1.0 for v in out):
        raise RegionError(f"draw.{field}: coordinates must lie in 0-1, received {value!r}")
    return out


def parse_region(spec: Mapping[str, Any]) -> Region:
    """A ``meta.draw`` mapping -> :class:`Region` (RegionError names the bad field)."""
    if not isinstance(spec, Mapping):
        raise RegionError(f"draw: expected an object, received {type(spec).__name__}")
    shape = spec.get("shape")
    if shape not in DEFAULT_COLORS:
        raise RegionError(f"draw.shape: received {shape!r}; allowed: {sorted(DEFAULT_COLORS)}")
    if shape == "box":
        coords = _coords(spec.get("box"), 4, "box")
        if coords[2] <= coords[0] or coords[3] <= coords[1]:
            raise RegionError(f"draw.box: x2 > x1 and y2 > y1 required, received {coords}")
    else:
        coords = _coords(spec.get("point"), 2, "point")
    color_name = spec.get("color", DEFAULT_COLORS[shape])
    try:
        color = ImageColor.getrgb(str(color_name))[:3]
    except ValueError as exc:
        raise RegionError(f"draw.color: unknown colour {color_name!r}") from exc
    width = spec.get("width")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int)
                              or width < 1):
        raise RegionError(f"draw.width: expected a positive int (pixels), received {width!r}")
    return Region(shape, coords, color, width)  # type: ignore[arg-type]


def line_width(img: Image.Image, region: Region) -> int:
    return region.width or max(2, round(0.006 * min(img.size)))


def draw_box(img: Image.Image, region: Region) -> Image.Image:
    """A copy of ``img`` with the box's outline drawn inside its pixel rectangle."""
    w, h = img.size
    x1, y1, x2, y2 = region.coords
    out = img.convert("RGB")
    box = (round(x1 * w), round(y1 * h), max(round(x2 * w) - 1, round(x1 * w)),
           max(round(y2 * h) - 1, round(y1 * h)))
    ImageDraw.Draw(out).rectangle(box, outline=region.color, width=line_width(img, region))
    return out


def arrow_geometry(size: tuple[int, int], tip: tuple[float, float], width: int
                   ) -> tuple[tuple[float, float], list[tuple[float, float]]]:
    """Tail of the shaft and the head triangle (pixels) of an arrow ending at ``tip``.

    The arrow comes from the image centre's side (so it stays inside the image), a fifth of
    the shorter side long; a tip at the centre gets an arrow from the lower right.
    """
    w, h = size
    tx, ty = tip[0] * w, tip[1] * h
    dx, dy = w / 2 - tx, h / 2 - ty
    norm = math.hypot(dx, dy)
    if norm < 1e-6:
        dx, dy, norm = 1.0, 1.0, math.sqrt(2.0)
    ux, uy = dx / norm, dy / norm
    length = 0.2 * min(w, h)
    head = max(3.0 * width, 0.06 * min(w, h))
    tail = (tx + ux * length, ty + uy * length)
    base = (tx + ux * head, ty + uy * head)
    half = head / 2
    triangle = [(tx, ty), (base[0] - uy * half, base[1] + ux * half),
                (base[0] + uy * half, base[1] - ux * half)]
    return tail, triangle


def draw_arrow(img: Image.Image, region: Region) -> Image.Image:
    """A copy of ``img`` with an arrow whose head's tip is at the region's point."""
    out = img.convert("RGB")
    width = line_width(img, region)
    tail, triangle = arrow_geometry(out.size, region.coords, width)  # type: ignore[arg-type]
    canvas = ImageDraw.Draw(out)
    canvas.line([tail, triangle[0]], fill=region.color, width=width)
    canvas.polygon(triangle, fill=region.color)
    return out


def render(img: Image.Image, region: Region) -> Image.Image:
    """``img`` with ``region`` drawn on it (a new RGB image; the input is not changed)."""
    return draw_box(img, region) if region.shape == "box" else draw_arrow(img, region)
