"""Captions + boxes serialisation: the raw text the rewriter learns to turn into a detailed
description (LLaVA-detail; later also COCO / Flickr / TextCaps / DIOR... when rewriting).

Format (spec §2): the captions joined by '\\n', a blank line, the GPT-4 preamble, then one
``label: [x1, y1, x2, y2]`` line per object with coordinates normalised to 0-1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

PREAMBLE = (
    "The followings are specific object locations within the image, along with detailed "
    "coordinates. These coordinates are in the form of bounding boxes, represented as "
    "(x1, y1, x2, y2) with floating numbers ranging from 0 to 1. These values correspond to "
    "the top left x, top left y, bottom right x, and bottom right y."
)


def fmt_coord(value: float) -> str:
    """A 0-1 coordinate with 3 decimals, trailing zeros dropped down to 2 (0.5 -> '0.50')."""
    text = f"{min(1.0, max(0.0, value)):.3f}"
    return text[:-1] if text.endswith("0") else text


def serialise(captions: Sequence[str], boxes: Sequence[Mapping[str, float | str]]) -> str:
    """Captions, blank line, preamble, one line per box (``{label, x1, y1, x2, y2}``)."""
    lines = [c.strip() for c in captions if c and c.strip()]
    text = "\n".join(lines)
    if boxes:
        objects = "\n".join(
            f"{b['label']}: [{fmt_coord(float(b['x1']))}, {fmt_coord(float(b['y1']))}, "
            f"{fmt_coord(float(b['x2']))}, {fmt_coord(float(b['y2']))}]" for b in boxes)
        text = f"{text}\n\n{PREAMBLE}\n{objects}" if text else f"{PREAMBLE}\n{objects}"
    return text
