"""Flickr30k captions in Karpathy's split file (``dataset_flickr30k.json``).

Format, as released with NeuralTalk (cs.stanford.edu/people/karpathy/deepimagesent):
``{"dataset": "flickr30k", "images": [{"filename": "1000092795.jpg", "imgid", "split":
"train"|"val"|"test"|"restval", "sentids", "sentences": [{"raw", "tokens", "imgid",
"sentid"}]}]}``. The same layout serves ``dataset_coco.json`` (which adds ``filepath``).

One ``captions`` row per image: one of LLaVA's 16 detailed-description requests (chosen
from the file name), the raw answer every ``raw`` sentence, one per line; the split is kept
in ``meta`` (every split is read). Id: the file name without its extension.

Images: ``source.image_pattern`` over ``{filename}``, ``{filepath}`` (empty for Flickr30k)
and ``{split}``; default ``{filename}`` under the ``flickr30k-images/`` folder.
"""

from __future__ import annotations

from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import (
    RecordContext,
    karpathy_entry,
    pattern_image,
    pick,
    sample,
)
from pf_ray.data.sources.readers import cached_reader, karpathy_images
from pf_ray.data.sources.templates import CAPTION_PROMPTS

DEFAULT_PATTERN = "{filename}"


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    im, filename, sentences = karpathy_entry(record)
    captions = [s["raw"].strip() for s in sentences
                if isinstance(s, dict) and isinstance(s.get("raw"), str) and s["raw"].strip()]
    if not captions:
        raise RecordError("empty_text", f"{filename}: no sentence with a 'raw' text")
    split = im.get("split")
    image = pattern_image(ctx, filename=filename,
                          filepath=im.get("filepath") or "", split=split)
    return sample(ctx, task="captions", image=image,
                  turns=[{"role": "user", "content": pick(CAPTION_PROMPTS, ctx.key)},
                         {"role": "assistant", "content": "\n".join(captions)}],
                  meta={"captions": captions, "split": split, "imgid": im.get("imgid")})


ADAPTER = Adapter("flickr30k", convert, "Flickr30k (or COCO) captions in Karpathy's split file",
                  reader=cached_reader(karpathy_images), image_pattern=DEFAULT_PATTERN,
                  pattern_fields=("filename", "filepath", "split"))
