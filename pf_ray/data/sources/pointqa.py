"""PointQA (Mani et al. 2020, "Point and Ask"): LocalQA and LookTwice-QA, the question asked
about the object at a point, which the row asks to be drawn as a red arrow (paper.md §4:
"a coloured arrow is drawn").

Format, as released (github.com/princetonvisualai/pointingqa, ``Datasets/LocalQA`` and
``Datasets/LookTwiceQA``: each folder's README.pdf, the model loaders
``models/pythia/pythia/tasks/vqa/vqamb*/``, and public converters of the two files):

* ``localqa_dataset.json``: ``{"<vg image id>": [{"id": int, "question", "all_ans": [str],
  "all_objs": [VG object {"names", "attributes", "x", "y", "w", "h", ...}], "points":
  [{"x": int, "y": int, "ans": str}]}]}``; one question per QA, one point (the centre of
  the object's box) per object it is asked about; ``points[i]`` goes with ``all_objs[i]``
  and its answer is ``points[i].ans`` (``all_ans`` is the de-duplicated set of them, so it
  is not index-aligned). The release "flattens" a QA into one question per point; so does
  this adapter.
* ``looktwiceqa_dataset.json``: ``{"<vg image id>": [{"id": int, "obj_question",
  "super_question", "general_question", "ans", "bbox": VG object, "point": {"x", "y",
  "ans"}, "obj_type", "supercategory"}]}``; the three questions ask the same thing at three
  levels of ambiguity; the row asks the ``general_question`` (it names no object: the arrow
  says which), the other two are kept in ``meta``.
* ``{localqa,looktwiceqa}_{split}_imgs.json``: the image ids of a split (LocalQA: train,
  val, testdev, testfinal; LookTwice-QA: train, val, test).

``source.path`` names either a dataset file (every image) or a split's image list (the
dataset file beside it, only that split's images, in the list's order; an image of the
list without questions adds nothing). Points are pixels of the Visual Genome image and the
release gives no image size, so the converter reads the image's header (a prefix of the
file, never the whole image) for its size; a missing image is rejected (``image_missing``).

One ``vqa`` row per point: the user turn ``"{question} (The question is about the object
the red arrow points at.)"``, the raw answer the point's answer; ``meta.draw`` =
``{"shape": "arrow", "point": [x, y] (0-1), "color": "red"}``, which the ingest job draws
into ``image_bytes``; the object's box is in ``boxes`` (0-1) and ``meta``. Ids:
``local/{image_id}/{q}/{p}`` and ``twice/{image_id}/{q}``, ``q`` the QA's position in the
image's list, ``p`` the point's.

Images: Visual Genome, ``source.image_pattern`` over ``{image_id}``; default
``VG_100K/{image_id}.jpg`` under the VG root, and, with the default only, the second zip's
``VG_100K_2/{image_id}.jpg`` when the first is absent.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import replace
from typing import Any

from pf_ray.data.draw import DRAW_KEY
from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, pattern_image, sample, text_field
from pf_ray.data.sources.image_size import image_size
from pf_ray.data.sources.readers import cached_reader, load_json
from pf_ray.data.sources.templates import POINT_ARROW_COLOR, POINT_QUESTION
from pf_ray.specs import StorageConfig

DEFAULT_PATTERN = "VG_100K/{image_id}.jpg"
SECOND_FOLDER = "VG_100K_2/{image_id}.jpg"
NAME = re.compile(r"^(localqa|looktwiceqa)_(?:dataset|([a-z]+)_imgs)\.json$")
VARIANT = {"localqa": "local", "looktwiceqa": "twice"}


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    found = NAME.match(posixpath.basename(file))
    if found is None:
        raise RecordError("unreadable_file", f"{file}: expected a released name, "
                          "{localqa,looktwiceqa}_dataset.json or ..._{split}_imgs.json")
    prefix, split = found.group(1), found.group(2)
    dataset_file = posixpath.join(posixpath.dirname(file), f"{prefix}_dataset.json")
    data = load_json(dataset_file, storage)
    if not isinstance(data, dict):
        raise RecordError("unreadable_file", f"{dataset_file}: expected an object of image "
                          f"id -> QA list, received {type(data).__name__}")
    if split is None:
        images = list(data)
    else:
        listed = load_json(file, storage)
        if not isinstance(listed, list):
            raise RecordError("unreadable_file", f"{file}: expected a list of image ids, "
                              f"received {type(listed).__name__}")
        images = [str(i) for i in listed if str(i) in data]
    variant = VARIANT[prefix]
    common = {"variant": variant, "split": split}
    out: list[tuple[int, Any]] = []
    for image_id in images:
        qas = data[image_id]
        for q, qa in enumerate(qas if isinstance(qas, list) else [qas]):
            key = f"{variant}/{image_id}/{q}"
            points = qa.get("points") if isinstance(qa, dict) else None
            if variant == "local" and isinstance(points, list) and points:
                out.extend((len(out), {"id": f"{key}/{p}", "image_id": image_id, "qa": qa,
                                       "p": p, **common}) for p in range(len(points)))
            else:  # LookTwice-QA, or a LocalQA entry without points (rejected)
                out.append((len(out), {"id": key if variant == "twice" else f"{key}/0",
                                       "image_id": image_id, "qa": qa, "p": 0, **common}))
    return out


def _locate(ctx: RecordContext, image_id: str) -> tuple[str, tuple[int, int]]:
    """The record's image and its size: the pattern's image, else (with the default
    pattern) the second VG folder's; ``image_missing`` when neither is there."""
    candidates = [pattern_image(ctx, image_id=image_id)]
    if ctx.image_pattern == DEFAULT_PATTERN:
        candidates.append(pattern_image(replace(ctx, image_pattern=SECOND_FOLDER),
                                        image_id=image_id))
    for ref in candidates:
        if ref is None:
            continue
        try:
            return ref, image_size(ref, ctx.storage)
        except RecordError as exc:
            if exc.reason != "image_missing":
                raise
    raise RecordError("image_missing", f"image {image_id}: none of {candidates} exists")


