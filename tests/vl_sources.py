"""Raw vision-language dataset files written exactly in their public layouts (issue 11),
shared by the adapter unit tests and the ingest integration test.

Each ``write_*`` writes one dataset's released files under a folder, with good records and
the broken ones the adapters must reject, and returns the path a spec's ``source.path``
names. Images are tiny real JPEG/PNG files where a test needs them.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path
from typing import Any

from PIL import Image

from pf_ray.data.schema import ROLES, SAMPLE_COLUMNS
from pf_ray.data.sources import SourceReader
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, Batch


def jpeg(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def save(path: Path, data: bytes | str | Any) -> Path:
    """Write bytes, text, or JSON (anything else), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data)
    else:
        path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------ reading


def read(adapter: str, file: Path | str, image_root: str | Path | None = None,
         image_pattern: str | None = None, source: str | None = None) -> Batch:
    """All rows of a file through a SourceReader, batch invariants checked."""
    batch = SourceReader(adapter, source or adapter, str(image_root) if image_root else None,
                         StorageConfig(), image_pattern).read(str(file), 0, 10**9)
    check(batch)
    return batch


def check(batch: Batch) -> None:
    """One value per column per row, unique ids, valid turns for kept rows, stage and detail
    for rejects."""
    columns = (*SAMPLE_COLUMNS, REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)
    assert set(batch) == set(columns)
    n = len(batch["id"])
    assert all(len(batch[c]) == n for c in columns)
    assert len(set(batch["id"])) == n, f"duplicate ids: {batch['id']}"
    for i in range(n):
        json.loads(batch["meta"][i])
        if batch[REJECT_REASON][i] is None:
            turns = batch["conversations"][i]
            assert [t["role"] for t in turns] == ["user", "assistant"]
            assert all(t["role"] in ROLES and t["content"].strip() for t in turns)
        else:
            assert batch[REJECT_STAGE][i] == "ingest" and batch[REJECT_DETAIL][i]


def rows(batch: Batch) -> dict[str, dict[str, Any]]:
    """Rows by id, ``meta`` decoded, the two turns as ``user`` / ``raw``."""
    out = {}
    for i, rid in enumerate(batch["id"]):
        r = {c: v[i] for c, v in batch.items()}
        r["meta"] = json.loads(r["meta"])
        if r["conversations"]:
            r["user"], r["raw"] = (t["content"] for t in r["conversations"])
        out[rid] = r
    return out


def rejects(batch: Batch) -> dict[str, str]:
    return {rid: reason for rid, reason in zip(batch["id"], batch[REJECT_REASON], strict=True)
            if reason is not None}


# ------------------------------------------------------------------ VQA formats


def write_vqav2(folder: Path, split: str = "val2014", prefix: str = "v2_") -> Path:
    """``v2_OpenEnded_mscoco_{split}_questions.json`` + ``v2_mscoco_{split}_annotations.json``
    (OK-VQA: ``prefix=""``). Questions 9001 (good), 9002 (no annotation), 9003 (question is
    a number), 9004 (blank multiple_choice_answer)."""
    questions = [
        {"image_id": 9, "question": "What color is the bus?", "question_id": 9001},
        {"image_id": 9, "question": "Is it raining?", "question_id": 9002},
        {"image_id": 42, "question": 123, "question_id": 9003},
        {"image_id": 42, "question": "How many people?", "question_id": 9004},
    ]
    def ann(qid: int, image_id: int, mc: str, answers: list[str]) -> dict[str, Any]:
        return {"question_id": qid, "image_id": image_id, "question_type": "what color is the",
                "answer_type": "other", "multiple_choice_answer": mc,
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                            for k, a in enumerate(answers)]}
    save(folder / f"{prefix}mscoco_{split}_annotations.json", {
        "info": {}, "license": {}, "data_subtype": split, "data_type": "mscoco",
        "annotations": [ann(9001, 9, "red", ["red", "red", "dark red"]),
                        ann(9003, 42, "2", ["2"]), ann(9004, 42, " ", ["2"])]})
    return save(folder / f"{prefix}OpenEnded_mscoco_{split}_questions.json", {
        "info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
        "data_subtype": split, "questions": questions})


