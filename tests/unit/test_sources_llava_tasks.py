"""LLaVA-Instruct tasks: the per-task files by name, the merged ``llava_instruct_150k.json``
by shape, and both feeding the distort job's captions+boxes family (issue 10, item 4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.data.sources import SourceReader, expand_paths
from pf_ray.data.sources.llava import DETAIL_PROMPTS
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

IMAGE = "000000215677"
DESCRIPTION = ("The image shows a man riding a brown horse across a green field. He wears a "
               "white shirt. The horse is walking calmly.")
LOCAL = {"images": {"check": False}, "ray": {"progress": False}}


def llava(human: str | list[str], answer: str = "An answer.", image: str | None = IMAGE
          ) -> dict[str, Any]:
    """A LLaVA record: one human turn per question, each answered."""
    convs = []
    for q in [human] if isinstance(human, str) else human:
        convs += [{"from": "human", "value": q}, {"from": "gpt", "value": answer}]
    rec: dict[str, Any] = {"id": IMAGE, "conversations": convs}
    if image:
        rec["image"] = f"{image}.jpg"
    return rec


DETAIL = llava("What is this photo about'?\n<image>", DESCRIPTION)
CONVERSATION = llava(["<image>\nWhat is the man riding?", "What colour is the horse?"])
REASONING = llava("<image>\nWhy might the man be riding in this field?")


def read(file: Path) -> dict[str, list[Any]]:
    return SourceReader("llava_instruct", "llava_instruct", None, StorageConfig()).read(
        str(file), 0, 10**9)


def test_merged_file_tasks_from_shape(tmp_path: Path) -> None:
    records = [DETAIL, CONVERSATION, REASONING,
               llava("<image>\nDescribe the following image in detail"),  # one of the 16
               llava(["Describe the following image in detail.", "And the sky?"]),  # 2 turns
               llava("Describe the following image in detail.", image=None)]  # text-only
    file = tmp_path / "llava_instruct_150k.json"
    file.write_text(json.dumps(records))
    b = read(file)
    assert b["task"] == ["detail", "conversation", "reasoning", "detail", "conversation",
                         "text_instruction"]
    assert b["id"][:3] == [f"llava_instruct:{IMAGE}", f"llava_instruct:{IMAGE}#1",
                           f"llava_instruct:{IMAGE}#2"]


@pytest.mark.parametrize("prompt", DETAIL_PROMPTS)
def test_every_detail_prompt_is_recognised(tmp_path: Path, prompt: str) -> None:
    file = tmp_path / "llava_instruct_150k.json"
    file.write_text(json.dumps([llava(f"<image>\n{prompt}"), llava(f"{prompt.upper()} <image>"),
                                llava(f"  {prompt.rstrip('.?')}\n<image>")]))
    assert read(file)["task"] == ["detail"] * 3


def test_per_task_files_are_one_source(tmp_path: Path) -> None:
    """The three files of jobs/ingest_llava.yaml in one ingest: tasks by file name, and the
    image id they share gives three ids (keys prefixed by the task)."""
    names = {"conversation_58k.json": CONVERSATION, "detail_23k.json": DETAIL,
             "complex_reasoning_77k.json": REASONING}
    for name, rec in names.items():
        (tmp_path / name).write_text(json.dumps([rec]))
    path = [str(tmp_path / n) for n in names]
    assert expand_paths(path, StorageConfig()) == path
    (res,) = run_job(parse_spec({"kind": "ingest", "output": {"path": str(tmp_path / "out")},
                                 "source": {"adapter": "llava_instruct", "path": path},
                                 **LOCAL}), executor="local")
    rows = Dataset(res.root, StorageConfig()).read().to_pylist()
    assert sorted((r["id"], r["task"]) for r in rows) == [
        (f"llava_instruct:conversation/{IMAGE}", "conversation"),
        (f"llava_instruct:detail/{IMAGE}", "detail"),
        (f"llava_instruct:reasoning/{IMAGE}", "reasoning")]


def test_path_list_entries_must_match(tmp_path: Path) -> None:
    (tmp_path / "detail_23k.json").write_text("[]")
    files = [str(tmp_path / "detail_23k.json"), str(tmp_path / "detail_23k.json")]
    assert expand_paths(files, StorageConfig()) == files[:1]  # duplicates once
    with pytest.raises(FileNotFoundError, match="conversation_"):
        expand_paths([files[0], str(tmp_path / "conversation_*.json")], StorageConfig())


def write_coco(folder: Path) -> Path:
    """COCO-2014 captions + instances for image 215677 (a man and a horse)."""
    folder.mkdir()
    images = [{"id": 215677, "file_name": f"COCO_train2014_{IMAGE}.jpg", "width": 640,
               "height": 480}]
    (folder / "captions_train2014.json").write_text(json.dumps({"images": images, "annotations": [
        {"id": 1, "image_id": 215677, "caption": "A man riding a horse."}]}))
    (folder / "instances_train2014.json").write_text(json.dumps({
        "images": images, "categories": [{"id": 19, "name": "horse"}],
        "annotations": [{"id": 6, "image_id": 215677, "category_id": 19,
                         "bbox": [256, 120, 192, 240]}]}))
    return folder / "captions_train2014.json"


@pytest.mark.parametrize("layout", ["merged", "per_task"])
def test_detail_rows_feed_the_boxes_family(tmp_path: Path, layout: str) -> None:
    coco = write_coco(tmp_path / "coco")
    run_job(parse_spec({"kind": "ingest", "output": {"path": str(tmp_path / "coco_ds")},
                        "source": {"adapter": "coco", "path": str(coco)}, **LOCAL}),
            executor="local")
    if layout == "merged":
        (tmp_path / "llava_instruct_150k.json").write_text(
            json.dumps([CONVERSATION, DETAIL, REASONING]))
        path: str | list[str] = str(tmp_path / "llava_instruct_150k.json")
    else:
        for name, rec in (("conversation_58k.json", CONVERSATION), ("detail_23k.json", DETAIL),
                          ("complex_reasoning_77k.json", REASONING)):
            (tmp_path / name).write_text(json.dumps([rec]))
        path = str(tmp_path / "*_*k.json")
    run_job(parse_spec({"kind": "ingest", "output": {"path": str(tmp_path / "llava")},
                        "source": {"adapter": "llava_instruct", "path": path,
                                   "image_root": "/coco/train2014"}, **LOCAL}),
            executor="local")
    (res,) = run_job(parse_spec({
        "kind": "distort", "inputs": [str(tmp_path / "llava")],
        "output": {"path": str(tmp_path / "pairs")}, "boxes_from": str(tmp_path / "coco_ds"),
        "select": {"tasks": ["detail"]}, "mixture": {"image_with_boxes": {"boxes": 1.0}},
        **LOCAL}), executor="local")
    (pair,) = Dataset(res.root, StorageConfig()).read().to_pylist()
    assert pair["family"] == "boxes" and pair["original"] == DESCRIPTION
    assert pair["distorted"].startswith("A man riding a horse.\n\n")  # captions, then boxes
    assert "\nhorse: [0.4" in pair["distorted"]  # (the number format is the boxes family's)
