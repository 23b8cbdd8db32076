"""PF-1M JSON export: the release's field layout per task, images, and the round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tiny_filter_models import png

from pf_ray.data.io import Dataset
from pf_ray.data.schema import REJECT_SCHEMA, to_table
from pf_ray.export.pf1m_json import export_pf1m_json, read_pf1m_json
from pf_ray.filters.schema import pf1m_output
from pf_ray.specs import StorageConfig

BASE = {"finish_reason": "stop", "meta": "{}", "length": 9, "rouge_score": 0.25,
        "reward": -0.5, "sts_similarity": None, "paragraph_clip_scores": None,
        "filtered_paragraphs": None, "nli_similarity": None, "image": None,
        "image_bytes": None, "extra_images": None}
ROWS: list[dict[str, Any]] = [
    {**BASE, "id": "vqav2:1", "source": "vqav2", "task": "vqa", "image": "coco/val/1.jpg",
     "instruction": "What colour is the car?", "original": "red",
     "output": "The car is red.", "nli_similarity": [-1.5, 2.0, 0.25]},
    {**BASE, "id": "coco:7", "source": "coco", "task": "captions",
     "image_bytes": png((10, 200, 10)), "instruction": "Describe the image in detail.",
     "original": "a green square", "output": "A green square.\n\nIt is centred.",
     "sts_similarity": 0.71, "paragraph_clip_scores": [21.5, 12.0, 19.0],
     "filtered_paragraphs": [{"score": 12.0, "text": "Hallucinated <b>\"quote\"</b>."}]},
    {**BASE, "id": "scienceqa:3", "source": "scienceqa", "task": "multiple_choice",
     "instruction": "Which is a mammal? A. frog B. whale", "original": "Answer: B.",
     "output": "A whale is a mammal.", "nli_similarity": [0.0, 1.0, 0.5], "reward": None},
    {**BASE, "id": "spot_the_diff:42", "source": "spot_the_diff", "task": "change_caption",
     "image_bytes": png((200, 30, 30)),
     "extra_images": [{"image": "after/42_2.png", "image_bytes": png((30, 60, 200))}],
     "instruction": "What changed?", "original": "a car has appeared",
     "output": "A car has appeared in the second picture.", "sts_similarity": 0.8},
]


def write_pf1m(root: Path, kind: str = "filter") -> str:
    ds = Dataset(str(root), StorageConfig())
    empty = to_table({f.name: [] for f in REJECT_SCHEMA}, REJECT_SCHEMA)
    table = to_table({f.name: [r[f.name] for r in ROWS] for f in pf1m_output().schema},
                     pf1m_output().schema)
    ds.write_data("u-x.parquet", table, empty)
    ds.commit("u-x", {"rows": len(ROWS), "rejects": 0, "counts": {}, "rejects_per_reason": {},
                      "files": ["u-x.parquet"], "reject_files": []})
    ds.write_manifest(kind=kind, spec_hash="x", spec={}, run={})
    return str(root)


def test_release_layout_and_round_trip(tmp_path: Path) -> None:
    root = write_pf1m(tmp_path / "pf1m")
    out = tmp_path / "out" / "PF-1M.json"
    counts = export_pf1m_json(root, out, images=tmp_path / "imgs")
    assert counts == {"samples": 4, "images_written": 3}
    vqa, cap, text_only, change = json.loads(out.read_text())
    assert vqa["input"] == "<img_path>coco/val/1.jpg<img_path>What colour is the car?"
    assert set(vqa) == {"input", "output", "original", "rouge_score", "reward",
                        "nli_similarity", "id"}
    assert cap["input"] == "<img_path>coco/coco_7.png<img_path>Describe the image in detail."
    assert cap["filtered_paragraphs"] == [[12.0, 'Hallucinated <b>"quote"</b>.']]
    assert set(cap) == {"input", "output", "original", "rouge_score", "reward",
                        "sts_similarity", "filtered_paragraphs", "paragraph_clip_scores", "id"}
    assert (tmp_path / "imgs" / "coco" / "coco_7.png").read_bytes() == ROWS[1]["image_bytes"]
    assert text_only["input"] == ROWS[2]["instruction"] and text_only["reward"] is None
    # two images: one marked path each, in order, before the instruction
    assert change["input"] == ("<img_path>spot_the_diff/spot_the_diff_42.png<img_path>"
                               "<img_path>spot_the_diff/spot_the_diff_42_2.png<img_path>"
                               "What changed?")
    assert (tmp_path / "imgs" / "spot_the_diff" / "spot_the_diff_42_2.png").read_bytes() == \
        ROWS[3]["extra_images"][0]["image_bytes"]
    back = read_pf1m_json(out)
    for got, row in zip(back, ROWS, strict=True):
        for f in ("id", "instruction", "output", "original", "rouge_score", "reward",
                  "nli_similarity", "sts_similarity", "filtered_paragraphs",
                  "paragraph_clip_scores"):
            assert got[f] == row[f], f
    assert [b["image"] for b in back] == ["coco/val/1.jpg", "coco/coco_7.png", None,
                                          "spot_the_diff/spot_the_diff_42.png"]
    assert [b["extra_images"] for b in back] == [None, None, None,
                                                 ["spot_the_diff/spot_the_diff_42_2.png"]]


def test_only_filter_datasets(tmp_path: Path) -> None:
    root = write_pf1m(tmp_path / "other", kind="distort")
    with pytest.raises(ValueError, match="'distort' dataset"):
        export_pf1m_json(root, tmp_path / "x.json")
    with pytest.raises(FileNotFoundError, match="no pf-ray dataset"):
        export_pf1m_json(str(tmp_path / "nothing"), tmp_path / "x.json")
