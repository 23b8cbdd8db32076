"""TextCaps (``TextCaps_0.1_train.json``, ``TextCaps_0.1_val.json``).

Format, as released (textvqa.org/textcaps): ``{"dataset_type", "dataset_name":
"textcaps", "data": [{"image_id", "caption_id", "caption_str", "reference_strs": [5 str],
"set_name", "image_width", "image_height", ...}]}``: one entry per caption.

The captions are grouped per image (in file order): one ``captions`` row per image, the
user turn one of LLaVA's 16 detailed-description requests (chosen from the image id, spec
§4), the raw answer every caption of the image, one per line. Entries without a
``caption_str`` (the test split) are rejected, one reject per image. Id: the image id.

Images: as TextVQA's (same images): ``source.image_pattern`` over ``{folder}``,
``{split}``, ``{image_id}``; default ``{folder}/{image_id}.jpg``.
"""

from __future__ import annotations

from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, pattern_image, pick, sample
from pf_ray.data.sources.readers import cached_reader
from pf_ray.data.sources.templates import CAPTION_PROMPTS
from pf_ray.data.sources.textvqa import DEFAULT_PATTERN, image_fields, textvqa_data
from pf_ray.specs import StorageConfig


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    rows, split = textvqa_data(file, storage)
    images: dict[Any, dict[str, Any]] = {}
    out: list[tuple[int, Any]] = []
    for pos, r in enumerate(rows):
        if not isinstance(r, dict) or not isinstance(r.get("image_id"), str | int):
            out.append((pos, RecordError("bad_record", f"entry {pos}: no image_id: "
                                         f"{r!r}"[:300])))
            continue
        group = images.get(r["image_id"])
        if group is None:
            group = images[r["image_id"]] = {"id": r["image_id"], "first": r, "captions": [],
                                             "split": split}
            out.append((pos, group))
        group["captions"].append(r.get("caption_str"))
    return out


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    given = record["captions"]
    if all(c is None for c in given):
        raise RecordError("missing_field", f"image {record['id']}: no 'caption_str' (a test "
                          "split has no captions)")
    if not all(isinstance(c, str | None) for c in given):
        raise RecordError("bad_field", "'caption_str' is not a string")
    captions = [c.strip() for c in given if c and c.strip()]
    if not captions:
        raise RecordError("empty_text", f"image {record['id']} has only blank captions")
    fields = image_fields(record["first"], record["split"])
    return sample(ctx, task="captions", image=pattern_image(ctx, **fields),
                  turns=[{"role": "user", "content": pick(CAPTION_PROMPTS, ctx.key)},
                         {"role": "assistant", "content": "\n".join(captions)}],
                  meta={"image_id": fields["image_id"], "captions": captions,
                        "split": fields["split"]})


ADAPTER = Adapter("textcaps", convert, "TextCaps captions, grouped per image",
                  reader=cached_reader(_parse), image_pattern=DEFAULT_PATTERN,
                  pattern_fields=("folder", "split", "image_id"))
