"""PF-1M as released (HF ``chendelong/PF-1M``, paper.md §4): one JSON list of samples.

Each sample::

    {"input": "<img_path>rel/path<img_path>{instruction}", "output": ..., "original": ...,
     "rouge_score": float, "reward": float | null,
     "nli_similarity": [3 logits]                     (QA samples)
     "sts_similarity": float                          (caption samples)
     "filtered_paragraphs": [[score, text], ...],     (multi-paragraph outputs)
     "paragraph_clip_scores": [float, ...],           (multi-paragraph outputs)
     "id": "<source>:<key>"}                          (pf-ray's addition)

Optional fields appear only where the filter scored the sample, as in the release; ``id``
is added so the file joins back to the pf-ray dataset (readers of the release ignore it).
A sample without an image has no ``<img_path>`` marker; a sample with several (a change
caption's before and after) has one marked path per image, in order, before the instruction
(``<img_path>a.png<img_path><img_path>b.png<img_path>What changed?``). Embedded images
(``image_bytes``) are written to ``images/<source>/<id>.<ext>`` (the k-th image of a row,
k >= 2: ``<id>_k.<ext>``) and referenced relative to that folder; image references (paths,
URIs) are written as they are. :func:`read_pf1m_json` reads the file back into rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pf_ray.data.images import row_images
from pf_ray.data.io import Dataset, read_shard_columns
from pf_ray.specs import StorageConfig

MARKER = "<img_path>"
_MARKED = re.compile(rf"{MARKER}(.*?){MARKER}", re.DOTALL)
COLUMNS = ["id", "source", "image", "image_bytes", "extra_images", "instruction", "original",
           "output", "rouge_score", "reward", "nli_similarity", "sts_similarity",
           "filtered_paragraphs", "paragraph_clip_scores"]
# Fields a row read back carries (the images as the paths written in ``input``; extra_images:
# the paths after the first, or None).
FIELDS = ("id", "image", "extra_images", "instruction", "output", "original", "rouge_score",
          "reward", "nli_similarity", "sts_similarity", "filtered_paragraphs",
          "paragraph_clip_scores")


def image_suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:3] == b"GIF":
        return ".gif"
    return ".bin"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def to_sample(row: dict[str, Any], image_paths: list[str]) -> dict[str, Any]:
    """One PF-1M sample from one pf1m row (``image_paths``: what goes between the markers,
    one per image of the row, in order)."""
    prefix = "".join(f"{MARKER}{p}{MARKER}" for p in image_paths)
    sample: dict[str, Any] = {"input": prefix + row["instruction"], "output": row["output"],
                              "original": row["original"], "rouge_score": row["rouge_score"],
                              "reward": row["reward"]}
    if row["nli_similarity"] is not None:
        sample["nli_similarity"] = row["nli_similarity"]
    if row["sts_similarity"] is not None:
        sample["sts_similarity"] = row["sts_similarity"]
    if row["paragraph_clip_scores"] is not None:
        sample["filtered_paragraphs"] = [[p["score"], p["text"]]
                                         for p in row["filtered_paragraphs"] or []]
        sample["paragraph_clip_scores"] = row["paragraph_clip_scores"]
    sample["id"] = row["id"]
    return sample


def _rows(dataset: Dataset) -> Iterator[dict[str, Any]]:
    for f in dataset.shard_files():
        batch = read_shard_columns(dataset.fs, f, COLUMNS)
        for i in range(len(batch["id"])):
            yield {c: batch[c][i] for c in COLUMNS}


def export_pf1m_json(root: str, out: str | Path, images: str | Path | None = None,
                     storage: StorageConfig | None = None) -> dict[str, int]:
    """Write the committed rows of pf1m dataset ``root`` to ``out`` (streamed, one sample per
    line); embedded images go under ``images`` (default: ``images/`` beside ``out``).
    Returns counts: samples, images_written."""
    dataset = Dataset(root, storage or StorageConfig())
    manifest = dataset.read_manifest()
    if manifest is None:
        raise FileNotFoundError(f"{root}: no pf-ray dataset (no _manifest.json)")
    if manifest.get("kind") != "filter":
        raise ValueError(f"{root}: a {manifest.get('kind')!r} dataset; pf1m-json exports the "
                         "output of a 'filter' job")
    out = Path(out)
    image_dir = Path(images) if images is not None else out.parent / "images"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    counts = {"samples": 0, "images_written": 0}
    with tmp.open("w", encoding="utf-8") as f:
        f.write("[")
        for row in _rows(dataset):
            paths = []
            for k, (ref, data) in enumerate(row_images(row["image"], row["image_bytes"],
                                                       row["extra_images"]), start=1):
                if data is None:
                    paths.append(ref)
                    continue
                stem = _safe(row["id"]) + ("" if k == 1 else f"_{k}")
                rel = f"{_safe(row['source'])}/{stem}{image_suffix(data)}"
                target = image_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                counts["images_written"] += 1
                paths.append(rel)
            f.write(("\n" if counts["samples"] == 0 else ",\n")
                    + json.dumps(to_sample(row, paths), ensure_ascii=False))
            counts["samples"] += 1
        f.write("\n]\n")
    tmp.replace(out)
    return counts


def from_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A row (:data:`FIELDS`) from one PF-1M sample; fields a sample lacks are None."""
    text, paths = sample["input"], []
    while (m := _MARKED.match(text)) is not None:  # the leading marked paths, in order
        paths.append(m.group(1))
        text = text[m.end():]
    fp = sample.get("filtered_paragraphs")
    return {"id": sample.get("id"), "image": paths[0] if paths else None,
            "extra_images": paths[1:] or None, "instruction": text,
            "output": sample["output"], "original": sample["original"],
            "rouge_score": sample.get("rouge_score"), "reward": sample.get("reward"),
            "nli_similarity": sample.get("nli_similarity"),
            "sts_similarity": sample.get("sts_similarity"),
            "filtered_paragraphs": None if fp is None else [{"score": s, "text": t}
                                                            for s, t in fp],
            "paragraph_clip_scores": sample.get("paragraph_clip_scores")}


def read_pf1m_json(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a PF-1M JSON file (this exporter's or the released ``PF-1M.json``)."""
    with Path(path).open(encoding="utf-8") as f:
        return [from_sample(s) for s in json.load(f)]