def write_gqa(folder: Path) -> Path:
    """``val_balanced_questions.json``: 05 (good), 06 (no answer: test-style), 07 (not an
    object)."""
    return save(folder / "val_balanced_questions.json", {
        "05": {"imageId": "2354786", "question": "Is the sky dark?", "answer": "yes",
               "fullAnswer": "Yes, the sky is dark.", "isBalanced": True,
               "types": {"structural": "verify", "semantic": "attr", "detailed": "verifyAttr"},
               "semantic": [], "entailed": [], "equivalent": ["05"], "groups": {}},
        "06": {"imageId": "2354787", "question": "What is on the table?"},
        "07": ["not", "a", "question"],
    })


def write_textvqa(folder: Path) -> Path:
    """``TextVQA_0.5.1_train.json``: questions 0 (good, majority 'nokia'), 1 (no answers),
    2 (answers not a list)."""
    def q(qid: int, **extra: Any) -> dict[str, Any]:
        return {"question": "what is the brand of phone?", "image_id": "0054c91397f2fe05",
                "image_classes": ["Mobile phone"], "flickr_original_url": "https://x/y.jpg",
                "flickr_300k_url": "https://x/y_300k.jpg", "image_width": 1024,
                "image_height": 730, "question_tokens": ["what", "is"], "question_id": qid,
                "set_name": "train", **extra}
    answers = ["nokia"] * 6 + ["toshiba"] * 3 + ["nokia phone"]
    return save(folder / "TextVQA_0.5.1_train.json", {
        "dataset_type": "train", "dataset_name": "textvqa", "dataset_version": "0.5.1",
        "data": [q(0, answers=answers), q(1), q(2, answers="nokia")]})


def write_clevr(folder: Path, split: str = "val") -> Path:
    """``CLEVR_{split}_questions.json``: question 0 (good), 1 (no answer)."""
    def q(i: int, **extra: Any) -> dict[str, Any]:
        return {"image_index": 0, "split": split, "image_filename": f"CLEVR_{split}_000000.png",
                "question_index": i, "question_family_index": 39, "program": [],
                "question": "Are there more big green things than large purple shiny cubes?",
                **extra}
    return save(folder / "questions" / f"CLEVR_{split}_questions.json", {
        "info": {"split": split, "license": "CC BY 4.0", "version": "1.0"},
        "questions": [q(0, answer="yes"), q(1)]})


# ------------------------------------------------------------------ multiple choice


def write_aokvqa(folder: Path, split: str = "val") -> Path:
    """``aokvqa_v1p0_{split}.json``: 22jbM6gDxdaMaunuzgrsBB (good), 2 (no correct_choice_idx),
    3 (index out of range)."""
    def q(qid: str, **extra: Any) -> dict[str, Any]:
        return {"split": split, "image_id": 461751, "question_id": qid,
                "question": "What is in the motorcyclist's mouth?",
                "choices": ["toothpick", "food", "popsicle stick", "cigarette"],
                "direct_answers": ["cigarette"] * 10, "difficult_direct_answer": False,
                "rationales": ["He's smoking while riding.",
                               "The motorcyclist has a lit cigarette in his mouth.",
                               "A cigarette hangs from his lips."], **extra}
    return save(folder / f"aokvqa_v1p0_{split}.json", [
        q("22jbM6gDxdaMaunuzgrsBB", correct_choice_idx=3), q("2"),
        q("3", correct_choice_idx=7)])


