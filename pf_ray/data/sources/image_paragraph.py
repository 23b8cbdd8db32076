"""Stanford image paragraphs (``paragraphs_v1.json`` + ``train_split.json`` /
``val_split.json`` / ``test_split.json``).

Format, as released (cs.stanford.edu/people/ranjaykrishna/im2p): ``paragraphs_v1.json`` is
a JSON array of ``{"url": "https://cs.stanford.edu/people/rak248/VG_100K_2/2356347.jpg",
"image_id": 2356347, "paragraph": "..."}``; each split file is a JSON array of image ids.
Split files found beside the paragraphs file label each row's ``meta.split`` (every
paragraph is read; an image in none of them has split null).

One ``captions`` row per image: one of LLaVA's 16 detailed-description requests (from the
image id), the raw answer the paragraph. Id: the (Visual Genome) image id.

Images: ``source.image_pattern`` over ``{url_folder}`` (``VG_100K`` / ``VG_100K_2``, from
the url), ``{url_name}`` (``2356347.jpg``) and ``{image_id}``; default
``{url_folder}/{url_name}`` under a Visual Genome image root.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any
from urllib.parse import urlparse

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import (
    RecordContext,
    id_field,
    pattern_image,
    pick,
    sample,
    text_field,
)
from pf_ray.data.sources.readers import cached_reader, json_array, load_json
from pf_ray.data.sources.templates import CAPTION_PROMPTS
from pf_ray.specs import StorageConfig
from pf_ray.storage import exists, resolve

DEFAULT_PATTERN = "{url_folder}/{url_name}"
SPLITS = ("train", "val", "test")


def _splits(file: str, storage: StorageConfig) -> dict[Any, str]:
    found: dict[Any, str] = {}
    for split in SPLITS:
        split_file = posixpath.join(posixpath.dirname(file), f"{split}_split.json")
        fs, path = resolve(split_file, storage)
        if exists(fs, path):
            ids = load_json(split_file, storage)
            if not isinstance(ids, list):
                raise RecordError("unreadable_file", f"{split_file}: expected a JSON array "
                                  f"of image ids, received {type(ids).__name__}")
            found.update({str(i): split for i in ids})
    return found


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    data = json_array(file, storage, "paragraphs")
    splits = _splits(file, storage)
    return [(pos, {"id": r.get("image_id"), "r": r, "split": splits.get(
        str(r.get("image_id")))} if isinstance(r, dict) else r) for pos, r in enumerate(data)]


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    if not isinstance(record, dict) or "r" not in record:
        raise RecordError("bad_record", f"expected a paragraph object, received "
                          f"{json.dumps(record)[:200]}")
    r = record["r"]
    image_id = id_field(r, "image_id")
    paragraph = text_field(r, "paragraph")
    url = r.get("url") if isinstance(r.get("url"), str) else ""
    parts = urlparse(url).path.rstrip("/").split("/")
    fields = {"image_id": image_id, "url_folder": parts[-2] if len(parts) >= 2 else "",
              "url_name": parts[-1] if parts[-1] else f"{image_id}.jpg"}
    if not fields["url_folder"] and "{url_folder}" in (ctx.image_pattern or ""):
        raise RecordError("missing_field", "no 'url' to take the image folder from")
    return sample(ctx, task="captions", image=pattern_image(ctx, **fields),
                  turns=[{"role": "user", "content": pick(CAPTION_PROMPTS, ctx.key)},
                         {"role": "assistant", "content": " ".join(paragraph.split())}],
                  meta={"image_id": image_id, "paragraph": paragraph, "url": url or None,
                        "split": record["split"]})


ADAPTER = Adapter("image_paragraph", convert, "Stanford image paragraphs (Visual Genome images)",
                  reader=cached_reader(_parse), image_pattern=DEFAULT_PATTERN,
                  pattern_fields=("url_folder", "url_name", "image_id"))
