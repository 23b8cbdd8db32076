"""What the object-detection releases (DIOR, HRRSD, DOTA) share: their rows, the object
count answer, and Pascal-VOC XML annotations listed by a split file (an annotation without
``<size>`` takes it from the image's header: :mod:`~pf_ray.data.sources.image_size`).

PF-1M turns these releases into caption-style rows (the paper's Table 6: "DIOR, DOTA and
HRRSD (boxes, preceded by ``Object Count: {...}``)"): the user turn is one of LLaVA's 16
description requests (picked from the record key), the raw answer is ``Object Count:``
and the Python repr of a dict label -> number of objects, in the order the labels first
appear in the annotation (``Object Count: {'airplane': 3, 'vehicle': 2}``), and the
objects' axis-aligned boxes (0-1, clamped) go in ``row["boxes"]``, which the rewrite
stage appends to the draft as ``label: [x1, y1, x2, y2]`` lines. That exact rendering
(repr of an insertion-ordered dict, every object counted, difficult ones included) is our
reading of the paper's one-line description, not a released sample.

Labels are written as words (``storagetank`` -> ``storage tank``, ``small-vehicle`` ->
``small vehicle``) so that the rewriter reads and writes plain English; the released
names stay in ``meta.labels``.

This module declares no adapter; ``dior``, ``hrrsd`` and ``dota`` build on it.
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.fs as pafs

from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, pick, sample
from pf_ray.data.sources.image_size import image_size
from pf_ray.data.sources.templates import CAPTION_PROMPTS, OBJECT_COUNT_ANSWER
from pf_ray.faults import StorageUnavailable, storage_fault
from pf_ray.specs import StorageConfig
from pf_ray.storage import confirm_missing, exists, read_bytes, resolve

# Annotation files fetched at once by a reader (object-store round trips dominate).
FETCH_THREADS = 32


def readable(name: str, names: Mapping[str, str] | None = None) -> str:
    """A released class name as words: the table's entry (case-insensitive), else the name
    with '-' and '_' read as spaces (``small-vehicle`` -> ``small vehicle``)."""
    if names:
        folded = {k.lower(): v for k, v in names.items()}
        if name.lower() in folded:
            return folded[name.lower()]
    return " ".join(name.replace("-", " ").replace("_", " ").split())


def object_count(labels: Sequence[str]) -> str:
    """``Object Count: {'airplane': 3, 'vehicle': 2}``: labels in first-appearance order."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return OBJECT_COUNT_ANSWER.format(counts=repr(counts))


def unit_box(label: str, xyxy: Sequence[float], width: float, height: float
             ) -> dict[str, Any]:
    """A pixel box ``(x1, y1, x2, y2)`` -> ``{label, x1, y1, x2, y2}`` in 0-1, clamped."""
    x1, y1, x2, y2 = xyxy

    def clamp(v: float) -> float:
        return min(1.0, max(0.0, v))

    return {"label": label, "x1": clamp(x1 / width), "y1": clamp(y1 / height),
            "x2": clamp(x2 / width), "y2": clamp(y2 / height)}


def detection_row(ctx: RecordContext, image: str | None, boxes: list[dict[str, Any]],
                  meta: dict[str, Any]) -> dict[str, Any]:
    """The ``captions`` row of one annotated image: a description request, the object
    count as the raw answer, the boxes in ``boxes``."""
    if not boxes:
        raise RecordError("empty_text", "the image has no annotated objects")
    row = sample(ctx, task="captions", image=image,
                 turns=[{"role": "user", "content": pick(CAPTION_PROMPTS, ctx.key)},
                        {"role": "assistant",
                         "content": object_count([b["label"] for b in boxes])}],
                 meta=meta)
    row["boxes"] = boxes
    return row


# ------------------------------------------------------------------ files


def fetch_all(paths: Sequence[str], fs: pafs.FileSystem
              ) -> list[bytes | RecordError]:
    """The bytes of each file, fetched concurrently; a missing one is its RecordError
    (``missing_annotation``), an outage raises (the unit fails and is rerun)."""

    def one(path: str) -> bytes | RecordError:
        try:
            return read_bytes(fs, path)
        except Exception as exc:  # noqa: BLE001 - classified: a missing file or an outage
            real = confirm_missing(fs, path, exc)
            if storage_fault(real) == "row":
                return RecordError("missing_annotation", f"{path}: {real}")
            raise StorageUnavailable(f"{path}: {type(real).__name__}: {real}") from exc

    if not paths:
        return []
    with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(paths))) as pool:
        return list(pool.map(one, paths))


