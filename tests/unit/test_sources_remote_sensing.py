"""Remote-sensing adapters on files written in their released layouts
(tests/vl_sources_remote_sensing.py): RET-3 captions (RSICD / UCM / Sydney Karpathy files)
and the detection releases DIOR, HRRSD (VOC XML per split-list id) and DOTA (labelTxt),
turned into ``Object Count: {...}`` caption rows with boxes in 0-1."""

from __future__ import annotations

from pathlib import Path

from vl_sources import read, rejects, rows, save
from vl_sources_remote_sensing import (
    voc_xml,
    write_dior,
    write_dota,
    write_hrrsd,
    write_ret3,
)

from pf_ray.data.conversation import draft_of
from pf_ray.data.sources.detection import object_count
from pf_ray.data.sources.fields import pick
from pf_ray.data.sources.templates import CAPTION_PROMPTS


def box(label: str, x1: float, y1: float, x2: float, y2: float) -> dict[str, object]:
    return {"label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2}


# ------------------------------------------------------------------ RET-3


def test_ret3_three_files_one_source(tmp_path: Path) -> None:
    rsicd, ucm, sydney = write_ret3(tmp_path)
    a = read("ret3", rsicd, image_root="/rs/RSICD_images")
    b = read("ret3", ucm, image_root="/rs/imgs")
    c = read("ret3", sydney, image_root="/rs/imgs")
    assert a["id"] == ["ret3:rsicd/airport_1", "ret3:rsicd/bareland_2", "ret3:rsicd/#2"]
    assert b["id"] == ["ret3:ucm_captions/1"] and c["id"] == ["ret3:sydney_captions/1"]
    assert rejects(a) == {"ret3:rsicd/bareland_2": "empty_text",
                          "ret3:rsicd/#2": "missing_field"}
    assert rejects(b) == rejects(c) == {}

    r = rows(a)["ret3:rsicd/airport_1"]
    assert r["task"] == "captions" and r["user"] == pick(CAPTION_PROMPTS, "rsicd/airport_1")
    # RSICD's padding repeats are kept once, in first-appearance order
    assert r["raw"] == ("Many planes are parked next to a long building in an airport.\n"
                        "Several aircraft are parked around the terminal.\n"
                        "An airport with many planes.")
    assert r["image"] == "/rs/RSICD_images/airport_1.jpg" and r["boxes"] is None
    assert r["meta"] == {"source_key": "rsicd/airport_1", "file": "dataset_rsicd.json",
                         "dataset": "rsicd", "split": "train", "filename": "airport_1.jpg",
                         "imgid": 0, "n_sentences": 5, "captions": r["raw"].split("\n")}

    u = rows(b)["ret3:ucm_captions/1"]
    assert u["raw"].split("\n") == [
        "A residential area with houses arranged neatly .",
        "A residential area with houses arranged neatly and some roads go through this area .",
        "A residential area with houses arranged neatly while many plants on the roadside .",
        "A residential area with houses arranged neatly and some railways beside ."]
    assert u["image"] == "/rs/imgs/1.tif"
    assert (u["meta"]["dataset"], u["meta"]["split"], u["meta"]["file"]) == (
        "ucm_captions", "train", "dataset.json")
    s = rows(c)["ret3:sydney_captions/1"]
    assert s["raw"] == "An industrial area with many white buildings ."
    assert s["meta"]["split"] == "test" and s["meta"]["n_sentences"] == 2
    assert read("ret3", ucm, image_root="/rs/imgs")["meta"] == b["meta"]  # stable rerun


def test_ret3_pattern_names_each_sets_folder(tmp_path: Path) -> None:
    _, ucm, _ = write_ret3(tmp_path)
    b = read("ret3", ucm, image_root="/rs", image_pattern="{dataset}/{split}/{filename}")
    assert b["image"] == ["/rs/ucm_captions/train/1.tif"]


# ------------------------------------------------------------------ DIOR


def test_dior_split_list_to_object_count_rows(tmp_path: Path) -> None:
    train = write_dior(tmp_path)
    b = read("dior", train, image_root=tmp_path / "JPEGImages-trainval")
    assert b["id"] == [f"dior:0000{i}" for i in range(1, 8)]
    assert rejects(b) == {"dior:00002": "empty_text", "dior:00004": "unreadable_file",
                          "dior:00005": "missing_annotation", "dior:00006": "bad_field",
                          "dior:00007": "image_missing"}
    r = rows(b)["dior:00001"]
    assert r["task"] == "captions" and r["user"] == pick(CAPTION_PROMPTS, "00001")
    assert r["raw"] == ("Object Count: {'airplane': 2, 'expressway service area': 1, "
                        "'vehicle': 1}")
    assert r["boxes"] == [box("airplane", 0.1, 0.2, 0.3, 0.4),
                          box("expressway service area", 0.5, 0.5, 1.0, 1.0),  # clamped
                          box("airplane", 0.0, 0.0, 0.5, 0.1),
                          box("vehicle", 0.75, 0.05, 0.8, 0.1)]
    assert r["image"] == str(tmp_path / "JPEGImages-trainval" / "00001.jpg")
    assert r["meta"] == {
        "source_key": "00001", "file": "train.txt", "split": "train", "image_id": "00001",
        "filename": "00001.jpg", "annotation": "Horizontal Bounding Boxes/00001.xml",
        "width": 800, "height": 800, "size_from": "xml",
        "labels": ["airplane", "Expressway-Service-area", "airplane", "vehicle"]}
    # no <size>: read from the JPEG's header (800x400)
    t = rows(b)["dior:00003"]
    assert t["raw"] == "Object Count: {'storage tank': 1}"
    assert t["boxes"] == [box("storage tank", 0.05, 0.2, 0.15, 0.5)]
    assert (t["meta"]["width"], t["meta"]["height"], t["meta"]["size_from"]) == (
        800, 400, "image")
    # the rewrite stage's draft: the count, then the preamble and one line per box
    draft = draft_of(r["raw"], r["boxes"], with_boxes=True)
    assert draft.startswith(r["raw"] + "\n\nThe followings are specific object locations")
    assert draft.endswith("airplane: [0.1, 0.2, 0.3, 0.4]\nexpressway service area: "
                          "[0.5, 0.5, 1.0, 1.0]\nairplane: [0.0, 0.0, 0.5, 0.1]\n"
                          "vehicle: [0.75, 0.05, 0.8, 0.1]\n")
    assert read("dior", train, image_root=tmp_path / "JPEGImages-trainval")["id"] == b["id"]


def test_dior_older_layout_and_pattern(tmp_path: Path) -> None:
    """Copies without the DIOR-R folders keep the XML directly in Annotations/."""
    save(tmp_path / "Annotations" / "11726.xml",
         voc_xml("11726.jpg", (800, 800), [("windmill", (0, 0, 80, 80), None)]))
    test = save(tmp_path / "ImageSets" / "Main" / "test.txt", "11726\n")
    b = read("dior", test, image_root="s3://b/dior", image_pattern="JPEGImages-{split}/{filename}")
    r = rows(b)["dior:11726"]
    assert r["image"] == "s3://b/dior/JPEGImages-test/11726.jpg"
    assert r["meta"]["annotation"] == "Annotations/11726.xml"
    assert r["raw"] == "Object Count: {'windmill': 1}"


# ------------------------------------------------------------------ HRRSD


def test_hrrsd_keeps_difficult_objects(tmp_path: Path) -> None:
    train = write_hrrsd(tmp_path)
    b = read("hrrsd", train, image_root="/hrrsd/OPT2017/JPEGImages")
    assert b["id"] == ["hrrsd:00001", "hrrsd:00017", "hrrsd:00018"]
    assert rejects(b) == {"hrrsd:00018": "missing_field"}
    r = rows(b)["hrrsd:00001"]
    assert r["raw"] == "Object Count: {'airplane': 1}"
    assert r["boxes"] == [box("airplane", 453 / 1272, 556 / 1504, 552 / 1272, 692 / 1504)]
    assert r["image"] == "/hrrsd/OPT2017/JPEGImages/00001.jpg"
    assert r["user"] == pick(CAPTION_PROMPTS, "00001")
    j = rows(b)["hrrsd:00017"]
    assert j["raw"] == "Object Count: {'T junction': 2, 'parking lot': 1}"
    assert j["boxes"] == [box("T junction", 0.1, 0.1, 0.3, 0.5),
                          box("parking lot", 0.5, 0.0, 1.0, 1.0),
                          box("T junction", 0.0, 0.0, 0.01, 0.02)]
    assert j["meta"]["difficult"] == [0, 0, 1] and j["meta"]["split"] == "train"
    assert j["meta"]["labels"] == ["T junction", "parking lot", "T junction"]
    assert j["meta"]["annotation"] == "Annotations/00017.xml"


# ------------------------------------------------------------------ DOTA


def test_dota_label_folder_with_sizes_from_png_headers(tmp_path: Path) -> None:
    labels = write_dota(tmp_path)
    b = read("dota", labels, image_root=tmp_path / "train" / "images")
    assert b["id"] == [f"dota:P000{i}" for i in range(6)]
    assert rejects(b) == {"dota:P0001": "empty_text", "dota:P0002": "bad_field",
                          "dota:P0003": "bad_field", "dota:P0004": "image_missing"}
    r = rows(b)["dota:P0000"]
    assert r["task"] == "captions" and r["user"] == pick(CAPTION_PROMPTS, "P0000")
    assert r["raw"] == "Object Count: {'small vehicle': 2, 'plane': 1}"
    assert r["boxes"] == [box("small vehicle", 0.1, 0.1, 0.2, 0.3),
                          box("small vehicle", 0.95, 0.8, 1.0, 1.0),  # clamped
                          box("plane", 0.3, 0.1, 0.55, 0.6)]  # the polygon's enclosing box
    assert r["image"] == str(tmp_path / "train" / "images" / "P0000.png")
    assert r["meta"] == {
        "source_key": "P0000", "file": "labelTxt", "image_id": "P0000",
        "label_file": "P0000.txt", "imagesource": "GoogleEarth", "gsd": 0.146343590398,
        "width": 1000, "height": 500, "labels": ["small-vehicle", "small-vehicle", "plane"],
        "difficult": [0, 1, 0]}
    v = rows(b)["dota:P0005"]  # 9 fields, no header: difficult unknown
    assert v["raw"] == "Object Count: {'container crane': 1}"
    assert v["boxes"] == [box("container crane", 0.1, 0.1, 0.3, 0.5)]
    assert v["meta"]["difficult"] == [None] and v["meta"]["gsd"] is None
    # one label file is a source too
    one = read("dota", labels / "P0000.txt", image_root=tmp_path / "train" / "images")
    assert one["id"] == ["dota:P0000"] and one["boxes"] == b["boxes"][:1]


def test_dota_missing_folder_is_one_reject(tmp_path: Path) -> None:
    b = read("dota", tmp_path / "nowhere", image_root=tmp_path)
    assert list(rejects(b).values()) == ["unreadable_file"]


# ------------------------------------------------------------------ helpers


def test_object_count_keeps_first_appearance_order() -> None:
    assert object_count(["ship", "harbor", "ship"]) == "Object Count: {'ship': 2, 'harbor': 1}"


# ------------------------------------------------------------------ through the ingest job


def test_dota_runs_through_the_ingest_job(tmp_path: Path) -> None:
    from pf_ray.config import parse_spec
    from pf_ray.data.io import REJECTS, Dataset
    from pf_ray.jobs.runner import run_job
    from pf_ray.specs import StorageConfig

    labels = write_dota(tmp_path)
    spec = {"kind": "ingest", "output": {"path": str(tmp_path / "out")},
            "ray": {"progress": False}, "rows_per_shard": 2,  # 3 units of one folder
            "faults": {"max_reject_fraction": 1.0},
            "source": {"adapter": "dota", "path": str(labels),
                       "image_root": str(tmp_path / "train" / "images")}}
    (res,) = run_job(parse_spec(spec), executor="local")
    data = Dataset(res.root, StorageConfig())
    kept = {r["id"]: r for r in data.read().to_pylist()}
    assert sorted(kept) == ["dota:P0000", "dota:P0005"]
    assert sorted(r["reason"] for r in data.read(REJECTS).to_pylist()) == [
        "bad_field", "bad_field", "empty_text", "image_missing"]
    r = kept["dota:P0000"]
    assert [b["label"] for b in r["boxes"]] == ["small vehicle", "small vehicle", "plane"]
    assert r["conversations"][1]["content"] == "Object Count: {'small vehicle': 2, 'plane': 1}"
