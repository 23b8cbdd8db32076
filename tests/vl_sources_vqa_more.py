"""Raw files of VQA-E, OCR-VQA and PointQA written exactly in their released layouts, for
the adapter tests (tests/unit/test_sources_vqa_more.py). Each ``write_*`` returns the path
a spec's ``source.path`` names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from vl_sources import save


def write_vqa_e(folder: Path, split: str = "train") -> Path:
    """``VQA-E_{split}_set.json``: records 0 (good), 1 (same image, good, no score),
    2 (blank explanation), 3 (no explanation), 4 (question not a string)."""
    def rec(img_id: int, question: Any, explanation: Any, **extra: Any) -> dict[str, Any]:
        r = {"img_id": img_id, "question": question, "multiple_choice_answer": "red",
             "answers": ["red"] * 8 + ["dark red", "maroon"], "answer_type": "other",
             "question_type": "what color is the", "explanation": explanation}
        r.update(extra)
        if explanation is None:
            del r["explanation"]
        return r
    return save(folder / f"VQA-E_{split}_set.json", [
        rec(9, "What color is the bus?", ["a red bus parked on the side of a street",
                                          0.8125]),
        rec(9, "Is the bus moving?", ["the bus is parked at the curb"],
            multiple_choice_answer="no", answer_type="yes/no", question_type="is the"),
        rec(42, "How many people?", ["  ", 0.5]),
        rec(42, "What is this?", None),
        rec(42, 17, ["a man", 0.4]),
    ])


def write_ocr_vqa(folder: Path) -> Path:
    """``dataset.json`` + ``images/``: book 761183272 (train, 3 questions, one answer a
    number), 1606994964 (val, .png cover), 0000000001 (train, 2 questions / 1 answer),
    0000000002 (train, a blank question)."""
    save(folder / "images" / "761183272.jpg", b"")  # the adapter only names images
    return save(folder / "dataset.json", {
        "761183272": {
            "imageURL": "http://ecx.images-amazon.com/images/I/61Y5cOdHJbL.jpg",
            "questions": ["Who wrote this book?", "What is the title of this book?",
                          "What is the year printed on this calendar?"],
            "answers": ["Sandra Boynton", "Mom's Family Wall Calendar 2016", 2016],
            "title": "Mom's Family Wall Calendar 2016", "authorName": "Sandra Boynton",
            "genre": "Calendars", "genreID": 4, "split": 1},
        "1606994964": {
            "imageURL": "http://ecx.images-amazon.com/images/I/51Xbd1N7eML.png",
            "questions": ["Is this a comedy book?"], "answers": ["No"],
            "title": "Taste of Home", "authorName": "Editors", "genre": "Cookbooks",
            "genreID": 6, "split": 2},
        "0000000001": {
            "imageURL": "http://ecx.images-amazon.com/images/I/1.jpg",
            "questions": ["Who wrote this book?", "What is the genre of this book?"],
            "answers": ["Nobody"], "title": "T", "authorName": "A", "genre": "G",
            "genreID": 1, "split": 1},
        "0000000002": {
            "imageURL": "http://ecx.images-amazon.com/images/I/2.jpg",
            "questions": ["  ", "Is this a travel book?"], "answers": ["Yes", "No"],
            "title": "T2", "authorName": "A2", "genre": "Travel", "genreID": 27,
            "split": 1},
    })


def vg_object(x: int, y: int, w: int, h: int, name: str) -> dict[str, Any]:
    return {"object_id": 1000 + x, "names": [name], "attributes": ["red"], "x": x, "y": y,
            "w": w, "h": h, "synsets": [f"{name}.n.01"]}


def write_pointqa(folder: Path, image_root: Path | None = None) -> Path:
    """``pointingqa/Datasets/{LocalQA,LookTwiceQA}``: the dataset files and split lists.

    LocalQA image 2363870 (200x100): QA 0 "What color is the shirt?" with two points
    ((50, 25) red, (150, 75) blue), QA 1 without points; image 4171 (val only, its image
    absent from image_root). LookTwice-QA image 2372121 (in VG_100K_2, 80x60): QA 0 (point
    (20, 15)), QA 1 (point outside the image). With ``image_root``, writes the grey JPEGs.
    Returns the LocalQA train split list."""
    local = folder / "Datasets" / "LocalQA"
    shirt_a, shirt_b = vg_object(30, 5, 40, 40, "shirt"), vg_object(130, 55, 40, 40, "shirt")
    save(local / "localqa_dataset.json", {
        "2363870": [
            {"id": 2363870, "question": "What color is the shirt?",
             "all_ans": ["blue", "red"], "all_objs": [shirt_a, shirt_b],
             "points": [{"x": 50, "y": 25, "ans": "red"}, {"x": 150, "y": 75, "ans": "blue"}]},
            {"id": 2363870, "question": "What shape is the sign?", "all_ans": ["round"],
             "all_objs": [], "points": []}],
        "4171": [{"id": 4171, "question": "What color is the car?", "all_ans": ["white"],
                  "all_objs": [vg_object(0, 0, 10, 10, "car")],
                  "points": [{"x": 5, "y": 5, "ans": "white"}]}]})
    save(local / "localqa_train_imgs.json", ["2363870", "999"])
    save(local / "localqa_val_imgs.json", ["4171"])
    twice = folder / "Datasets" / "LookTwiceQA"
    save(twice / "looktwiceqa_dataset.json", {
        "2372121": [
            {"id": 2372121, "obj_question": "How many apples are there?",
             "super_question": "How many fruits are there?",
             "general_question": "How many of these are there?", "ans": "3",
             "bbox": vg_object(10, 5, 20, 20, "apple"),
             "point": {"x": 20, "y": 15, "ans": "3"}, "obj_type": "apples",
             "supercategory": "fruits"},
            {"id": 2372121, "obj_question": "How many pears are there?",
             "super_question": "How many fruits are there?",
             "general_question": "How many of these are there?", "ans": "2",
             "bbox": vg_object(70, 50, 20, 20, "pear"),
             "point": {"x": 90, "y": 15, "ans": "2"}, "obj_type": "pears",
             "supercategory": "fruits"}]})
    save(twice / "looktwiceqa_train_imgs.json", ["2372121"])
    if image_root is not None:
        for sub, name, size in (("VG_100K", "2363870", (200, 100)),
                                ("VG_100K_2", "2372121", (80, 60))):
            (image_root / sub).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, (128, 128, 128)).save(image_root / sub / f"{name}.jpg",
                                                         quality=95)
    return local / "localqa_train_imgs.json"