def _pixel_point(point: Any) -> tuple[float, float]:
    if not isinstance(point, dict):
        raise RecordError("missing_field", f"point is {type(point).__name__}, not an object")
    xy = (point.get("x"), point.get("y"))
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in xy):
        raise RecordError("bad_field", f"point {point!r}: x and y must be numbers (pixels)")
    return float(xy[0]), float(xy[1])  # type: ignore[arg-type]


def _box(obj: Any, width: int, height: int) -> dict[str, Any] | None:
    """A VG object's ``x, y, w, h`` (pixels) as a 0-1 box clipped to the image."""
    if not isinstance(obj, dict) or not all(
            isinstance(obj.get(k), int | float) for k in ("x", "y", "w", "h")):
        return None
    names = obj.get("names") if isinstance(obj.get("names"), list) else []

    def clip(v: float) -> float:
        return min(1.0, max(0.0, v))

    return {"label": str(names[0]) if names else "object",
            "x1": clip(obj["x"] / width), "y1": clip(obj["y"] / height),
            "x2": clip((obj["x"] + obj["w"]) / width),
            "y2": clip((obj["y"] + obj["h"]) / height)}


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    qa, variant, p = record["qa"], record["variant"], record["p"]
    if not isinstance(qa, dict):
        raise RecordError("bad_record", f"QA is {type(qa).__name__}, not an object")
    if variant == "local":
        points = qa.get("points")
        if not isinstance(points, list) or not points:
            raise RecordError("missing_field", "no 'points': the question points at nothing")
        point, question = points[p], text_field(qa, "question")
        if not isinstance(point, dict):
            raise RecordError("bad_field", f"point {p} is {type(point).__name__}")
        answer = text_field(point, "ans")
        objs = qa.get("all_objs")
        obj = objs[p] if isinstance(objs, list) and p < len(objs) else None
        extra: dict[str, Any] = {"all_answers": qa.get("all_ans")}
    else:
        point, question = qa.get("point"), text_field(qa, "general_question")
        answer = text_field(qa, "ans")
        obj = qa.get("bbox")
        extra = {k: qa.get(k) for k in ("obj_question", "super_question", "obj_type",
                                        "supercategory")}
    x, y = _pixel_point(point)
    image, (width, height) = _locate(ctx, record["image_id"])
    if not (0 <= x <= width and 0 <= y <= height):
        raise RecordError("bad_field", f"point ({x:g}, {y:g}) lies outside the "
                          f"{width}x{height} image")
    box = _box(obj, width, height)
    row = sample(ctx, task="vqa", image=image,
                 turns=[{"role": "user", "content": POINT_QUESTION.format(question=question)},
                        {"role": "assistant", "content": answer}],
                 meta={"dataset": "LocalQA" if variant == "local" else "LookTwiceQA",
                       "image_id": record["image_id"], "split": record["split"],
                       "question": question, "answer": answer, **extra,
                       "point_px": [x, y], "image_size": [width, height],
                       DRAW_KEY: {"shape": "arrow", "point": [x / width, y / height],
                                  "color": POINT_ARROW_COLOR}})
    if box is not None:
        row["boxes"] = [box]
    return row


ADAPTER = Adapter("pointqa", convert, "PointQA (LocalQA / LookTwice-QA): questions about the "
                  "object at a point, drawn as a red arrow", reader=cached_reader(_parse),
                  image_pattern=DEFAULT_PATTERN, pattern_fields=("image_id",), draws=True)
