"""WebDataset tar shards as img2dataset writes them (``00000.tar``, ``00001.tar``...).

Format (github.com/rom1504/img2dataset, ``output_format: webdataset``): each shard is a tar
whose members are grouped by key, WebDataset's way (the key is the member path up to the
first dot of its file name): ``{key}.jpg`` (or ``.png`` / ``.webp``, by ``encode_format``),
``{key}.txt`` (the caption) and ``{key}.json`` (``url``, ``key``, ``status``, ``width``,
``height``, ``original_width``, ``exif``...). The source path names the shards
(``s3://bucket/cc3m/*.tar``).

One ``captions`` row per key: one of LLaVA's 16 detailed-description requests (from the
key), the raw answer the caption. The image is both referenced as the tar member
(``tar://{key}.jpg::{shard}``, pf_ray.data.images) and carried as its bytes in
``image_bytes``: the shard is read once here, where a later loader would reread the whole
tar per image. A key without an image or a caption is rejected (``image_missing`` /
``missing_field``); a corrupt image is rejected by the ingest job's image check. Id: the
img2dataset key (unique across the shards of one download).

Cost: like every source, the job's planner reads each shard once to count its records, and
a worker holds the shard it is slicing in memory; name the shards a run needs (CC3M's
paper count, 67k, is 7 of img2dataset's 10,000-key shards) rather than the whole download.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from typing import Any

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, pick, sample
from pf_ray.data.sources.readers import cached_reader
from pf_ray.data.sources.templates import CAPTION_PROMPTS
from pf_ray.specs import StorageConfig
from pf_ray.storage import read_bytes, resolve

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
# WebDataset's split of a member name into key and extension (webdataset.tariterators)
KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")


def _parse(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    fs, path = resolve(file, storage)
    samples: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(read_bytes(fs, path))) as tar:
            for info in tar:
                found = KEY_EXT.match(info.name) if info.isfile() else None
                if found is None:
                    continue
                key, ext = found.group(1), found.group(2).lower()
                entry = samples.setdefault(key, {"id": key, "shard": file, "files": {}})
                f = tar.extractfile(info)
                entry["files"][ext] = (info.name, f.read() if f is not None else b"")
    except tarfile.TarError as exc:
        raise RecordError("unreadable_file", f"{file}: not a readable tar ({exc})") from exc
    return list(enumerate(samples.values()))


def convert(record: dict[str, Any], ctx: RecordContext) -> dict[str, Any]:
    files: dict[str, tuple[str, bytes]] = record["files"]
    ext = next((e for e in IMAGE_EXTS if e in files), None)
    if ext is None:
        raise RecordError("image_missing", f"key {record['id']}: no image member "
                          f"({'/'.join(IMAGE_EXTS)}); members: {sorted(files)}")
    if "txt" not in files:
        raise RecordError("missing_field", f"key {record['id']}: no .txt caption")
    try:
        caption = files["txt"][1].decode("utf-8").strip()
        info = json.loads(files["json"][1]) if "json" in files else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError("bad_field", f"key {record['id']}: {exc}") from exc
    if not caption:
        raise RecordError("empty_text", f"key {record['id']}: empty caption")
    member, data = files[ext]
    row = sample(ctx, task="captions", image=f"tar://{member}::{record['shard']}",
                 turns=[{"role": "user", "content": pick(CAPTION_PROMPTS, ctx.key)},
                        {"role": "assistant", "content": caption}],
                 meta={"caption": caption, "key": record["id"],
                       **{k: info.get(k) for k in ("url", "width", "height", "status")
                          if isinstance(info, dict) and k in info}})
    row["image_bytes"] = data
    return row


# a shard is ~300 MB: a worker caches one
ADAPTER = Adapter("webdataset", convert, "WebDataset tar shards as img2dataset writes them "
                  "(image, caption, json per key)", reader=cached_reader(_parse, maxsize=1))
