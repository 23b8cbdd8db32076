"""VQA-E, OCR-VQA and PointQA adapters on files written in their released layouts
(tests/vl_sources_vqa_more.py): exact rows, ids, images, meta, draw requests, rejects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageColor
from vl_sources import read, rejects, rows, save
from vl_sources_vqa_more import write_ocr_vqa, write_pointqa, write_vqa_e

from pf_ray.data.draw import parse_region, render
from pf_ray.data.sources.image_size import image_size


def test_vqa_e_rationale_rows(tmp_path: Path) -> None:
    b = read("vqa_e", write_vqa_e(tmp_path), image_root="/coco")
    assert b["id"] == ["vqa_e:train/9", "vqa_e:train/9#1", "vqa_e:train/42",
                       "vqa_e:train/42#1", "vqa_e:train/42#2"]
    assert rejects(b) == {"vqa_e:train/42": "missing_rationale",
                          "vqa_e:train/42#1": "missing_rationale",
                          "vqa_e:train/42#2": "bad_field"}
    r = rows(b)["vqa_e:train/9"]
    assert (r["task"], r["user"]) == ("vqa", "What color is the bus?")
    assert r["raw"] == "Answer: red. a red bus parked on the side of a street"
    assert r["image"] == "/coco/train2014/COCO_train2014_000000000009.jpg"
    assert r["meta"] == {"source_key": "train/9", "file": "VQA-E_train_set.json",
                         "image_id": 9, "answer": "red",
                         "answers": ["red"] * 8 + ["dark red", "maroon"],
                         "explanation": "a red bus parked on the side of a street",
                         "explanation_score": 0.8125, "answer_type": "other",
                         "question_type": "what color is the"}
    second = rows(b)["vqa_e:train/9#1"]
    assert second["raw"] == "Answer: no. the bus is parked at the curb"
    assert second["meta"]["explanation_score"] is None
    assert read("vqa_e", write_vqa_e(tmp_path), image_root="/coco") == b  # stable


def test_vqa_e_val_split_and_pattern(tmp_path: Path) -> None:
    b = read("vqa_e", write_vqa_e(tmp_path, "val"), image_root="/coco",
             image_pattern="{split}/{image_id}.jpg")
    assert b["id"][0] == "vqa_e:val/9"
    assert rows(b)["vqa_e:val/9"]["image"] == "/coco/val2014/9.jpg"
    renamed = save(tmp_path / "vqae.json", "[]")
    assert list(rejects(read("vqa_e", renamed)).values()) == ["unreadable_file"]


def test_ocr_vqa_train_rows(tmp_path: Path) -> None:
    file = write_ocr_vqa(tmp_path)
    b = read("ocr_vqa", file, image_root=tmp_path / "images")
    assert b["id"] == ["ocr_vqa:761183272/0", "ocr_vqa:761183272/1", "ocr_vqa:761183272/2",
                       "ocr_vqa:0000000001/0", "ocr_vqa:0000000002/0",
                       "ocr_vqa:0000000002/1"]
    assert rejects(b) == {"ocr_vqa:0000000001/0": "bad_record",
                          "ocr_vqa:0000000002/0": "empty_text"}
    r = rows(b)["ocr_vqa:761183272/1"]
    assert (r["task"], r["user"], r["raw"]) == (
        "vqa", "What is the title of this book?", "Mom's Family Wall Calendar 2016")
    assert r["image"] == str(tmp_path / "images" / "761183272.jpg")
    assert r["meta"] == {"source_key": "761183272/1", "file": "dataset.json",
                         "asin": "761183272", "question_index": 1,
                         "answer": "Mom's Family Wall Calendar 2016", "split": "train",
                         "title": "Mom's Family Wall Calendar 2016",
                         "author": "Sandra Boynton", "genre": "Calendars", "genre_id": 4,
                         "image_url": "http://ecx.images-amazon.com/images/I/61Y5cOdHJbL.jpg"}
    assert rows(b)["ocr_vqa:761183272/2"]["raw"] == "2016"
    assert rows(b)["ocr_vqa:0000000002/1"]["raw"] == "No"
    assert "2 questions, 1 answers" in b["_reject_detail"][3]


def test_ocr_vqa_val_and_test_adapters(tmp_path: Path) -> None:
    file = write_ocr_vqa(tmp_path)
    val = read("ocr_vqa_val", file, image_root="/ocr/images")
    assert val["id"] == ["ocr_vqa_val:1606994964/0"]
    r = rows(val)["ocr_vqa_val:1606994964/0"]
    assert (r["image"], r["meta"]["split"], r["raw"]) == ("/ocr/images/1606994964.png",
                                                          "val", "No")
    assert read("ocr_vqa_test", file)["id"] == []
    odd = save(tmp_path / "odd" / "dataset.json", {"9": {"imageURL": "u.jpg", "split": 7,
                                                         "questions": ["q?"],
                                                         "answers": ["a"]}})
    assert rejects(read("ocr_vqa", odd)) == {"ocr_vqa:9/0": "bad_field"}


def test_pointqa_localqa_rows_ask_for_a_red_arrow(tmp_path: Path) -> None:
    vg = tmp_path / "vg"
    b = read("pointqa", write_pointqa(tmp_path / "pointingqa", image_root=vg), image_root=vg)
    assert b["id"] == ["pointqa:local/2363870/0/0", "pointqa:local/2363870/0/1",
                       "pointqa:local/2363870/1/0"]
    assert rejects(b) == {"pointqa:local/2363870/1/0": "missing_field"}
    r = rows(b)["pointqa:local/2363870/0/1"]
    assert (r["task"], r["raw"]) == ("vqa", "blue")
    assert r["user"] == ("What color is the shirt? (The question is about the object the "
                         "red arrow points at.)")
    assert r["image"] == str(vg / "VG_100K" / "2363870.jpg")
    assert r["meta"] == {"source_key": "local/2363870/0/1", "file": "localqa_train_imgs.json",
                         "dataset": "LocalQA", "image_id": "2363870", "split": "train",
                         "question": "What color is the shirt?", "answer": "blue",
                         "all_answers": ["blue", "red"], "point_px": [150.0, 75.0],
                         "image_size": [200, 100],
                         "draw": {"shape": "arrow", "point": [0.75, 0.75], "color": "red"}}
    assert r["boxes"] == [{"label": "shirt", "x1": 0.65, "y1": 0.55, "x2": 0.85, "y2": 0.95}]
    assert rows(b)["pointqa:local/2363870/0/0"]["meta"]["draw"]["point"] == [0.25, 0.25]


def test_pointqa_arrow_is_drawn_at_the_point(tmp_path: Path) -> None:
    vg = tmp_path / "vg"
    b = read("pointqa", write_pointqa(tmp_path / "pointingqa", image_root=vg), image_root=vg)
    r = rows(b)["pointqa:local/2363870/0/1"]
    out = np.asarray(render(Image.open(r["image"]), parse_region(r["meta"]["draw"])))
    mask = np.all(np.abs(out.astype(int) - ImageColor.getrgb("red")) <= 40, axis=-1)
    ys, xs = np.nonzero(mask)
    assert mask.sum() > 20
    # the tip sits on the point (150, 75); the shaft runs towards the centre (100, 50)
    tip = int(np.argmax(xs + ys))
    assert abs(xs[tip] - 150) <= 2 and abs(ys[tip] - 75) <= 2
    assert xs.min() >= 150 - 0.2 * 100 - 3 and ys.min() >= 75 - 0.2 * 100 - 3
    assert not mask[:, :120].any() and not mask[:45, :].any()


def test_pointqa_looktwice_and_missing_images(tmp_path: Path) -> None:
    vg = tmp_path / "vg"
    write_pointqa(tmp_path / "pointingqa", image_root=vg)
    twice = tmp_path / "pointingqa" / "Datasets" / "LookTwiceQA" / "looktwiceqa_dataset.json"
    b = read("pointqa", twice, image_root=vg)
    assert b["id"] == ["pointqa:twice/2372121/0", "pointqa:twice/2372121/1"]
    assert rejects(b) == {"pointqa:twice/2372121/1": "bad_field"}  # point outside 80x60
    r = rows(b)["pointqa:twice/2372121/0"]
    assert r["user"] == ("How many of these are there? (The question is about the object "
                         "the red arrow points at.)")
    assert r["raw"] == "3"
    assert r["image"] == str(vg / "VG_100K_2" / "2372121.jpg")  # the second VG folder
    assert r["meta"]["draw"] == {"shape": "arrow", "point": [0.25, 0.25], "color": "red"}
    assert (r["meta"]["obj_question"], r["meta"]["supercategory"]) == (
        "How many apples are there?", "fruits")
    assert r["meta"]["split"] is None
    val = tmp_path / "pointingqa" / "Datasets" / "LocalQA" / "localqa_val_imgs.json"
    assert rejects(read("pointqa", val, image_root=vg)) == {
        "pointqa:local/4171/0/0": "image_missing"}
    assert image_size(str(vg / "VG_100K" / "2363870.jpg")) == (200, 100)


def test_pointqa_ingest_job_stores_the_arrow(tmp_path: Path) -> None:
    import io

    from pf_ray.config import parse_spec
    from pf_ray.data.io import Dataset
    from pf_ray.jobs.runner import run_job
    from pf_ray.specs import StorageConfig

    vg = tmp_path / "vg"
    path = write_pointqa(tmp_path / "pointingqa", image_root=vg)
    (res,) = run_job(parse_spec({
        "kind": "ingest", "output": {"path": str(tmp_path / "out")}, "ray": {"progress": False},
        "source": {"adapter": "pointqa", "path": str(path), "image_root": str(vg)}}),
        executor="local")
    kept = {r["id"]: r for r in Dataset(res.root, StorageConfig()).read().to_pylist()}
    assert set(kept) == {"pointqa:local/2363870/0/0", "pointqa:local/2363870/0/1"}
    img = np.asarray(Image.open(io.BytesIO(kept["pointqa:local/2363870/0/0"]["image_bytes"]))
                     .convert("RGB")).astype(int)
    assert np.abs(img[26, 51] - ImageColor.getrgb("red")).max() <= 40  # by the tip (50, 25)
    assert np.abs(img[90, 10] - (128, 128, 128)).max() <= 3
