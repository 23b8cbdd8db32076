"""Rationale-VQA adapters (issue 11): A-OKVQA and ScienceQA on files written in their
public layouts. Task ``multiple_choice``; the choices are appended to the question and the
raw answer is ``"Answer: {a}. {rationale}"`` (paper.md §4)."""

from __future__ import annotations

from pathlib import Path

from vl_sources import read, rejects, rows, write_aokvqa, write_scienceqa

from pf_ray.data.sources.templates import answer_with_reason, with_choices


def test_aokvqa(tmp_path: Path) -> None:
    b = read("aokvqa", write_aokvqa(tmp_path, "val"), image_root="/coco")
    assert b["id"] == ["aokvqa:22jbM6gDxdaMaunuzgrsBB", "aokvqa:2", "aokvqa:3"]
    assert rejects(b) == {"aokvqa:2": "missing_field", "aokvqa:3": "bad_field"}
    r = rows(b)["aokvqa:22jbM6gDxdaMaunuzgrsBB"]
    assert r["task"] == "multiple_choice"
    assert r["user"] == ("What is in the motorcyclist's mouth?\nOptions:\nA. toothpick\n"
                         "B. food\nC. popsicle stick\nD. cigarette")
    assert r["raw"] == "Answer: cigarette. He's smoking while riding."
    assert r["image"] == "/coco/val2017/000000461751.jpg"
    assert r["meta"]["answer_index"] == 3 and len(r["meta"]["rationales"]) == 3
    assert r["meta"]["direct_answers"] == ["cigarette"] * 10


def test_scienceqa_with_image_and_text_only(tmp_path: Path) -> None:
    file = write_scienceqa(tmp_path)
    b = read("scienceqa", file, image_root=tmp_path / "images")
    assert rejects(b) == {"scienceqa:3": "bad_field"}
    with_image, text_only = rows(b)["scienceqa:1"], rows(b)["scienceqa:2"]
    assert with_image["image"] == str(tmp_path / "images" / "train" / "1" / "image.png")
    assert Path(with_image["image"]).is_file()
    assert text_only["image"] is None
    assert with_image["user"] == ("Context: Figure: a map of the United States.\n"
                                  "Which of these states is farthest north?\nOptions:\n"
                                  "A. West Virginia\nB. Louisiana\nC. Arizona\nD. Oklahoma")
    assert text_only["user"].startswith("Which of these states")  # no empty context
    assert with_image["raw"] == ("Answer: A. To find the answer, look at the compass rose. "
                                 "West Virginia is farthest north.")
    assert {with_image["task"], text_only["task"]} == {"multiple_choice"}
    assert with_image["meta"]["answer"] == "West Virginia"
    assert with_image["meta"]["lecture"].startswith("Maps have")


def test_templates() -> None:
    assert with_choices("Q?", ["x", "y"]) == "Q?\nOptions:\nA. x\nB. y"
    assert answer_with_reason("cat.", "It purrs.") == "Answer: cat. It purrs."
    assert answer_with_reason("B", "") == "Answer: B."
