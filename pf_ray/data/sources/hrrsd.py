"""HRRSD (Zhang et al. 2019, "Hierarchical and Robust Convolutional Neural Network for Very
High-Resolution Remote Sensing Object Detection", TGRS): 21,761 Google Earth / Baidu Map
images, 13 classes, 55,740 objects, Pascal-VOC layout.

Released layout (verified against github.com/CrazyStoneonRoad/TGRS-HRRSD-Dataset, which
holds the annotations and lists: ``OPT2017/Annotations/00001.xml``,
``OPT2017/ImageSets/Main/train.txt``)::

    OPT2017/ImageSets/Main/{train,val,trainval,test}.txt   one 5-digit id per line
    OPT2017/ImageSets/Main/{class}_{split}.txt             VOC per-class lists (not read)
    OPT2017/Annotations/{id}.xml
    OPT2017/JPEGImages/{id}.jpg                            (from the Drive/Baidu archive)
    OPT2017/labels/{id}.txt                                YOLO-style copy (not read)

An XML is a VOC file (``<folder>OPTIMAL_Z</folder>``, ``<filename>00001.jpg</filename>``,
``<size><width>1272</width><height>1504</height><depth>3</depth></size>``, objects with
``<name>``, ``<pose>``, ``<truncated>``, ``<difficult>``, ``<bndbox>``). Class names as
released, already words: ship, bridge, ground track field, storage tank, basketball court,
tennis court, airplane, baseball diamond, harbor, vehicle, crossroad, T junction, parking
lot.

``source.path`` names a split list (``train.txt``, ``val.txt``, ``trainval.txt`` or
``test.txt``; not the per-class lists, whose lines hold negatives too); one record per
listed id, its XML read from ``Annotations/`` beside ``ImageSets/``. Row (see
:mod:`~pf_ray.data.sources.detection`): task ``captions``, one of LLaVA's 16 description
requests, raw answer ``Object Count: {...}``, boxes in 0-1; every object is counted,
``difficult`` ones too (they are in the image), the flags kept in ``meta.difficult``.
Id: the image id (``hrrsd:00001``). Image: ``source.image_pattern`` over ``{filename}``,
``{image_id}``, ``{split}``, default ``{filename}`` under ``image_root``
(``OPT2017/JPEGImages``). Rejects as :mod:`~pf_ray.data.sources.dior`'s.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.detection import voc_convert, voc_records
from pf_ray.data.sources.fields import RecordContext, pattern_image
from pf_ray.data.sources.readers import cached_reader


def image_of(record: dict[str, Any], ctx: RecordContext, filename: str) -> str | None:
    return pattern_image(ctx, filename=filename, image_id=record["id"], split=record["split"])


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    return voc_convert(record, ctx, {}, image_of)


ADAPTER = Adapter("hrrsd", convert, "HRRSD detection (VOC XML per id of an ImageSets/Main "
                  "split list) as object-count caption rows with boxes",
                  reader=cached_reader(partial(voc_records, annotation_dirs=("Annotations",))),
                  image_pattern="{filename}",
                  pattern_fields=("filename", "image_id", "split"))
