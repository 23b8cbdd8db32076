"""COCO captions/instances adapter (2014 and 2017 naming) and the LLaVA-detail join."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pf_ray.config import load_spec, parse_spec
from pf_ray.data.boxes import PREAMBLE
from pf_ray.data.io import Dataset
from pf_ray.data.sources import SourceReader
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig


def write_coco(folder: Path, split: str, file_name: str, instances: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images = [{"id": 215677, "file_name": file_name, "width": 640, "height": 480},
              {"id": 9, "file_name": file_name.replace("215677", "000009"), "width": 10,
               "height": 10}]
    caps = {"info": {}, "licenses": [], "images": images, "annotations": [
        {"id": 1, "image_id": 215677, "caption": "A man riding a horse."},
        {"id": 2, "image_id": 215677, "caption": "A person on a brown horse in a field. "}]}
    path = folder / f"captions_{split}.json"
    path.write_text(json.dumps(caps))
    if instances:
        (folder / f"instances_{split}.json").write_text(json.dumps({
            "images": images, "annotations": [
                {"id": 6, "image_id": 215677, "category_id": 19, "bbox": [256, 120, 192, 240],
                 "area": 1.0, "iscrowd": 0},
                {"id": 5, "image_id": 215677, "category_id": 1, "bbox": [320, 48, 64, 192],
                 "area": 1.0, "iscrowd": 0, "segmentation": [[1, 2, 3]]}],
            "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                           {"id": 19, "name": "horse", "supercategory": "animal"}]}))
    return path


def test_coco_2014_and_2017_files(tmp_path: Path) -> None:
    for split, name in (("train2014", "COCO_train2014_000000215677.jpg"),
                        ("val2017", "000000215677.jpg")):
        path = write_coco(tmp_path / split, split, name)
        batch = SourceReader("coco", "coco", f"/data/{split}", StorageConfig()).read(
            str(path), 0, 10)
        assert batch["id"] == ["coco:215677", "coco:9"]
        assert batch["_reject_reason"] == [None, "empty_text"]  # image 9 has no caption
        assert batch["image"][0] == f"/data/{split}/{name}"
        assert batch["conversations"][0][1]["content"] == (
            "A man riding a horse.\nA person on a brown horse in a field.")
        # annotations in id order; COCO [x, y, w, h] pixels -> 0-1 corners
        assert batch["boxes"][0] == [
            {"label": "person", "x1": 0.5, "y1": 0.1, "x2": 0.6, "y2": 0.5},
            {"label": "horse", "x1": 0.4, "y1": 0.25, "x2": 0.7, "y2": 0.75}]
        assert json.loads(batch["meta"][0])["coco_image_id"] == 215677
    path = write_coco(tmp_path / "noinst", "train2014", "x_000000215677.jpg", instances=False)
    batch = SourceReader("coco", "coco", None, StorageConfig()).read(str(path), 0, 10)
    assert batch["boxes"][0] is None


def test_llava_detail_joined_with_coco_gives_captions_and_boxes(tmp_path: Path) -> None:
    coco = write_coco(tmp_path / "ann", "train2014", "COCO_train2014_000000215677.jpg")
    detail = tmp_path / "detail_23k.json"
    description = ("The image shows a man riding a brown horse across a green field. He "
                   "wears a white shirt. The horse is walking calmly.")
    detail.write_text(json.dumps([{"id": "000000215677", "image": "000000215677.jpg",
                                   "conversations": [
                                       {"from": "human", "value": "Describe the image.\n<image>"},
                                       {"from": "gpt", "value": description}]}]))
    common = {"images": {"check": False}, "ray": {"progress": False}}
    run_job(parse_spec({"kind": "ingest", "output": {"path": str(tmp_path / "coco")},
                        "source": {"adapter": "coco", "path": str(coco)}, **common}),
            executor="local")
    run_job(parse_spec({"kind": "ingest", "output": {"path": str(tmp_path / "llava")},
                        "source": {"adapter": "llava_instruct", "path": str(detail),
                                   "image_root": "/coco/train2014"}, **common}),
            executor="local")
    (res,) = run_job(parse_spec({
        "kind": "distort", "inputs": [str(tmp_path / "llava")], "output": {
            "path": str(tmp_path / "pairs")}, "boxes_from": str(tmp_path / "coco"),
        "mixture": {"image_with_boxes": {"boxes": 1.0}}, **common}), executor="local")
    (pair,) = Dataset(res.root, StorageConfig()).read().to_pylist()
    assert pair["family"] == "boxes" and pair["original"] == description
    assert pair["distorted"] == (
        "A man riding a horse.\nA person on a brown horse in a field.\n\n" + PREAMBLE +
        "\nperson: [0.5, 0.1, 0.6, 0.5]\nhorse: [0.4, 0.25, 0.7, 0.75]\n")
    assert pair["instruction"] == "Describe the image."


def test_paper_scale_distort_spec() -> None:
    spec = load_spec(Path(__file__).parents[2] / "jobs" / "distort.yaml", env={})
    assert spec.engine.kind == "vllm" and spec.engine.num_gpus == 1
    assert spec.engine.max_actors == 8 and spec.engine.prompt_format == "guanaco"
    assert spec.mixture.image == {"llm": 133, "augment": 77}
    assert spec.inputs[0] == "s3://pf-ray/clean/llava_instruct"


def test_real_scale_training_specs() -> None:
    root = Path(__file__).parents[2] / "jobs"
    rw = load_spec(root / "train_rewriter.yaml", env={})
    assert (rw.stage, rw.epochs, rw.optim.lr, rw.max_length) == ("rewriter", 3, 1e-4, 1024)
    assert rw.scaling.num_workers * rw.batch_size * rw.grad_accum == 256
    s1, s2, s3 = load_spec(root / "train_clever.yaml", env={}).jobs
    assert s2.model == s1.export and s3.model == s2.export  # each stage starts from the last
    assert s2.scaling.num_workers * s2.batch_size * s2.grad_accum == 1024
    assert (s2.max_length, s2.max_images, s2.epochs) == (196, 3, 3)
    assert s3.optim.lr * s3.optim.lr_scale == pytest.approx(1e-5)
