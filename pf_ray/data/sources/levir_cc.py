"""LEVIR-CC (Liu et al., TGRS 2022): remote-sensing change captioning, pairs of satellite
tiles of one place taken years apart.

Format, as released (github.com/Chen-Yang-Liu/LEVIR-CC-Dataset README: the download holds
``LevirCCcaptions.json`` and ``images/{train,val,test}/{A,B}/``, A the pre-phase, B the
post-phase image; Chen-Yang-Liu/RSICC ``utils.py`` reads it): a Karpathy-style file ``{"images":
[{"filepath": "train", "filename": "train_000016.png", "imgid": 16, "split": "train",
"changeflag": 1, "sentids": [...], "sentences": [{"raw": " the road is widened .", "tokens":
[...], "imgid": 16, "sentid": 80}, x5]}]}``: 10,077 pairs (train 6,815 / val 1,333 / test
1,929), five sentences each (50,385), lower case with a detached final full stop;
``changeflag`` 0 marks a pair in which nothing changed (its five sentences all say so,
often in the same words).

One ``change_caption`` row per pair: ``image`` ``{split}/A/{filename}``, ``extra_images``
``[{split}/B/{filename}]`` under ``image_root`` (the ``images`` folder); the user turn one of
``CHANGE_PROMPTS`` (our wording: the paper prints no change-captioning instruction), picked
from the id; the raw answer the ``raw`` sentences, stripped, one per line, exact repeats
dropped. Pairs with ``changeflag`` 0 are kept: their answer says that nothing changed.
``meta``: ``split``, ``filename``, ``imgid``, ``changeflag`` (null where a record has none),
``sentences``. Id: the file name without its extension (``levir_cc:train_000016``; the
names carry the split, so ids are unique across splits).
"""

from __future__ import annotations

from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.change_pairs import change_sample, plain_name, sentence_texts, unique
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext
from pf_ray.data.sources.readers import cached_reader, karpathy_images
from pf_ray.data.sources.templates import CHANGE_PROMPTS


def _raw_sentences(im: dict[str, Any]) -> list[str]:
    sentences = im.get("sentences")
    if isinstance(sentences, list) and not all(isinstance(s, dict) for s in sentences):
        raise RecordError("bad_field", "'sentences' holds a non-object; expected "
                          "{'raw', 'tokens', ...} objects")
    raws = None if not isinstance(sentences, list) else [s.get("raw") for s in sentences]
    return sentence_texts(sentences if raws is None else raws, "sentences")


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    im = record["im"]
    if not isinstance(im, dict):
        raise RecordError("bad_record", f"image entry is {type(im).__name__}, not an object")
    filename, split = plain_name(im, "filename"), plain_name(im, "split")
    flag = im.get("changeflag")
    if flag is not None and (isinstance(flag, bool) or flag not in (0, 1)):
        raise RecordError("bad_field", f"'changeflag' is {flag!r}; expected 0 or 1")
    return change_sample(ctx, before=f"{split}/A/{filename}", after=f"{split}/B/{filename}",
                         sentences=unique(_raw_sentences(im)), prompts=CHANGE_PROMPTS,
                         meta={"split": split, "filename": filename, "imgid": im.get("imgid"),
                               "changeflag": flag})


ADAPTER = Adapter("levir_cc", convert,
                  "LEVIR-CC remote-sensing change captions (LevirCCcaptions.json, images/)",
                  reader=cached_reader(karpathy_images))
