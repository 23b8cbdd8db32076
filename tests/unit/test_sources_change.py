"""Change-captioning adapters (Spot-the-Diff, Image Editing Requests, LEVIR-CC) on files
written in their public layouts (tests/vl_sources_change.py): one ``change_caption`` row per
image pair, the before image in ``image`` and the after image in ``extra_images``, the
pair's sentences as the raw answer, rejects with their reasons."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from vl_sources import read, rejects, rows, save
from vl_sources_change import (
    IMAGE_ROOT,
    write_image_editing,
    write_levir_cc,
    write_spot_the_diff,
)

from pf_ray.data.images import row_images
from pf_ray.data.schema import REJECT_DETAIL
from pf_ray.data.sources.fields import pick
from pf_ray.data.sources.templates import CHANGE_PROMPTS, EDIT_REQUEST_PROMPTS


def pair(row: dict) -> list[str | None]:
    return [ref for ref, _ in row_images(row["image"], row["image_bytes"], row["extra_images"])]


def test_prompts_are_stable_spread_and_about_two_images() -> None:
    for prompts in (CHANGE_PROMPTS, EDIT_REQUEST_PROMPTS):
        picks = [pick(prompts, str(i)) for i in range(600)]
        assert picks == [pick(prompts, str(i)) for i in range(600)]
        counts = Counter(picks)
        assert set(counts) == set(prompts) and min(counts.values()) >= 60
        assert len(set(prompts)) == len(prompts) and all(p.endswith("?") or p.endswith(".")
                                                         for p in prompts)
    assert all("edit" in p for p in EDIT_REQUEST_PROMPTS)


def test_spot_the_diff_groups_annotations_per_pair(tmp_path: Path) -> None:
    root = tmp_path / IMAGE_ROOT["spot_the_diff"]
    b = read("spot_the_diff", write_spot_the_diff(tmp_path), image_root=root)
    assert b["id"] == ["spot_the_diff:42", "spot_the_diff:5406", "spot_the_diff:12733",
                       "spot_the_diff:3", "spot_the_diff:#5", "spot_the_diff:77",
                       "spot_the_diff:../../etc/passwd"]
    assert rejects(b) == {"spot_the_diff:3": "empty_text", "spot_the_diff:#5": "missing_field",
                          "spot_the_diff:77": "bad_field",
                          "spot_the_diff:../../etc/passwd": "image_path_escape"}
    r = rows(b)
    a = r["spot_the_diff:42"]
    assert a["task"] == "change_caption" and a["source"] == "spot_the_diff"
    assert a["user"] == pick(CHANGE_PROMPTS, "42")
    # the second annotation's repeat of the first's sentence and its blank one are dropped
    assert a["raw"] == ("the left most man walking away from the building is missing\n"
                        "a car has appeared near the building\n"
                        "more cars in the street")
    assert pair(a) == [f"{root}/42.png", f"{root}/42_2.png"]
    assert a["image"] == f"{root}/42.png" and a["image_bytes"] is None
    assert a["extra_images"] == [{"image": f"{root}/42_2.png", "image_bytes": None}]
    assert a["meta"] == {"source_key": "42", "file": "train.json", "split": "train",
                         "img_id": "42", "annotations": 2,
                         "sentences": a["raw"].split("\n")}
    # one annotator's list repeats "not there in the before photo" per item: kept
    assert r["spot_the_diff:12733"]["raw"].split("\n") == [
        "one person walking up the stairs", "not there in the before photo",
        "one person on the grass", "not there in the before photo"]
    assert pair(r["spot_the_diff:5406"]) == [f"{root}/5406.png", f"{root}/5406_2.png"]
    assert b[REJECT_DETAIL][b["id"].index("spot_the_diff:3")] == \
        "no sentence describes the pair"


def test_spot_the_diff_ids_are_stable_and_a_bad_file_is_one_reject(tmp_path: Path) -> None:
    file = write_spot_the_diff(tmp_path)
    first, again = read("spot_the_diff", file, "/r"), read("spot_the_diff", file, "/r")
    assert first == again
    bad = save(tmp_path / "val.json", {"img_id": "1", "sentences": ["x"]})
    b = read("spot_the_diff", bad, "/r")
    assert rejects(b) == {b["id"][0]: "unreadable_file"} and len(b["id"]) == 1


def test_image_editing_requests_pairs_and_rejects(tmp_path: Path) -> None:
    root = tmp_path / IMAGE_ROOT["image_editing_requests"]
    b = read("image_editing_requests", write_image_editing(tmp_path), image_root=root)
    src = "image_editing_requests"
    assert b["id"] == [f"{src}:Zhopped_60", f"{src}:Reddit_1012", f"{src}:Zhopped_7",
                       f"{src}:Zhopped_8", f"{src}:Zhopped_9", f"{src}:Zhopped_10",
                       f"{src}:#8"]
    assert rejects(b) == {f"{src}:Zhopped_7": "missing_field",
                          f"{src}:Zhopped_8": "image_path_escape",
                          f"{src}:Zhopped_9": "empty_text", f"{src}:Zhopped_10": "bad_field",
                          f"{src}:#8": "bad_record"}
    r = rows(b)
    p = r[f"{src}:Zhopped_60"]
    assert p["task"] == "change_caption" and p["user"] == pick(EDIT_REQUEST_PROMPTS, "Zhopped_60")
    assert p["raw"] == ("erase the two people on the left\n"
                        "improve the saturation and two people in background must be removed")
    assert pair(p) == [f"{root}/Zhopped.com_p8Ks7_p8Ks7.jpg",
                       f"{root}/Zhopped.com_p8Ks7_btmgY.jpg"]
    assert p["meta"] == {"source_key": "Zhopped_60", "file": "train.json", "split": "train",
                         "uids": ["Zhopped_60", "Zhopped_94", "Zhopped_99"],
                         "img0": "Zhopped.com_p8Ks7_p8Ks7.jpg",
                         "img1": "Zhopped.com_p8Ks7_btmgY.jpg",
                         "sentences": p["raw"].split("\n")}
    q = r[f"{src}:Reddit_1012"]
    assert q["raw"] == "make color brighter" and q["meta"]["uids"] == ["Reddit_1012"]
    assert q["extra_images"] == [{"image": f"{root}/Reddit.com_5fdtr1_dajgq1u.png",
                                  "image_bytes": None}]

    v = rows(read(src, tmp_path / "dataset" / "adobe" / "valid.json", image_root=root))
    (only,) = v.values()
    assert only["id"] == f"{src}:Reddit_1318" and only["meta"]["split"] == "valid"
    assert only["raw"] == "change the face\nChange the head"  # the exact repeat dropped


def test_levir_cc_keeps_no_change_pairs(tmp_path: Path) -> None:
    root = tmp_path / IMAGE_ROOT["levir_cc"]
    b = read("levir_cc", write_levir_cc(tmp_path), image_root=root)
    assert b["id"] == ["levir_cc:train_000016", "levir_cc:val_000001", "levir_cc:test_000003",
                       "levir_cc:#3", "levir_cc:test_000005", "levir_cc:test_000006",
                       "levir_cc:test_000007"]
    assert rejects(b) == {"levir_cc:test_000003": "empty_text", "levir_cc:#3": "missing_field",
                          "levir_cc:test_000005": "bad_field",
                          "levir_cc:test_000006": "bad_field",
                          "levir_cc:test_000007": "image_path_escape"}
    r = rows(b)
    c = r["levir_cc:train_000016"]
    assert c["task"] == "change_caption" and c["user"] == pick(CHANGE_PROMPTS, "train_000016")
    assert c["raw"] == ("the road is widened .\na house is built beside the road .\n"
                        "a new house appears at the bottom .\na road and a house are built .")
    assert pair(c) == [f"{root}/train/A/train_000016.png", f"{root}/train/B/train_000016.png"]
    assert c["meta"] == {"source_key": "train_000016", "file": "LevirCCcaptions.json",
                         "split": "train", "filename": "train_000016.png", "imgid": 16,
                         "changeflag": 1, "sentences": c["raw"].split("\n")}
    same = r["levir_cc:val_000001"]
    assert same["meta"]["changeflag"] == 0 and same["meta"]["split"] == "val"
    assert same["raw"] == ("the scene is the same as before .\nthere is no difference .\n"
                           "no change has occurred .\nthe two scenes seem identical .")
    assert pair(same) == [f"{root}/val/A/val_000001.png", f"{root}/val/B/val_000001.png"]


def test_levir_cc_without_changeflag_and_a_file_without_images(tmp_path: Path) -> None:
    file = write_levir_cc(tmp_path)
    data = json.loads(file.read_text())
    del data["images"][0]["changeflag"]
    save(file, data)
    r = rows(read("levir_cc", file, "/levir/images"))
    assert r["levir_cc:train_000016"]["meta"]["changeflag"] is None
    bad = read("levir_cc", save(tmp_path / "other.json", {"annotations": []}), "/l")
    assert list(rejects(bad).values()) == ["unreadable_file"]


def test_the_three_adapters_are_registered_and_accepted_by_the_ingest_spec() -> None:
    from pf_ray.data.sources.registry import adapters, pattern_fields

    found = adapters()
    for name in ("spot_the_diff", "image_editing_requests", "levir_cc"):
        assert found[name].name == name and not found[name].draws
        assert name not in pattern_fields()  # two images per row: no single image_pattern
