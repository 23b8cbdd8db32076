"""The synthetic generator: deterministic, range-independent, ground truth consistent."""

from __future__ import annotations

import io
import json

from PIL import Image

from pf_ray.data.synthetic import COLORS, SOURCE_OF_TASK, TASKS, generate, make_row, make_scene


def test_deterministic_and_range_independent() -> None:
    whole = generate(7, 0, 40)
    part = generate(7, 20, 40)
    assert whole["id"][20:] == part["id"]
    assert whole["image_bytes"][20:] == part["image_bytes"]
    assert whole["conversations"][20:] == part["conversations"]
    assert generate(8, 0, 5)["meta"] != whole["meta"][:5]


def test_every_task_and_source() -> None:
    batch = generate(0, 0, len(TASKS) * 3)
    assert set(batch["task"]) == set(TASKS)
    for task, source in zip(batch["task"], batch["source"], strict=True):
        assert SOURCE_OF_TASK[task] == source
    assert len(set(batch["id"])) == len(batch["id"])


def test_ground_truth_matches_pixels() -> None:
    for index in range(0, 90, 9):
        row = make_row(3, index, image_size=64)
        meta = json.loads(row["meta"])
        img = Image.open(io.BytesIO(row["image_bytes"])).convert("RGB")
        for obj in meta["objects"]:
            x1, y1, x2, y2 = obj["box"]
            cx, cy = (x1 + x2) / 2 * 64, (y1 + y2) / 2 * 64
            if obj["shape"] == "triangle":  # the centroid sits lower than the box centre
                cy = (y1 + 2 * y2) / 3 * 64
            assert img.getpixel((int(cx), int(cy))) == COLORS[obj["color"]], (index, obj)


def test_answers_are_consistent_with_the_scene() -> None:
    for index in range(300):
        row = make_row(1, index)
        meta = json.loads(row["meta"])
        convs = row["conversations"]
        assert convs[-1]["role"] == "assistant" and convs[-1]["content"].strip()
        if row["task"] == "vqa" and meta["question_type"] == "count":
            assert meta["answer"] == str(len(meta["objects"]))
        if row["task"] == "boxes":
            assert [b["label"] for b in row["boxes"]] == [
                f"{o['color']} {o['shape']}" for o in meta["objects"]]
            assert all(0 <= b["x1"] < b["x2"] <= 1 for b in row["boxes"])
        if row["task"] == "multiple_choice":
            assert convs[-1]["content"].startswith(f"Answer: {meta['answer']}.")
        if row["task"] in ("detail", "reasoning", "conversation"):
            assert convs[-1]["content"].count(".") >= 2  # polite: several sentences
        if row["task"] == "text_instruction":
            assert row["image"] is None and row["image_bytes"] is None


def test_scenes_have_no_overlapping_shapes() -> None:
    for i in range(200):
        shapes = make_scene(0, i).shapes
        assert 1 <= len(shapes) <= 4
        for a in shapes:
            for b in shapes:
                if a is not b:
                    assert not (a.box[0] < b.box[2] and b.box[0] < a.box[2]
                                and a.box[1] < b.box[3] and b.box[1] < a.box[3])
