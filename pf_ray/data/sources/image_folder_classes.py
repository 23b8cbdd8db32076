"""Image classification folders: one sub-folder per class (torchvision ``ImageFolder`` /
ELEVATER-style ``root/{class}/{image}``).

The source path names the root folder (local or ``s3://``). Every file with an image
extension (torchvision's list: jpg, jpeg, png, ppm, bmp, pgm, tif, tiff, webp) under a class
folder, at any depth, is one ``classification`` row (paper.md §4's ELEVATER template): the user
turn ``"What is this?"``, the raw answer ``"a photo of a {class}."`` with the folder name's
underscores read as spaces (``golden_retriever`` -> ``golden retriever``); the folder name
is kept in ``meta.class_folder``. Files directly in the root and non-image files are not
samples and are skipped. Rows come in (class, path) order. Id: the root folder's name and
the path under it (``pets/golden_retriever/n02099601_3004.jpg``), so one source may list
several roots (ELEVATER's datasets). ``source.image_root`` is not used: the image is the
file's own path or URI.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pyarrow.fs as pafs

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, sample
from pf_ray.data.sources.templates import CLASS_ANSWER, CLASSIFY_PROMPT
from pf_ray.specs import StorageConfig
from pf_ray.storage import is_uri, resolve

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def folder_records(root: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    fs, inner = resolve(root, storage)
    inner = inner.rstrip("/")
    info = fs.get_file_info(inner)
    if info.type != pafs.FileType.Directory:
        raise RecordError("unreadable_file", f"{root}: not a folder of class folders")
    scheme = root.split("://", 1)[0] + "://" if is_uri(root) else ""
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(inner, recursive=True)):
        rel = posixpath.relpath(entry.path, inner)
        if (entry.type != pafs.FileType.File or "/" not in rel
                or not rel.lower().endswith(IMAGE_EXTS)):
            continue
        found.append((rel.split("/", 1)[0], rel, f"{scheme}{entry.path}"))
    return [(pos, {"id": rel, "class": cls, "image": path})
            for pos, (cls, rel, path) in enumerate(sorted(found))]


def root_prefix(root: str) -> str:
    return posixpath.basename(root.rstrip("/")) + "/"


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    label = " ".join(record["class"].replace("_", " ").split())
    if not label:
        raise RecordError("empty_text", f"class folder {record['class']!r} names no class")
    return sample(ctx, task="classification", image=record["image"],
                  turns=[{"role": "user", "content": CLASSIFY_PROMPT},
                         {"role": "assistant", "content": CLASS_ANSWER.format(label=label)}],
                  meta={"label": label, "class_folder": record["class"]})


ADAPTER = Adapter("image_folder_classes", convert, "Image classification folders, one "
                  "sub-folder per class (ImageFolder / ELEVATER)", reader=folder_records,
                  key_prefix=root_prefix)
