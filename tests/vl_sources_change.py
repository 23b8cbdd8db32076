"""Change-captioning datasets written exactly in their public layouts, shared by the adapter
unit tests (tests/unit/test_sources_change.py), the ingest test on Ray
(tests/integration/test_ingest_change.py) and end-to-end tests.

Each ``write_*`` writes one release under a folder: its annotation file(s), with good
records and the broken ones the adapter must reject, and small before / after images drawn
with PIL (``BEFORE`` red, ``AFTER`` blue with a white square: what changed). It returns the
annotation file a spec's ``source.path`` names; the spec's ``image_root`` is
``folder / IMAGE_ROOT[adapter]``. Layouts:

- Spot-the-Diff (github harsh19/spot-the-diff): ``data/annotations/train.json``,
  ``data/resized_images/{img_id}.png`` + ``{img_id}_2.png``;
- Image Editing Requests (github airsplay/VisualRelationships): ``dataset/adobe/train.json``
  and ``valid.json``, the images (named by ``img0`` / ``img1``) in ``images/``;
- LEVIR-CC (github Chen-Yang-Liu/LEVIR-CC-Dataset): ``LevirCCcaptions.json``,
  ``images/{split}/A/{filename}`` + ``images/{split}/B/{filename}``.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw
from vl_sources import save

BEFORE = (200, 30, 30)
AFTER = (30, 60, 200)
SIZE = (32, 24)
CHANGED_BOX = (4, 4, 12, 12)  # white in the after image only
IMAGE_ROOT = {"spot_the_diff": "data/resized_images", "image_editing_requests": "images",
              "levir_cc": "images"}


def picture(color: tuple[int, int, int], changed: bool = False, fmt: str = "PNG") -> bytes:
    img = Image.new("RGB", SIZE, color)
    if changed:
        ImageDraw.Draw(img).rectangle(CHANGED_BOX, fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def save_pair(before: Path, after: Path | None) -> None:
    """The before image (BEFORE) and, unless ``after`` is None, the after image (AFTER plus
    the white square), each in the format its suffix names."""
    for path, color, changed in ((before, BEFORE, False), (after, AFTER, True)):
        if path is not None:
            fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
            save(path, picture(color, changed, fmt))


# ------------------------------------------------------------------ Spot-the-Diff


def write_spot_the_diff(folder: Path) -> Path:
    """``data/annotations/train.json``: pairs 42 (two annotations; the second repeats one
    sentence of the first and has a blank one), 5406 (its after image ``5406_2.png`` is
    missing), 12733 (one annotation repeating a sentence per item), then rejects: 3 (blank
    sentences), an annotation with no img_id (#5), 77 (sentences a string), an img_id that
    is a path (#7 / ``../../etc/passwd``)."""
    images = folder / IMAGE_ROOT["spot_the_diff"]
    save_pair(images / "42.png", images / "42_2.png")
    save_pair(images / "5406.png", None)
    save_pair(images / "12733.png", images / "12733_2.png")
    return save(folder / "data" / "annotations" / "train.json", [
        {"img_id": "42", "sentences": [
            "the left most man walking away from the building is missing",
            "a car has appeared near the building"]},
        {"img_id": "5406", "sentences": [
            "in picture one the blue truck is turning right and in picture two its sitting "
            "at the stop sign"]},
        {"img_id": "42", "sentences": ["more  cars in the street ",
                                       "a car has appeared near the building", ""]},
        {"img_id": "12733", "sentences": ["one person walking up the stairs",
                                          "not there in the before photo",
                                          "one person on the grass",
                                          "not there in the before photo"]},
        {"img_id": "3", "sentences": [""]},
        {"sentences": ["a person is gone"]},
        {"img_id": "77", "sentences": "the car moved"},
        {"img_id": "../../etc/passwd", "sentences": ["people moved"]},
    ])


# ------------------------------------------------------------------ Image Editing Requests


def write_image_editing(folder: Path) -> Path:
    """``dataset/adobe/train.json`` (returned) and ``valid.json``. train: the p8Ks7 pair
    (uids Zhopped_60, Zhopped_94, Zhopped_99, the last repeating the first's request), the
    5fdtr1 pair (Reddit_1012; img1 a png), then rejects: Zhopped_7 (no img1), Zhopped_8
    (img1 ``../secret.jpg``), Zhopped_9 (no request), Zhopped_10 (a request that is a
    number), a record that is a string (#8). valid: Reddit_1318 (three requests, one
    repeated)."""
    images = folder / IMAGE_ROOT["image_editing_requests"]
    pairs = {"p8Ks7": ("Zhopped.com_p8Ks7_p8Ks7.jpg", "Zhopped.com_p8Ks7_btmgY.jpg"),
             "5fdtr1": ("Reddit.com_5fdtr1_5fdtr1.jpg", "Reddit.com_5fdtr1_dajgq1u.png"),
             "41q2f5": ("Reddit.com_41q2f5_41q2f5.jpg", "Reddit.com_41q2f5_cz4b7ur.jpg")}
    for before, after in pairs.values():
        save_pair(images / before, images / after)

    def req(pair: str, sents: object, uid: str) -> dict[str, object]:
        img0, img1 = pairs[pair]
        return {"img0": img0, "img1": img1, "sents": sents, "uid": uid}

    adobe = folder / "dataset" / "adobe"
    save(adobe / "valid.json", [req("41q2f5", ["change the face", "Change the head",
                                               "change the face"], "Reddit_1318")])
    return save(adobe / "train.json", [
        req("p8Ks7", ["erase the two people on the left"], "Zhopped_60"),
        req("5fdtr1", ["make color brighter"], "Reddit_1012"),
        req("p8Ks7", ["improve the saturation and two people in background must be removed "],
            "Zhopped_94"),
        req("p8Ks7", ["erase the two people on the left"], "Zhopped_99"),
        {"img0": "Zhopped.com_gc9hq_gc9hq.jpg", "sents": ["change the back ground"],
         "uid": "Zhopped_7"},
        {"img0": "Zhopped.com_x_x.jpg", "img1": "../secret.jpg", "sents": ["crop it"],
         "uid": "Zhopped_8"},
        {"img0": "Zhopped.com_y_y.jpg", "img1": "Zhopped.com_y_z.jpg", "sents": [],
         "uid": "Zhopped_9"},
        {"img0": "Zhopped.com_w_w.jpg", "img1": "Zhopped.com_w_v.jpg", "sents": [3],
         "uid": "Zhopped_10"},
        "Reddit_2000",
    ])


# ------------------------------------------------------------------ LEVIR-CC


def levir_record(filename: str, imgid: int, split: str, changeflag: object,
                 raws: list[str]) -> dict[str, object]:
    """One entry of ``LevirCCcaptions.json``'s ``images``, as released."""
    sentids = [imgid * 5 + k for k in range(len(raws))]
    return {"filepath": split, "filename": filename, "imgid": imgid, "split": split,
            "changeflag": changeflag, "sentids": sentids,
            "sentences": [{"tokens": raw.replace(".", " ").split(), "raw": raw,
                           "imgid": imgid, "sentid": sid}
                          for raw, sid in zip(raws, sentids, strict=True)]}


NO_CHANGE = [" the scene is the same as before .", " there is no difference .",
             " the scene is the same as before .", " no change has occurred .",
             " the two scenes seem identical ."]


def write_levir_cc(folder: Path) -> Path:
    """``LevirCCcaptions.json``: train_000016 (a change, one sentence twice), val_000001
    (changeflag 0, "the scene is the same as before" twice), then rejects: test_000003
    (blank sentences), an entry with no filename (#3), test_000005 (changeflag 2),
    test_000006 (sentences are strings, not objects), test_000007 (split ``../..``)."""
    images = folder / IMAGE_ROOT["levir_cc"]
    for split, name in (("train", "train_000016.png"), ("val", "val_000001.png")):
        save_pair(images / split / "A" / name, images / split / "B" / name)
    changed = [" the road is widened .", " a house is built beside the road .",
               " the road is widened .", " a new house appears at the bottom .",
               " a road and a house are built ."]
    no_name = levir_record("test_000004.png", 4, "test", 1, changed)
    del no_name["filename"]
    strings = levir_record("test_000006.png", 6, "test", 1, changed)
    strings["sentences"] = [" the road is widened ."]
    return save(folder / "LevirCCcaptions.json", {"images": [
        levir_record("train_000016.png", 16, "train", 1, changed),
        levir_record("val_000001.png", 6816, "val", 0, NO_CHANGE),
        levir_record("test_000003.png", 3, "test", 1, [" ", ""]),
        no_name,
        levir_record("test_000005.png", 5, "test", 2, changed),
        strings,
        levir_record("test_000007.png", 7, "../..", 1, changed),
    ]})
