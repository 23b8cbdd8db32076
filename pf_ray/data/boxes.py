"""Captions + boxes serialisation: the raw text the rewriter learns to turn into a detailed
description (LLaVA-detail; later also COCO / Flickr / TextCaps / DIOR... when rewriting).

Format (paper.md §2 and the PF-1M sample in the Polite Flamingo README): the captions joined by
'\\n', a blank line, the GPT-4 preamble, then one ``label: [x1, y1, x2, y2]\\n`` line per
object, coordinates normalised to 0-1 and printed as ``round(v, 3)``
(``person: [0.44, 0.176, 0.591, 0.316]``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

PREAMBLE = (
    "The followings are specific object locations within the image, along with detailed "
    "coordinates. These coordinates are in the form of bounding boxes, represented as "
    "(x1, y1, x2, y2) with floating numbers ranging from 0 to 1. These values correspond to "
    "the top left x, top left y, bottom right x, and bottom right y."
)


def image_key(ref: str | None) -> str | None:
    """The join key of an image: COCO-style numeric id, or the whole synthetic reference.

    ``COCO_train2014_000000215677.jpg``, ``000000215677.jpg`` and ``train2017/215677.jpg``
    all give ``"215677"``; ``synthetic://0/5?size=64`` gives ``"synthetic://0/5"``.
    """
    if not ref:
        return None
    if ref.startswith("synthetic://"):
        return ref.split("?", 1)[0]
    if ref.startswith("tar://"):
        ref = ref[len("tar://"):].split("::", 1)[0]  # the member's own name
    stem = ref.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    digits = "".join(ch if ch.isdigit() else " " for ch in stem).split()
    return str(int(max(digits, key=len))) if digits else ref


def captions_boxes_index(root: str, storage: Any) -> dict[str, str]:
    """Image key -> ``{"captions": [...], "boxes": [...]}`` (JSON) of a dataset of
    ``captions`` rows with boxes (e.g. the COCO ingest)."""
    from pf_ray.data.io import Dataset

    table = Dataset(root, storage).read(columns=["image", "boxes", "meta"])
    index: dict[str, str] = {}
    for ref, boxes, meta in zip(*(table.column(c).to_pylist() for c in (
            "image", "boxes", "meta")), strict=True):
        captions = json.loads(meta).get("captions")
        key = image_key(ref)
        if key and boxes and captions:
            index[key] = json.dumps({"captions": captions, "boxes": boxes}, sort_keys=True)
    return index


def fmt_coord(value: float) -> str:
    """A 0-1 coordinate as the released samples print it: Python's ``round(v, 3)``
    (``0.44``, ``0.176``, ``0.5``, ``1.0``)."""
    return repr(round(min(1.0, max(0.0, float(value))), 3))


def serialise(captions: Sequence[str], boxes: Sequence[Mapping[str, float | str]]) -> str:
    """Captions, blank line, preamble, one line per box (``{label, x1, y1, x2, y2}``),
    each box line ended by a newline as in the released PF-1M samples."""
    lines = [c.strip() for c in captions if c and c.strip()]
    text = "\n".join(lines)
    if boxes:
        objects = "".join(
            f"{b['label']}: [{fmt_coord(float(b['x1']))}, {fmt_coord(float(b['y1']))}, "
            f"{fmt_coord(float(b['x2']))}, {fmt_coord(float(b['y2']))}]\n" for b in boxes)
        text = f"{text}\n\n{PREAMBLE}\n{objects}" if text else f"{PREAMBLE}\n{objects}"
    return text
