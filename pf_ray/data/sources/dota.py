"""DOTA (Xia et al. 2018, "DOTA: A Large-scale Dataset for Object Detection in Aerial
Images"; v1.0: 2,806 images, 15 classes, 188,282 instances; v1.5: the same images
re-annotated with small instances and a 16th class, container-crane).

Released layout (captain-whu.github.io/DOTA/dataset.html; the train/val folders as
mmrotate / mmyolo's dataset-preparation docs and DOTA_devkit's ``dota_utils.py`` read
them)::

    train/images/P0000.png ...                     (val/images/, test/images/ alike)
    train/labelTxt-v1.0/labelTxt/P0000.txt          oriented boxes (read)
    train/labelTxt-v1.0/trainset_reclabelTxt/*.txt  horizontal boxes (same line format)
    train/labelTxt-v1.5/DOTA-v1.5_train/*.txt       v1.5, same line format

A label file starts with ``imagesource:GoogleEarth`` and ``gsd:0.146343590398`` (``gsd``
may be ``null``) and then holds one object per line: ``x1 y1 x2 y2 x3 y3 x4 y4 category
difficult`` (pixels, the 4 vertices clockwise; category as ``small-vehicle``;
``difficult`` 0/1). Like DOTA_devkit, a line of 9 fields (no ``difficult``) is read with
``difficult`` unknown; any other count, a non-numeric coordinate or a non-integer flag
rejects the image (``bad_field``): one wrong line would make the object count wrong.
The test split has no labels.

``source.path`` names a folder of label files (``.../labelTxt-v1.0/labelTxt``; its
``*.txt`` are read concurrently, parsed once per worker) or a single label file. One
record per label file. The files hold no image size, so the converter reads it from the
header of the image (a 64 KiB range read of ``{image_id}.png``; the pixels are never
decoded); a missing image is ``image_missing``. Row (see
:mod:`~pf_ray.data.sources.detection`): task ``captions``, one of LLaVA's 16 description
requests, raw answer ``Object Count: {...}`` (categories as words: ``small vehicle``),
and each polygon's enclosing axis-aligned box in 0-1, clamped. Difficult objects are
kept and counted (they are in the picture, only hard to detect); their flags are in
``meta.difficult``, aligned with the boxes. Id: the file stem (``dota:P0000``; DOTA's
P-numbers are unique across splits). Image: ``source.image_pattern`` over
``{image_id}``, default ``{image_id}.png`` under ``image_root`` (``train/images``).
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow.fs as pafs

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.detection import (
    detection_row,
    fetch_all,
    readable,
    unit_box,
)
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, pattern_image
from pf_ray.data.sources.image_size import image_size
from pf_ray.data.sources.readers import cached_reader
from pf_ray.specs import StorageConfig
from pf_ray.storage import resolve


def label_records(path: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    fs, inner = resolve(path, storage)
    inner = inner.rstrip("/")
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.Directory:
        files = sorted(e.path for e in fs.get_file_info(pafs.FileSelector(inner))
                       if e.type == pafs.FileType.File and e.path.endswith(".txt"))
    elif info.type == pafs.FileType.File:
        files = [inner]
    else:
        raise RecordError("unreadable_file", f"{path}: no such folder of labelTxt files")
    out: list[tuple[int, Any]] = []
    for pos, (file, blob) in enumerate(zip(files, fetch_all(files, fs), strict=True)):
        stem = posixpath.splitext(posixpath.basename(file))[0]
        record: dict[str, Any] = {"id": stem, "label_file": posixpath.basename(file)}
        try:
            if isinstance(blob, RecordError):
                raise blob
            record.update(parse_label_text(blob, stem))
        except RecordError as exc:
            record["error"] = [exc.reason, exc.detail]
        out.append((pos, record))
    return out


def parse_label_text(data: bytes, stem: str) -> dict[str, Any]:
    """A DOTA label file -> ``{imagesource, gsd, objects: [{name, poly, difficult}]}``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecordError("unreadable_file", f"{stem}.txt: not text ({exc})") from exc
    header: dict[str, Any] = {"imagesource": None, "gsd": None}
    objects = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in header and len(line.split()) < 9:
            value = value.strip()
            if key.strip().lower() == "gsd":
                try:
                    header["gsd"] = float(value)
                except ValueError:
                    header["gsd"] = None  # "null" / "None" in some files
            else:
                header["imagesource"] = value or None
            continue
        fields = line.split()
        if len(fields) not in (9, 10):
            raise RecordError("bad_field", f"{stem}.txt line {lineno}: {len(fields)} fields, "
                              "expected 'x1 y1 x2 y2 x3 y3 x4 y4 category difficult'")
        try:
            poly = [float(v) for v in fields[:8]]
        except ValueError:
            raise RecordError("bad_field", f"{stem}.txt line {lineno}: a coordinate of "
                              f"{fields[:8]} is not a number") from None
        difficult = None
        if len(fields) == 10:
            if not fields[9].isdigit():
                raise RecordError("bad_field", f"{stem}.txt line {lineno}: difficult is "
                                  f"{fields[9]!r}, not 0/1")
            difficult = int(fields[9])
        objects.append({"name": fields[8], "poly": poly, "difficult": difficult})
    return {**header, "objects": objects}


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    if record.get("error"):
        reason, detail = record["error"]
        raise RecordError(reason, detail)
    objects = record["objects"]
    if not objects:
        raise RecordError("empty_text", f"{record['label_file']}: no objects")
    image = pattern_image(ctx, image_id=record["id"])
    if image is None:
        raise RecordError("image_missing", "no image reference to read the size from")
    width, height = image_size(image, ctx.storage)
    boxes = []
    for o in objects:
        xs, ys = o["poly"][0::2], o["poly"][1::2]
        boxes.append(unit_box(readable(o["name"]), (min(xs), min(ys), max(xs), max(ys)),
                              width, height))
    return detection_row(ctx, image, boxes, {
        "image_id": record["id"], "label_file": record["label_file"],
        "imagesource": record["imagesource"], "gsd": record["gsd"],
        "width": width, "height": height, "labels": [o["name"] for o in objects],
        "difficult": [o["difficult"] for o in objects]})


ADAPTER = Adapter("dota", convert, "DOTA labelTxt (oriented boxes of a folder of label "
                  "files) as object-count caption rows with axis-aligned boxes",
                  reader=cached_reader(label_records), image_pattern="{image_id}.png",
                  pattern_fields=("image_id",))
