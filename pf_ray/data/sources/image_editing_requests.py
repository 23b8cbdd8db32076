"""Image Editing Requests (Tan et al., ACL 2019, "Expressing Visual Relationships via
Language"): a photo, the edited photo, and the request the editor was given.

Format, as released (github.com/airsplay/VisualRelationships: first in ``data/``, since the
"Code" commit ``dataset/adobe/{train,valid,test}.json``; fields from its README): each file
is a JSON array of ``{"img0": "Reddit.com_5fdtr1_5fdtr1.jpg", "img1":
"Reddit.com_5fdtr1_dajgq1u.jpg", "sents": ["make color brighter", ...], "uid":
"Reddit_1012"}``: ``img0`` the image to be edited, ``img1`` the image after editing, ``sents``
the editing requests (one per object in train, three in valid / test), ``uid`` unique across
the files. Some pairs have several objects (train 3,061 objects for 2,507 pairs, valid 383 /
357, test 495 / 446); some pairs are in both valid and test. Images: the Google Drive folder
(mirror archive.org/details/image-editing-dataset) linked from the README, named as
``img0`` / ``img1`` (jpg, png, a few gif); ``image_root`` is the folder holding them.

One ``change_caption`` row per pair (``img0``, ``img1``) of a file: ``image`` the image to
be edited, ``extra_images`` the edited one; since the sentences are requests ("remove the
girl"), not descriptions, the user turn asks for the edit: one of ``EDIT_REQUEST_PROMPTS``
(our wording), picked from the id. The raw answer: the pair's requests in file order, one per
line, exact repeats dropped (several annotators often write the same request). ``meta``: the
split (the file's name), ``uids``, ``img0``, ``img1``, ``sentences``. Id: the ``uid`` of the
pair's first object (``image_editing_requests:Reddit_1012``).
"""

from __future__ import annotations

from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.change_pairs import (
    change_sample,
    plain_name,
    sentence_texts,
    split_of,
    unique,
)
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, id_field
from pf_ray.data.sources.readers import cached_reader, json_array
from pf_ray.data.sources.templates import EDIT_REQUEST_PROMPTS
from pf_ray.specs import StorageConfig


def _pair(record: Any) -> tuple[str, str] | None:
    """The image pair a request is about (``img0``, ``img1``), None without both names."""
    if not isinstance(record, dict):
        return None
    before, after = record.get("img0"), record.get("img1")
    if isinstance(before, str) and before.strip() and isinstance(after, str) and after.strip():
        return before, after
    return None


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    """The requests of a file grouped by image pair, in order of each pair's first object;
    one without both image names stays alone (its row is a reject)."""
    data = json_array(file, storage, "requests")
    out: list[tuple[int, Any]] = []
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for pos, record in enumerate(data):
        pair = _pair(record)
        if pair is not None and pair in pairs:
            pairs[pair]["requests"].append(record)
            continue
        uid = record.get("uid") if isinstance(record, dict) else None
        group = {"id": uid if isinstance(uid, str | int) and not isinstance(uid, bool)
                 else None, "requests": [record]}
        if pair is not None:
            pairs[pair] = group
        out.append((pos, group))
    return out


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    first = record["requests"][0]
    if not isinstance(first, dict):
        raise RecordError("bad_record", f"request is {type(first).__name__}, not an object")
    before, after = plain_name(first, "img0"), plain_name(first, "img1")
    uids = [id_field(r, "uid") for r in record["requests"]]
    sentences = unique(s for r in record["requests"] for s in sentence_texts(r.get("sents"),
                                                                              "sents"))
    return change_sample(ctx, before=before, after=after, sentences=sentences,
                         prompts=EDIT_REQUEST_PROMPTS,
                         meta={"split": split_of(ctx), "uids": uids, "img0": before,
                               "img1": after})


ADAPTER = Adapter("image_editing_requests", convert,
                  "Image Editing Requests (Tan et al. 2019): {split}.json of img0/img1/sents/uid",
                  reader=cached_reader(_parse))