def write_scienceqa(folder: Path) -> Path:
    """``problems.json`` + ``images/train/1/image.png``: problem 1 (image), 2 (text-only, no
    hint), 3 (answer index not an int)."""
    def p(**extra: Any) -> dict[str, Any]:
        return {"question": "Which of these states is farthest north?",
                "choices": ["West Virginia", "Louisiana", "Arizona", "Oklahoma"], "answer": 0,
                "hint": "", "image": None, "task": "closed choice", "grade": "grade2",
                "subject": "social science", "topic": "geography", "category": "Geography",
                "skill": "Read a map: cardinal directions", "lecture": "Maps have four "
                "cardinal directions.", "solution": "To find the answer, look at the compass "
                "rose. West Virginia is farthest north.", "split": "train", **extra}
    problems = {"1": p(image="image.png", hint="Figure: a map of the United States."),
                "2": p(), "3": p(answer="A")}
    Image.new("RGB", (20, 10), (0, 90, 200)).save(
        save(folder / "images" / "train" / "1" / "image.png", b""), format="PNG")
    return save(folder / "problems.json", problems)


# ------------------------------------------------------------------ captions


def write_textcaps(folder: Path) -> Path:
    """``TextCaps_0.1_train.json``: image 011e7e629fb9ae7b with 2 captions (entries far
    apart), image 2 with only a missing caption_str, one entry without image_id."""
    def c(image_id: str, cid: int, caption: str | None) -> dict[str, Any]:
        entry = {"image_id": image_id, "image_classes": ["Vehicle"], "image_width": 1024,
                 "image_height": 768, "set_name": "train", "image_name": image_id,
                 "image_path": f"train/{image_id}.jpg", "caption_id": cid,
                 "reference_strs": ["a", "b"], "reference_tokens": [["a"], ["b"]]}
        if caption is not None:
            entry.update(caption_str=caption, caption_tokens=caption.split())
        return entry
    return save(folder / "TextCaps_0.1_train.json", {
        "dataset_type": "train", "dataset_name": "textcaps", "dataset_version": "0.1",
        "data": [c("011e7e629fb9ae7b", 1, "A red bus with the number 42 on it."),
                 c("2", 2, None), {"caption_str": "orphan"},
                 c("011e7e629fb9ae7b", 3, "A bus that says Route 42 on the front.")]})


def write_flickr30k(folder: Path) -> Path:
    """Karpathy ``dataset_flickr30k.json``: 1000092795.jpg (2 sentences), 10002456.jpg (no
    sentences), an entry without ``filename``."""
    def s(raw: str, sid: int) -> dict[str, Any]:
        return {"tokens": raw.lower().rstrip(".").split(), "raw": raw, "imgid": 0,
                "sentid": sid}
    return save(folder / "dataset_flickr30k.json", {"dataset": "flickr30k", "images": [
        {"sentids": [0, 1], "imgid": 0, "split": "train", "filename": "1000092795.jpg",
         "sentences": [s("Two young guys with shaggy hair look at their hands.", 0),
                       s("Two friends enjoy time spent together.", 1)]},
        {"sentids": [], "imgid": 1, "split": "test", "filename": "10002456.jpg",
         "sentences": []},
        {"sentids": [], "imgid": 2, "split": "val", "sentences": [s("x", 9)]}]})


def write_image_paragraph(folder: Path) -> Path:
    """``paragraphs_v1.json`` + ``train_split.json``: 2356347 (train, VG_100K_2), 2 (no
    paragraph), 3 (no split)."""
    save(folder / "train_split.json", [2356347, 2])
    save(folder / "val_split.json", [1])
    return save(folder / "paragraphs_v1.json", [
        {"url": "https://cs.stanford.edu/people/rak248/VG_100K_2/2356347.jpg",
         "image_id": 2356347, "paragraph": "A large building with bars on the windows in "
         "front of it.  There is people walking in front of the building."},
        {"url": "https://cs.stanford.edu/people/rak248/VG_100K/2.jpg", "image_id": 2},
        {"url": "https://cs.stanford.edu/people/rak248/VG_100K/3.jpg", "image_id": 3,
         "paragraph": "A man stands on a corner."}])


