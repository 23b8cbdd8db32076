"""Tiny models and rewrite datasets for the filter tests, built offline.

* a BERT sequence classifier + WordPiece tokenizer (NLI: 3 labels, reward: 1), saved as a
  HF folder; ``bias`` (with zeroed classifier weights) pins its logits for decision tests;
* the tiny open_clip config ``pf-tiny-vit`` with random weights saved to a file;
* a rewrite-stage dataset (pf-ray layout: shards, markers, manifest) written with
  :class:`pf_ray.data.io.Dataset`, the rewrite schema's columns.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pf_ray.data.io import Dataset
from pf_ray.data.schema import REJECT_SCHEMA, REWRITE_SCHEMA, to_table
from pf_ray.filters.schema import pf1m_output
from pf_ray.scorers.tiny import build_classifier, build_tiny_clip  # noqa: F401 - re-exported
from pf_ray.specs import StorageConfig

# the rewrite stage's columns, finish_reason nullable (as PF-1M inputs may have it)
REWRITE_COLUMNS_SCHEMA = pa.schema([f for f in pf1m_output().schema if f.name in REWRITE_SCHEMA.names])


def png(color: tuple[int, int, int], size: int = 64) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def write_rewrite_dataset(root: str, rows: list[dict[str, Any]], rows_per_shard: int = 10,
                          storage: StorageConfig | None = None) -> Dataset:
    """A committed rewrite dataset: ``rows`` (dicts of the rewrite columns) in shards."""
    ds = Dataset(root, storage or StorageConfig())
    empty = to_table({f.name: [] for f in REJECT_SCHEMA}, REJECT_SCHEMA)
    for k, start in enumerate(range(0, len(rows), rows_per_shard)):
        chunk = rows[start:start + rows_per_shard]
        cols = {f.name: [r.get(f.name) for r in chunk] for f in REWRITE_COLUMNS_SCHEMA}
        table = to_table(cols, REWRITE_COLUMNS_SCHEMA, name="rewrite")
        name = f"rewrite-{k:05d}-abc"
        ds.write_data(f"{name}.parquet", table, empty)
        counts: dict[str, dict[str, int]] = {"source": {}, "task": {}}
        for r in chunk:
            for col in counts:
                counts[col][r[col]] = counts[col].get(r[col], 0) + 1
        ds.commit(name, {"unit": f"rewrite-{k:05d}", "spec_hash": "abc", "rows": len(chunk),
                         "rejects": 0, "counts": counts, "rejects_per_reason": {},
                         "files": [f"{name}.parquet"], "reject_files": []})
    ds.write_manifest(kind="rewrite", spec_hash="abc", spec={}, run={})
    return ds


def row(i: int, source: str, task: str, instruction: str, original: str, output: str,
        image_bytes: bytes | None = None, image: str | None = None) -> dict[str, Any]:
    return {"id": f"{source}:{i}", "source": source, "task": task, "image": image,
            "image_bytes": image_bytes, "instruction": instruction, "original": original,
            "output": output, "finish_reason": "stop", "meta": "{}"}


# (task, instruction, original, output, expected fate with permissive model filters)
CASES: list[tuple[str, str, str, str, str | None]] = [
    ("vqa", "What colour is the car?", "red", "The car in the picture is red.", None),
    ("vqa", "Is there a dog?", "yes", "Yes.", "filter_length_short"),
    ("vqa", "How many people are there?", "three people are there",
     "Three people are there.", "filter_unchanged"),
    ("multiple_choice", "Which animal is shown? A. cat B. dog",
     "Answer: B. The animal barks.", "The animal shown is a dog, since it barks.", None),
    ("captions", "Describe the image.", "A man is riding a horse on the beach.",
     "The image shows a person riding a horse along a sandy beach.", None),
    ("captions", "Describe the image.", "A cat sleeps on a red sofa.",
     "Stock markets fell sharply after the interest rate decision.", "filter_sts"),
    ("captions", "Describe the image in detail.", "A red square on a white background.",
     "A red square sits on a plain white background.\n\nThe square is bright red and "
     "centred.", None),
    ("region_caption", "Describe the object inside this green bounding box.",
     "a red square", "The object inside the box is a red square shape.", None),
    ("classification", "What is this?", "a photo of a tabby cat.",
     "This is a photo of a tabby cat sitting calmly.", None),
]


def case_rows(repeat: int = 2) -> list[dict[str, Any]]:
    """Rows of every task with known fates (``CASES``), images embedded as PNG bytes."""
    out = []
    for r in range(repeat):
        for k, (task, ins, orig, outp, _) in enumerate(CASES):
            source = {"vqa": "vqav2", "multiple_choice": "aokvqa", "captions": "coco",
                      "region_caption": "refcocog", "classification": "elevater"}[task]
            out.append(row(r * 100 + k, source, task, ins, orig, outp,
                           image_bytes=png((200, 30 + 20 * k, 30))))
    return out
