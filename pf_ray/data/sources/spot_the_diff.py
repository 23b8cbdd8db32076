"""Spot-the-Diff (Jhamtani & Berg-Kirkpatrick, EMNLP 2018): what changed between two frames
of a fixed street camera.

Format, as released (github.com/harsh19/spot-the-diff, ``data/annotations/{train,val,
test}.json``; ``code/usage.ipynb`` reads them and the images): each file is a JSON array of
``{"img_id": "5406", "sentences": ["a blue car is pulling out of the parking lot", ...]}``,
one object per annotation; ``img_id`` is a string of digits. A pair may be annotated more
than once (several objects with the same ``img_id``: train 9,524 objects for 8,566 pairs,
val 1,634 / 1,493, test 1,404 / 1,270; no id is in two files), and some annotations are
blank (``[""]``). Images (``resized_images/``, from the Google Drive link in
``data/get_images.txt``): ``{img_id}.png`` before, ``{img_id}_2.png`` after
(``{img_id}_diff.jpg``, a difference map, is not used).

One ``change_caption`` row per pair (``img_id``) of a file: ``image`` the before image,
``extra_images`` the after image; the user turn one of ``CHANGE_PROMPTS`` (our wording: the
paper prints no change-captioning instruction), picked from the id; the raw answer every
sentence of the pair's annotations in file order, one per line. Blank sentences are dropped
and a pair with none left is rejected (``empty_text``). Repeats *within* one annotation are
kept (annotators write lists such as "one person on the bottom left" / "not there in the
after photo", repeated per item); a sentence an earlier annotation of the pair already gave
is dropped. ``meta``: the split (the file's name), ``img_id``, ``annotations`` (how many
objects the pair had), ``sentences``. Id: ``spot_the_diff:{img_id}``.

Images: ``image_root`` is the ``resized_images`` folder.
"""

from __future__ import annotations

from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.change_pairs import change_sample, plain_name, sentence_texts, split_of
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext
from pf_ray.data.sources.readers import cached_reader, json_array
from pf_ray.data.sources.templates import CHANGE_PROMPTS
from pf_ray.specs import StorageConfig


def _group_key(record: Any) -> str | None:
    """The pair a record annotates (its ``img_id`` as a string), None if it has none."""
    if not isinstance(record, dict):
        return None
    img_id = record.get("img_id")
    if isinstance(img_id, bool) or not isinstance(img_id, int | str) or img_id == "":
        return None
    return str(img_id)


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    """The annotations of a file grouped by pair, in order of each pair's first annotation;
    a record with no usable ``img_id`` stays alone (its row is a reject)."""
    data = json_array(file, storage, "annotations")
    out: list[tuple[int, Any]] = []
    pairs: dict[str, dict[str, Any]] = {}
    for pos, record in enumerate(data):
        key = _group_key(record)
        if key is None:
            out.append((pos, {"annotations": [record]}))
        elif key in pairs:
            pairs[key]["annotations"].append(record)
        else:
            pairs[key] = {"id": key, "annotations": [record]}
            out.append((pos, pairs[key]))
    return out


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    first = record["annotations"][0]
    if not isinstance(first, dict):
        raise RecordError("bad_record", f"annotation is {type(first).__name__}, not an object")
    img_id = plain_name(first, "img_id")
    sentences: list[str] = []
    for annotation in record["annotations"]:
        earlier = set(sentences)
        sentences += [s for s in sentence_texts(annotation.get("sentences"), "sentences")
                      if s not in earlier]
    return change_sample(ctx, before=f"{img_id}.png", after=f"{img_id}_2.png",
                         sentences=sentences, prompts=CHANGE_PROMPTS,
                         meta={"split": split_of(ctx), "img_id": img_id,
                               "annotations": len(record["annotations"])})


ADAPTER = Adapter("spot_the_diff", convert,
                  "Spot-the-Diff change captions (annotations/{split}.json, resized_images/)",
                  reader=cached_reader(_parse))