def write_webdataset(folder: Path, name: str = "00000.tar", corrupt: bool = True) -> Path:
    """An img2dataset shard: keys 000000000 and 000000001 (jpg + txt + json), 000000002
    (corrupt jpg, when ``corrupt``), 000000003 (no image: a failed download's json only),
    000000004 (image, no caption)."""
    members: list[tuple[str, bytes]] = []
    def add(key: str, image: bytes | None, caption: str | None, url: str) -> None:
        if image is not None:
            members.append((f"{key}.jpg", image))
        if caption is not None:
            members.append((f"{key}.txt", caption.encode()))
        members.append((f"{key}.json", json.dumps({
            "url": url, "key": key, "status": "success" if image else "failed_to_download",
            "error_message": None, "width": 40, "height": 30, "original_width": 400,
            "original_height": 300, "exif": "{}", "sha256": "0" * 64,
            "caption": caption}).encode()))
    add("000000000", jpeg((250, 0, 0)), "a red square on a plain background", "http://a/0.jpg")
    add("000000001", jpeg((0, 0, 250)), "blue tiles", "http://a/1.jpg")
    if corrupt:
        add("000000002", jpeg()[:60], "a truncated picture", "http://a/2.jpg")
    add("000000003", None, "never downloaded", "http://a/3.jpg")
    add("000000004", jpeg(), None, "http://a/4.jpg")
    path = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    save(folder / name.replace(".tar", "_stats.json"), {"count": 5, "successes": 4})
    return path


def write_image_folders(folder: Path) -> Path:
    """``root/{class}/{image}``: golden_retriever (2 images, one nested), tabby_cat (1), a
    README at the root and a .txt in a class folder (not samples)."""
    save(folder / "golden_retriever" / "n02099601_3004.jpg", jpeg((200, 160, 60)))
    save(folder / "golden_retriever" / "more" / "n02099601_7.JPEG", jpeg((190, 150, 50)))
    save(folder / "tabby_cat" / "n02123045_1.png", b"")
    Image.new("RGB", (8, 8), (90, 90, 90)).save(folder / "tabby_cat" / "n02123045_1.png")
    save(folder / "README.txt", "classes")
    save(folder / "tabby_cat" / "notes.txt", "not an image")
    return folder


# ------------------------------------------------------------------ regions


def write_refcocog(folder: Path, image_root: Path | None = None) -> Path:
    """``refcocog/refs(umd).p`` (a Python pickle, as released) + ``instances.json``: ref 0
    (two expressions, box [32, 16, 64, 32] on a 128x64 image), ref 1 (annotation absent
    from instances.json). With ``image_root``, writes the COCO image (grey) there."""
    refs = [{"image_id": 581857, "split": "train", "sentences": [
                {"tokens": ["the", "lady"], "raw": "the lady with the blue shirt",
                 "sent_id": 0, "sent": "the lady with the blue shirt"},
                {"tokens": ["a"], "raw": "A woman in blue. ", "sent_id": 1,
                 "sent": "a woman in blue"}],
             "file_name": "COCO_train2014_000000581857_1000.jpg", "category_id": 1,
             "ann_id": 1000, "sent_ids": [0, 1], "ref_id": 0},
            {"image_id": 581857, "split": "val", "sentences": [{"raw": "the dog"}],
             "file_name": "COCO_train2014_000000581857_77.jpg", "category_id": 18,
             "ann_id": 77, "sent_ids": [2], "ref_id": 1}]
    save(folder / "instances.json", {
        "images": [{"id": 581857, "file_name": "COCO_train2014_000000581857.jpg",
                    "width": 128, "height": 64}],
        "annotations": [{"id": 1000, "image_id": 581857, "category_id": 1,
                         "bbox": [32.0, 16.0, 64.0, 32.0], "area": 2048.0, "iscrowd": 0,
                         "segmentation": [[32, 16, 96, 16, 96, 48]]}],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 18, "name": "dog", "supercategory": "animal"}]})
    if image_root is not None:
        image_root.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (128, 64), (128, 128, 128)).save(
            image_root / "COCO_train2014_000000581857.jpg", quality=95)
    return save(folder / "refs(umd).p", pickle.dumps(refs, protocol=2))
