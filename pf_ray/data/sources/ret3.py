"""RET-3: the three remote-sensing caption sets PF-1M takes together (paper Table 6,
13,551 rows): RSICD (Lu et al. 2017: 10,921 images of 224x224, 5 sentences each),
UCM-captions and Sydney-captions (Qu et al. 2016: 2,100 and 613 images, 5 sentences each).

All three are released in Karpathy's split-file layout (verified against
github.com/201528014227051/RSICD_optimal and torchrs's ``RSICD`` / ``UCMCaptions`` /
``SydneyCaptions`` loaders)::

    RSICD/dataset_rsicd.json + RSICD_images/airport_1.jpg ...
    UCM_captions/dataset.json + imgs/1.tif ... 2100.tif
    Sydney_captions/dataset.json + imgs/1.tif ... 613.tif

``{"images": [{"filename", "imgid", "split": "train"|"val"|"test", "sentids",
"sentences": [{"tokens", "raw", "imgid", "sentid"}]}], "dataset": ...}``. UCM's and
Sydney's file names are both ``1.tif``...: the key of every record is prefixed with the
set's name, taken from the file's path (``dataset_rsicd.json`` -> ``rsicd``; a file named
``dataset.json`` -> its folder's name, lower-cased: ``ucm_captions``,
``sydney_captions``), so one source may list the three files. Id:
``ret3:rsicd/airport_1``, ``ret3:ucm_captions/1``.

One ``captions`` row per image: one of LLaVA's 16 detailed-description requests (picked
from the key), the raw answer the image's ``raw`` sentences, one per line. Exact repeats
within an image are kept once: RSICD pads images with fewer than 5 distinct sentences by
repeating some (and UCM / Sydney repeat many), and a repeated line tells the rewriter
nothing while teaching it that repeating is normal; ``meta.n_sentences`` keeps the
released count. Sentences are kept as written (UCM's ``arranged neatly .`` included).
meta: ``dataset``, ``split`` (every split is read), ``filename``, ``imgid``, ``captions``.

Images: ``source.image_pattern`` over ``{filename}``, ``{split}`` and ``{dataset}``,
default ``{filename}`` under ``image_root`` (one folder: give each set its own source
when their images are in different folders, or a pattern such as
``{dataset}/{filename}`` over a shared root).
"""

from __future__ import annotations

import posixpath
import re
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


def dataset_name(file: str) -> str:
    """``.../dataset_rsicd.json`` -> ``rsicd``; ``.../UCM_captions/dataset.json`` ->
    ``ucm_captions``."""
    head, name = posixpath.split(file.rstrip("/"))
    stem = name.split(".")[0]
    if stem.lower().startswith("dataset_") and len(stem) > len("dataset_"):
        stem = stem[len("dataset_"):]
    elif stem.lower() == "dataset":
        stem = posixpath.basename(head) or stem
    return re.sub(r"[^a-z0-9_-]+", "_", stem.lower()).strip("_") or "dataset"


def key_prefix(file: str) -> str:
    return dataset_name(file) + "/"


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    im, filename, sentences = karpathy_entry(record)
    captions: list[str] = []
    seen: set[str] = set()
    for s in sentences:
        raw = s.get("raw") if isinstance(s, dict) else None
        if not isinstance(raw, str) or not raw.strip():
            continue
        norm = " ".join(raw.split())
        if norm not in seen:
            seen.add(norm)
            captions.append(raw.strip())
    if not captions:
        raise RecordError("empty_text", f"{filename}: no sentence with a 'raw' text")
    dataset, split = dataset_name(ctx.file), im.get("split")
    image = pattern_image(ctx, filename=filename, split=split, dataset=dataset)
    return sample(ctx, task="captions", image=image,
                  turns=[{"role": "user", "content": pick(CAPTION_PROMPTS, ctx.key)},
                         {"role": "assistant", "content": "\n".join(captions)}],
                  meta={"dataset": dataset, "split": split, "filename": filename,
                        "imgid": im.get("imgid"), "captions": captions,
                        "n_sentences": len(sentences)})


ADAPTER = Adapter("ret3", convert, "RET-3 remote-sensing captions (RSICD, UCM-captions, "
                  "Sydney-captions) in Karpathy's split files", reader=cached_reader(karpathy_images),
                  key_prefix=key_prefix, image_pattern="{filename}",
                  pattern_fields=("filename", "split", "dataset"))
