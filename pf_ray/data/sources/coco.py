"""MS-COCO captions + instances (``captions_train2014.json`` / ``captions_val2017.json``...).

The source path names the captions file; the instances file of the same split is found
beside it by name (``captions_X.json`` -> ``instances_X.json``; boxes are empty when it is
absent). One record per image: its captions, and its boxes converted from COCO's pixel
``[x, y, w, h]`` to ``{label, x1, y1, x2, y2}`` in 0-1. The row is a raw annotation
(task ``captions``): the captions joined by newlines as the answer to a describe request,
the boxes in ``boxes``, the captions list and COCO ids in ``meta``. Both the 2014 file
names (``COCO_train2014_000000215677.jpg``) and the 2017 ones (``000000215677.jpg``) are
kept as given, relative to ``image_root``.

``coco_captions`` reads the same files into the same rows for the rewrite stage (paper.md §4's
caption template): the user turn is one of LLaVA's 16 detailed-description requests, chosen
from the image id (``coco`` keeps the single request, for the distort stage's box join).
"""

from __future__ import annotations

import json
import posixpath
from functools import lru_cache
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, coco_box_to_xyxy, image_ref, pick, sample
from pf_ray.data.sources.templates import CAPTION_PROMPTS
from pf_ray.specs import StorageConfig
from pf_ray.storage import exists, read_bytes, resolve

DESCRIBE = "Describe the following image in detail."


def instances_path(captions_file: str) -> str:
    head, name = posixpath.split(captions_file)
    return posixpath.join(head, name.replace("captions_", "instances_", 1))


def _load_json(file: str, storage: StorageConfig) -> Any:
    fs, path = resolve(file, storage)
    try:
        return json.loads(read_bytes(fs, path))
    except json.JSONDecodeError as exc:
        raise RecordError("unreadable_file", f"{file}: invalid JSON ({exc})") from exc


@lru_cache(maxsize=2)  # a worker reads the same split for every unit: parse it once
def _records(file: str, storage_json: str) -> tuple[tuple[int, Any], ...]:
    storage = StorageConfig.model_validate_json(storage_json)
    caps = _load_json(file, storage)
    if not isinstance(caps, dict) or "images" not in caps:
        raise RecordError("unreadable_file", f"{file}: not a COCO annotation file "
                          "(no 'images' list)")
    captions: dict[int, list[str]] = {}
    for a in caps.get("annotations", []):
        captions.setdefault(a.get("image_id"), []).append(str(a.get("caption", "")).strip())
    boxes: dict[int, list[dict[str, Any]]] = {}
    inst_file = instances_path(file)
    fs, inst_path = resolve(inst_file, storage)
    have_instances = inst_file != file and exists(fs, inst_path)
    if have_instances:
        inst = _load_json(inst_file, storage)
        names = {c["id"]: c["name"] for c in inst.get("categories", [])}
        sizes = {im["id"]: (im.get("width"), im.get("height")) for im in inst.get("images", [])}
        for a in sorted(inst.get("annotations", []), key=lambda a: a.get("id", 0)):
            w, h = sizes.get(a.get("image_id"), (None, None))
            if not w or not h or "bbox" not in a:
                continue
            x1, y1, x2, y2 = coco_box_to_xyxy(a["bbox"], w, h)
            boxes.setdefault(a["image_id"], []).append(
                {"label": names.get(a.get("category_id"), str(a.get("category_id"))),
                 "x1": x1, "y1": y1, "x2": x2, "y2": y2})
    out = []
    for pos, im in enumerate(caps["images"]):
        image_id = im.get("id") if isinstance(im, dict) else None
        out.append((pos, {"id": image_id, "image": im, "captions": captions.get(image_id, []),
                          "boxes": boxes.get(image_id, []), "instances": have_instances}))
    return tuple(out)


def coco_records(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    return list(_records(file, storage.model_dump_json()))


def convert(record: dict[str, Any], ctx: RecordContext, request: str = DESCRIBE
            ) -> dict[str, Any]:
    im = record["image"]
    if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
        raise RecordError("bad_record", "image entry without 'id' and 'file_name'")
    captions = [c for c in record["captions"] if c]
    if not captions:
        raise RecordError("empty_text", f"image {im['id']} has no captions")
    image = image_ref({"image": im["file_name"]}, ctx)
    row = sample(ctx, task="captions", image=image,
                 turns=[{"role": "user", "content": request},
                        {"role": "assistant", "content": "\n".join(captions)}],
                 meta={"captions": captions, "coco_image_id": im["id"],
                       "width": im.get("width"), "height": im.get("height")})
    row["boxes"] = record["boxes"] if record["instances"] else None
    return row


def convert_captions(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    return convert(record, ctx, request=pick(CAPTION_PROMPTS, ctx.key))


ADAPTER = Adapter("coco", convert, "MS-COCO captions joined with the instances file's boxes "
                  "(for the distort stage)", reader=coco_records)
CAPTIONS_ADAPTER = Adapter("coco_captions", convert_captions, "MS-COCO captions under one of "
                           "LLaVA's 16 description requests (for the rewrite stage)",
                           reader=coco_records)