def split_ids(data: bytes, file: str) -> list[str]:
    """The image ids of a VOC split list (``ImageSets/Main/train.txt``): the first token of
    each non-blank line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordError("unreadable_file", f"{file}: not a text file ({exc})") from exc
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def voc_records(file: str, storage: StorageConfig, annotation_dirs: Sequence[str],
                parse: Callable[[bytes, str], dict[str, Any]] | None = None
                ) -> list[tuple[int, Any]]:
    """One record per id of a VOC split list, its XML parsed (or the reason it is not).

    The list sits at ``ROOT/ImageSets/Main/{split}.txt``; each id's annotation is
    ``ROOT/{dir}/{id}.xml`` for the first of ``annotation_dirs`` that holds the first id's
    file (DIOR moved its horizontal boxes into ``Annotations/Horizontal Bounding Boxes``).
    """
    fs, path = resolve(file, storage)
    ids = split_ids(read_bytes(fs, path), file)
    root = posixpath.dirname(posixpath.dirname(posixpath.dirname(path)))
    folder = posixpath.join(root, annotation_dirs[0])
    for candidate in annotation_dirs:
        if ids and exists(fs, posixpath.join(root, candidate, f"{ids[0]}.xml")):
            folder = posixpath.join(root, candidate)
            break
    split = posixpath.splitext(posixpath.basename(path))[0]
    blobs = fetch_all([posixpath.join(folder, f"{i}.xml") for i in ids], fs)
    out: list[tuple[int, Any]] = []
    for pos, (image_id, blob) in enumerate(zip(ids, blobs, strict=True)):
        record: dict[str, Any] = {"id": image_id, "split": split,
                                  "annotation": f"{posixpath.basename(folder)}/{image_id}.xml"}
        try:
            if isinstance(blob, RecordError):
                raise blob
            record["voc"] = (parse or parse_voc)(blob, image_id)
        except RecordError as exc:
            record["error"] = [exc.reason, exc.detail]
        out.append((pos, record))
    return out


def parse_voc(data: bytes, image_id: str) -> dict[str, Any]:
    """A Pascal-VOC annotation: ``filename``, ``size`` (``width``/``height``, None when
    absent or not positive) and its objects (``name``, ``bndbox`` x/y min/max, optional
    ``difficult``). A malformed file or object raises RecordError."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise RecordError("unreadable_file", f"{image_id}.xml: malformed XML ({exc})") from exc
    if root.tag != "annotation":
        raise RecordError("unreadable_file", f"{image_id}.xml: root is <{root.tag}>, not "
                          "<annotation>")
    size = root.find("size")
    width = _positive(size.findtext("width") if size is not None else None)
    height = _positive(size.findtext("height") if size is not None else None)
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise RecordError("missing_field", f"{image_id}.xml object {k}: no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise RecordError("missing_field", f"{image_id}.xml object {k}: no <bndbox>")
        coords = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = box.findtext(tag)
            try:
                coords.append(float(text))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise RecordError("bad_field", f"{image_id}.xml object {k}: <{tag}> is "
                                  f"{text!r}, not a number") from None
        if coords[2] < coords[0] or coords[3] < coords[1]:
            raise RecordError("bad_field", f"{image_id}.xml object {k}: box {coords} has "
                              "max < min")
        difficult = (obj.findtext("difficult") or "").strip()
        objects.append({"name": name, "box": coords,
                        "difficult": int(difficult) if difficult.isdigit() else None})
    return {"filename": (root.findtext("filename") or "").strip() or None,
            "width": width, "height": height, "objects": objects}


def _positive(text: str | None) -> int | None:
    try:
        value = int(float(text))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def voc_convert(record: dict[str, Any], ctx: RecordContext, names: Mapping[str, str],
                image_of: Callable[[dict[str, Any], RecordContext, str], str | None]
                ) -> dict[str, Any]:
    """The row of a :func:`voc_records` record; ``image_of(record, ctx, filename)`` names
    the image. The size comes from the XML's ``<size>``, else from the image's header."""
    if record.get("error"):
        reason, detail = record["error"]
        raise RecordError(reason, detail)
    voc = record["voc"]
    filename = voc["filename"] or f"{record['id']}.jpg"
    if not posixpath.splitext(filename)[1]:
        filename += ".jpg"
    image = image_of(record, ctx, filename)
    width, height = voc["width"], voc["height"]
    size_from = "xml"
    if width is None or height is None:
        if image is None:
            raise RecordError("image_missing", "no <size> and no image to read it from")
        width, height = image_size(image, ctx.storage)
        size_from = "image"
    objects = voc["objects"]
    boxes = [unit_box(readable(o["name"], names), o["box"], width, height) for o in objects]
    meta: dict[str, Any] = {"split": record["split"], "image_id": record["id"],
                            "filename": filename, "annotation": record["annotation"],
                            "width": width, "height": height, "size_from": size_from,
                            "labels": [o["name"] for o in objects]}
    if any(o["difficult"] is not None for o in objects):
        meta["difficult"] = [o["difficult"] for o in objects]
    return detection_row(ctx, image, boxes, meta)
