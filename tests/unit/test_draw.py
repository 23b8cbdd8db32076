"""Regions drawn onto images (RefCOCOg box, PointQA arrow; paper.md §4): the pixels drawn, the
``refcocog`` adapter that asks for its box, and the ingest step that renders it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageColor
from vl_sources import read, rejects, rows, write_refcocog

from pf_ray.config import parse_spec
from pf_ray.data.draw import RegionError, parse_region, render
from pf_ray.data.images import ImageLoader, encode_png
from pf_ray.data.io import Dataset
from pf_ray.ingest.draw import RenderRegions
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

GREEN = ImageColor.getrgb("green")
GREY = (128, 128, 128)


def grey(w: int = 100, h: int = 50) -> Image.Image:
    return Image.new("RGB", (w, h), GREY)


def test_box_outline_pixels() -> None:
    img = grey()
    out = np.asarray(render(img, parse_region({"shape": "box", "box": [0.2, 0.2, 0.6, 0.8],
                                               "width": 2})))
    assert np.asarray(img).max() == 128 and img.getpixel((20, 10)) == GREY  # input untouched
    # the box covers pixels x 20..59, y 10..39; its 2-pixel outline lies inside that
    for x, y in ((20, 10), (21, 11), (59, 39), (58, 25), (40, 10), (20, 25), (40, 39)):
        assert tuple(out[y, x]) == GREEN, (x, y)
    for x, y in ((22, 12), (40, 25), (19, 10), (60, 39), (40, 9), (40, 40), (0, 0)):
        assert tuple(out[y, x]) == GREY, (x, y)
    assert (np.all(out == GREEN, axis=-1)).sum() == 2 * (40 + 30) * 2 - 4 * 4


def test_default_width_scales_with_the_image() -> None:
    big = np.asarray(render(grey(1000, 800), parse_region({"shape": "box",
                                                            "box": [0.1, 0.1, 0.9, 0.9]})))
    row = np.all(big[400, :] == GREEN, axis=-1)  # a horizontal cut through the box
    assert row[100:105].all() and not row[105] and row[895:900].all()  # 5 px = 0.6% of 800


def test_arrow_points_at_the_point() -> None:
    red = ImageColor.getrgb("red")
    out = np.asarray(render(grey(200, 200), parse_region({"shape": "arrow",
                                                          "point": [0.25, 0.25]})))
    mask = np.all(out == red, axis=-1)
    ys, xs = np.nonzero(mask)
    assert mask.sum() > 50
    # the tip sits on the point; the shaft runs towards the centre, 20% of the side long
    assert abs(xs.min() - 50) <= 2 and abs(ys.min() - 50) <= 2
    assert 70 <= xs.max() <= 82 and 70 <= ys.max() <= 82
    assert not mask[150:, :].any() and not mask[:, 150:].any()
    assert mask[52:56, 52:56].any()  # the head is filled near the tip


@pytest.mark.parametrize(("bad", "field"), [
    ({"shape": "circle"}, "draw.shape"), ({"shape": "box", "box": [0, 0, 1]}, "draw.box"),
    ({"shape": "box", "box": [0.5, 0, 0.2, 1]}, "draw.box"),
    ({"shape": "arrow", "point": [2, 0]}, "draw.point"),
    ({"shape": "box", "box": [0, 0, 1, 1], "color": "nocolour"}, "draw.color"),
    ({"shape": "box", "box": [0, 0, 1, 1], "width": 0}, "draw.width")])
def test_bad_regions_name_the_field(bad: dict[str, object], field: str) -> None:
    with pytest.raises(RegionError, match=field):
        parse_region(bad)


def test_refcocog_rows_ask_for_a_green_box(tmp_path: Path) -> None:
    b = read("refcocog", write_refcocog(tmp_path / "refcocog"), image_root="/coco/train2014")
    assert b["id"] == ["refcocog:0", "refcocog:1"]
    assert rejects(b) == {"refcocog:1": "missing_annotation"}
    r = rows(b)["refcocog:0"]
    assert (r["task"], r["user"]) == ("region_caption",
                                      "Describe the object inside this green bounding box.")
    assert r["raw"] == "the lady with the blue shirt\nA woman in blue."
    assert r["image"] == "/coco/train2014/COCO_train2014_000000581857.jpg"
    assert r["meta"]["draw"] == {"shape": "box", "box": [0.25, 0.25, 0.75, 0.75],
                                 "color": "green"}
    assert r["boxes"] == [{"label": "person", "x1": 0.25, "y1": 0.25, "x2": 0.75, "y2": 0.75}]


def test_refcocog_pickle_may_hold_only_data(tmp_path: Path) -> None:
    import pickle

    folder = tmp_path / "refcocog"
    write_refcocog(folder)
    (folder / "refs(umd).p").write_bytes(pickle.dumps([{"ref_id": 1, "x": Path("/etc")}]))
    b = read("refcocog", folder / "refs(umd).p")
    assert list(rejects(b).values()) == ["unreadable_file"]
    assert "refusing pathlib" in b["_reject_detail"][0]


def test_render_step_draws_or_rejects(tmp_path: Path) -> None:
    png = encode_png(grey(100, 50))
    meta = [json.dumps({"draw": {"shape": "box", "box": [0.2, 0.2, 0.6, 0.8]}}),
            json.dumps({}), json.dumps({"draw": {"shape": "hexagon"}}),
            json.dumps({"draw": {"shape": "arrow", "point": [0.5, 0.5]}})]
    step = RenderRegions(ImageLoader(image_root=str(tmp_path)))
    out = step({"id": ["a", "b", "c", "d"], "image": [None, None, None, "missing.jpg"],
                "image_bytes": [png, png, png, None], "meta": meta})
    assert out["_reject_reason"] == [None, None, "bad_region", "image_missing"]
    drawn = Image.open(io.BytesIO(out["image_bytes"][0]))
    assert drawn.format == "PNG" and drawn.getpixel((20, 10)) == GREEN
    assert out["image_bytes"][1] is png  # no draw request: untouched


def test_ingest_job_stores_the_drawn_image(tmp_path: Path) -> None:
    coco = tmp_path / "coco" / "train2014"
    refs = write_refcocog(tmp_path / "refcocog", image_root=coco)
    (res,) = run_job(parse_spec({
        "kind": "ingest", "output": {"path": str(tmp_path / "out")}, "ray": {"progress": False},
        "source": {"adapter": "refcocog", "path": str(refs), "image_root": str(coco)}}),
        executor="local")
    (row,) = Dataset(res.root, StorageConfig()).read().to_pylist()
    img = np.asarray(Image.open(io.BytesIO(row["image_bytes"])).convert("RGB")).astype(int)
    assert row["id"] == "refcocog:0" and img.shape == (64, 128, 3)
    # box x 32..95, y 16..47: its edge is green (a JPEG source: within a few levels)
    assert np.abs(img[16, 60] - GREEN).max() <= 3 and np.abs(img[30, 32] - GREEN).max() <= 3
    assert np.abs(img[30, 60] - GREY).max() <= 3 and np.abs(img[5, 5] - GREY).max() <= 3
    assert res.manifest["totals"]["rejects"] == 1
