"""Held-out means unseen: the quickstart's evaluation items, checked against what trained.

Disjoint by id is not enough: the synthetic generator has fixed text facts and templates, so
a held-out clean answer can occur verbatim among the training targets (measured on main at
d137f89: 112 of 443), and a memorised target raises the trained rewriter's score and not the
copy baseline's. So:

* a held-out rewriter pair is kept only if its target (``original``) occurs nowhere among
  the training targets (every assistant turn of the training rows and every original of the
  rewriter's training pairs);
* a held-out VQA question is kept only if its image (decoded pixels, so a re-encoded copy
  counts as the same image) is none of the images any stage trained on.

Both report how many items they removed (``summary.json`` ``heldout.*``).

Splits: the held-out rows of seed 1 (``test``) only report. A setting chosen by measuring is
chosen on ``validation`` (seed 3: ``pf-ray quickstart --split validation``), never on test.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from typing import Any

from PIL import Image

SPLIT_SEEDS = {"test": 1, "validation": 3}


def pixel_digest(image: Image.Image | bytes) -> str:
    """SHA-1 of an image's RGB pixels and size (PNG bytes are decoded first)."""
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    rgb = image.convert("RGB")
    h = hashlib.sha1(f"{rgb.size}".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def training_targets(rows: Iterable[dict[str, Any]], pairs: Iterable[dict[str, Any]]
                     ) -> set[str]:
    """Every text a model was trained to produce: the assistant turns of sample rows and
    the originals of rewriter pairs (stripped)."""
    out = {t["content"].strip() for r in rows for t in r["conversations"]
           if t["role"] == "assistant"}
    out.update(p["original"].strip() for p in pairs)
    return out


def unseen_pairs(pairs: list[dict[str, Any]], targets: set[str]
                 ) -> tuple[list[dict[str, Any]], int]:
    """The pairs whose target is not among ``targets``, and how many were removed."""
    kept = [p for p in pairs if p["original"].strip() not in targets]
    return kept, len(pairs) - len(kept)


def unseen_by_image(items: list[Any], digests: set[str]) -> tuple[list[Any], int]:
    """The items (with ``image_bytes``) whose image is none of ``digests``, and how many
    were removed."""
    kept = [q for q in items if q.image_bytes and pixel_digest(q.image_bytes) not in digests]
    return kept, len(items) - len(kept)
