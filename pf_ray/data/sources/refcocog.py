"""RefCOCOg referring expressions (``refcocog/refs(umd).p`` + ``refcocog/instances.json``),
drawn as region captions (paper.md §4).

Format, as released with the refer toolkit (github.com/lichengunc/refer, ``data/refcocog``):
``refs(umd).p`` (or ``refs(google).p``) is a Python pickle of a list of ``{"ref_id",
"ann_id", "image_id", "split", "category_id", "file_name", "sent_ids", "sentences":
[{"raw", "sent", "tokens", "sent_id"}]}``; ``instances.json`` beside it is COCO-style
(``images`` with ``file_name``, ``width``, ``height``; ``annotations`` with ``id`` and
pixel ``bbox`` ``[x, y, w, h]``; ``categories``). The pickle is read with an unpickler that
refuses every global (only lists, dicts, strings and numbers load), so a tampered file
cannot run code.

One ``region_caption`` row per referred object: the user turn "Describe the object inside
this green bounding box.", the raw answer every ``raw`` expression of it, one per line; the
box is in ``boxes`` (0-1) and in ``meta.draw``, which makes the ingest job draw it, green,
onto the image (pf_ray.data.draw) and store the result in ``image_bytes``. Id: the ref id.

Images: ``source.image_pattern`` over ``{file_name}`` (the COCO file name from
``instances.json``) and ``{image_id}``; default ``{file_name}`` under COCO's ``train2014``.
"""

from __future__ import annotations

import io
import pickle
import posixpath
from typing import Any

from pf_ray.data.draw import DRAW_KEY
from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, coco_box_to_xyxy, pattern_image, sample
from pf_ray.data.sources.readers import cached_reader, json_field, load_json
from pf_ray.data.sources.templates import REGION_BOX_PROMPT
from pf_ray.specs import StorageConfig
from pf_ray.storage import read_bytes, resolve

DEFAULT_PATTERN = "{file_name}"


class _DataOnly(pickle.Unpickler):
    """Unpickles plain data only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only plain data is read")


def load_refs(file: str, storage: StorageConfig) -> Any:
    fs, path = resolve(file, storage)
    try:  # the released pickles come from Python 2: its byte strings read as latin-1
        return _DataOnly(io.BytesIO(read_bytes(fs, path)), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise RecordError("unreadable_file", f"{file}: not a refer pickle ({exc})") from exc


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    refs = load_refs(file, storage)
    if not isinstance(refs, list):
        raise RecordError("unreadable_file", f"{file}: expected a list of refs, received "
                          f"{type(refs).__name__}")
    inst_file = posixpath.join(posixpath.dirname(file), "instances.json")
    inst = load_json(inst_file, storage)
    images = {im.get("id"): im for im in json_field(inst, "images", inst_file)
              if isinstance(im, dict)}
    anns = {a.get("id"): a for a in json_field(inst, "annotations", inst_file)
            if isinstance(a, dict)}
    names = {c.get("id"): c.get("name") for c in inst.get("categories", [])
             if isinstance(c, dict)}
    out: list[tuple[int, Any]] = []
    for pos, ref in enumerate(refs):
        if not isinstance(ref, dict):
            out.append((pos, ref))
            continue
        ann = anns.get(ref.get("ann_id"))
        out.append((pos, {"id": ref.get("ref_id"), "ref": ref, "ann": ann,
                          "image": images.get(ref.get("image_id")),
                          "category": names.get(ref.get("category_id"))}))
    return out


def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
    if not isinstance(record, dict) or "ref" not in record:
        raise RecordError("bad_record", f"expected a ref object, received "
                          f"{type(record).__name__}")
    ref, ann, im = record["ref"], record["ann"], record["image"]
    if ann is None or im is None:
        raise RecordError("missing_annotation", f"ref {ref.get('ref_id')}: annotation "
                          f"{ref.get('ann_id')} or image {ref.get('image_id')} is not in "
                          "instances.json")
    sentences = ref.get("sentences")
    if not isinstance(sentences, list):
        raise RecordError("missing_field", "no 'sentences' list")
    raws = [s["raw"].strip() for s in sentences
            if isinstance(s, dict) and isinstance(s.get("raw"), str) and s["raw"].strip()]
    if not raws:
        raise RecordError("empty_text", f"ref {ref.get('ref_id')} has no expression")
    if not isinstance(im.get("file_name"), str):
        raise RecordError("missing_field", f"image {im.get('id')}: no 'file_name'")
    w, h, bbox = im.get("width"), im.get("height"), ann.get("bbox")
    if not w or not h or not isinstance(bbox, list) or len(bbox) != 4:
        raise RecordError("bad_field", f"ref {ref.get('ref_id')}: bbox {bbox!r} on a "
                          f"{w}x{h} image")
    x1, y1, x2, y2 = (min(1.0, max(0.0, v)) for v in coco_box_to_xyxy(bbox, w, h))
    label = record["category"] or str(ref.get("category_id"))
    row = sample(ctx, task="region_caption",
                 image=pattern_image(ctx, file_name=im.get("file_name"),
                                     image_id=im.get("id")),
                 turns=[{"role": "user", "content": REGION_BOX_PROMPT},
                        {"role": "assistant", "content": "\n".join(raws)}],
                 meta={"ref_id": ref.get("ref_id"), "ann_id": ref.get("ann_id"),
                       "image_id": im.get("id"), "split": ref.get("split"),
                       "category": label, "expressions": raws,
                       DRAW_KEY: {"shape": "box", "box": [x1, y1, x2, y2],
                                  "color": "green"}})
    row["boxes"] = [{"label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2}]
    return row


ADAPTER = Adapter("refcocog", convert, "RefCOCOg referring expressions, the region drawn "
                  "onto the image", reader=cached_reader(_parse), image_pattern=DEFAULT_PATTERN,
                  pattern_fields=("file_name", "image_id"), draws=True)
