"""DIOR (Li et al. 2020, "Object detection in optical remote sensing images: A survey and a
new benchmark"): 23,463 Google Earth images of 800x800 px, 20 classes, Pascal-VOC XML.

Released layout (the DIOR Google Drive / Baidu release; verified against the layouts that
mmrotate's ``DIORDataset``, torchgeo's ``DIOR`` and DIOR-R conversion READMEs read)::

    ImageSets/Main/{train,val,test}.txt      one image id per line (00001 ... 23463)
    Annotations/Horizontal Bounding Boxes/{id}.xml   (older copies: Annotations/{id}.xml)
    Annotations/Oriented Bounding Boxes/{id}.xml     (DIOR-R; not read)
    JPEGImages-trainval/{id}.jpg             ids 00001-11725 (train + val)
    JPEGImages-test/{id}.jpg                 ids 11726-23463

An XML holds ``<filename>00001.jpg</filename>``, ``<size><width>800</width><height>800
</height><depth>3</depth></size>`` and one ``<object>`` per instance with ``<name>`` and
``<bndbox>`` ``xmin/ymin/xmax/ymax`` in pixels (the horizontal set has no ``<difficult>``).
Class names as released: airplane, airport, baseballfield, basketballcourt, bridge,
chimney, dam, Expressway-Service-area, Expressway-toll-station, golffield,
groundtrackfield, harbor, overpass, ship, stadium, storagetank, tenniscourt,
trainstation, vehicle, windmill; rows use them as words (``golf field``, ``expressway
service area``), the released names stay in ``meta.labels``.

``source.path`` names a split list; one record per listed id, its XML read beside the
list (fetched concurrently, parsed once per worker). Row (see
:mod:`~pf_ray.data.sources.detection`): task ``captions``, one of LLaVA's 16 description
requests, raw answer ``Object Count: {...}``, boxes in 0-1. Id: the image id
(``dior:00001``; unique across DIOR's lists). Image: ``source.image_pattern`` over
``{filename}`` (the XML's), ``{image_id}`` and ``{split}``, default ``{filename}`` under
``image_root`` (``JPEGImages-trainval`` for train/val, ``JPEGImages-test`` for test).
Rejects: an id without its XML (``missing_annotation``), malformed XML
(``unreadable_file``), an object without name/box or with non-numeric coordinates
(``missing_field`` / ``bad_field``), an image without objects (``empty_text``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.detection import voc_convert, voc_records
from pf_ray.data.sources.fields import RecordContext, pattern_image
from pf_ray.data.sources.readers import cached_reader

ANNOTATION_DIRS = ("Annotations/Horizontal Bounding Boxes", "Annotations")

NAMES = {
    "baseballfield": "baseball field", "basketballcourt": "basketball court",
    "Expressway-Service-area": "expressway service area",
    "Expressway-toll-station": "expressway toll station", "golffield": "golf field",
    "groundtrackfield": "ground track field", "storagetank": "storage tank",
    "tenniscourt": "tennis court", "trainstation": "train station",
}


def image_of(record: dict[str, Any], ctx: RecordContext, filename: str) -> str | None:
    return pattern_image(ctx, filename=filename, image_id=record["id"], split=record["split"])


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    return voc_convert(record, ctx, NAMES, image_of)


ADAPTER = Adapter("dior", convert, "DIOR detection (VOC XML per id of an ImageSets/Main "
                  "split list) as object-count caption rows with boxes",
                  reader=cached_reader(partial(voc_records, annotation_dirs=ANNOTATION_DIRS)),
                  image_pattern="{filename}",
                  pattern_fields=("filename", "image_id", "split"))
