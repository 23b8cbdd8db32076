"""Raw VQA adapters (issue 11) on files written in their public layouts: VQAv2 and OK-VQA
(questions joined with annotations), GQA, TextVQA, CLEVR. Task ``vqa``; the user turn is
the question as asked, the assistant turn the raw short answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from vl_sources import (
    read,
    rejects,
    rows,
    save,
    write_clevr,
    write_gqa,
    write_textvqa,
    write_vqav2,
)

from pf_ray.config import SpecError, parse_spec
from pf_ray.data.sources.vqav2 import image_split


def test_vqav2_joins_questions_and_annotations(tmp_path: Path) -> None:
    file = write_vqav2(tmp_path)
    b = read("vqav2", file, image_root="/coco")
    assert b["id"] == ["vqav2:9001", "vqav2:9002", "vqav2:9003", "vqav2:9004"]
    assert rejects(b) == {"vqav2:9002": "missing_annotation", "vqav2:9003": "bad_field",
                          "vqav2:9004": "empty_text"}
    r = rows(b)["vqav2:9001"]
    assert (r["task"], r["user"], r["raw"]) == ("vqa", "What color is the bus?", "red")
    assert r["image"] == "/coco/val2014/COCO_val2014_000000000009.jpg"
    assert r["meta"]["answers"] == ["red", "red", "dark red"]
    assert r["meta"]["answer_type"] == "other" and r["meta"]["image_id"] == 9
    # stable: a second read gives the same rows
    assert read("vqav2", file, image_root="/coco") == b


def test_okvqa_names_and_image_pattern(tmp_path: Path) -> None:
    file = write_vqav2(tmp_path, split="train2014", prefix="")
    assert file.name == "OpenEnded_mscoco_train2014_questions.json"
    b = read("vqav2", file, image_root="/coco", image_pattern="{split}/{image_id}.jpg",
             source="okvqa")
    assert rows(b)["okvqa:9001"]["image"] == "/coco/train2014/9.jpg"
    assert rows(b)["okvqa:9001"]["raw"] == "red"


def test_vqav2_test_split_without_annotations_is_rejected(tmp_path: Path) -> None:
    file = write_vqav2(tmp_path, split="test-dev2015")
    (tmp_path / "v2_mscoco_test-dev2015_annotations.json").unlink()
    b = read("vqav2", file)
    assert rejects(b) == {"vqav2:9001": "missing_annotation", "vqav2:9002": "missing_annotation",
                          "vqav2:9003": "bad_field", "vqav2:9004": "missing_annotation"}
    assert image_split("test-dev2015") == "test2015" == image_split("test2015")
    unreadable = save(tmp_path / "v2_OpenEnded_mscoco_x2014_questions.json", "{not json")
    assert list(rejects(read("vqav2", unreadable)).values()) == ["unreadable_file"]


def test_gqa(tmp_path: Path) -> None:
    b = read("gqa", write_gqa(tmp_path), image_root="/gqa/images")
    assert rejects(b) == {"gqa:06": "missing_field", "gqa:07": "bad_record"}
    r = rows(b)["gqa:05"]
    assert (r["task"], r["user"], r["raw"]) == ("vqa", "Is the sky dark?", "yes")
    assert r["image"] == "/gqa/images/2354786.jpg"
    assert r["meta"]["full_answer"] == "Yes, the sky is dark."
    assert r["meta"]["types"]["semantic"] == "attr"


def test_textvqa_majority_answer(tmp_path: Path) -> None:
    b = read("textvqa", write_textvqa(tmp_path), image_root="/textvqa")
    assert b["id"] == ["textvqa:0", "textvqa:1", "textvqa:2"]
    assert rejects(b) == {"textvqa:1": "missing_field", "textvqa:2": "bad_field"}
    r = rows(b)["textvqa:0"]
    assert (r["task"], r["raw"]) == ("vqa", "nokia")
    assert r["image"] == "/textvqa/train_images/0054c91397f2fe05.jpg"
    assert len(r["meta"]["answers"]) == 10


def test_clevr_ids_per_split_and_test_rejects(tmp_path: Path) -> None:
    val = read("clevr", write_clevr(tmp_path, "val"), image_root="/clevr/images")
    test = read("clevr", write_clevr(tmp_path, "test"), image_root="/clevr/images")
    assert val["id"] == ["clevr:val/0", "clevr:val/1"]
    assert test["id"] == ["clevr:test/0", "clevr:test/1"]
    assert rejects(val) == {"clevr:val/1": "missing_field"}
    assert "test split has no answers" in test["_reject_detail"][1]
    r = rows(val)["clevr:val/0"]
    assert (r["task"], r["raw"]) == ("vqa", "yes")
    assert r["image"] == "/clevr/images/val/CLEVR_val_000000.png"


def test_image_pattern_is_checked_against_the_adapter(tmp_path: Path) -> None:
    def spec(adapter: str, pattern: str) -> dict[str, object]:
        return {"kind": "ingest", "output": {"path": str(tmp_path / "o")},
                "source": {"adapter": adapter, "path": "x.json", "image_pattern": pattern}}
    assert parse_spec(spec("vqav2", "{split}/{image_id:012d}.jpg")).source.image_pattern
    # unset, it is not in the dump: older ingest specs keep their hash and still resume
    plain = parse_spec({"kind": "ingest", "output": {"path": "o"},
                        "source": {"adapter": "coco", "path": "x.json"}})
    assert plain.source.model_dump() == {"adapter": "coco", "path": "x.json",
                                         "image_root": None, "name": None}
    with pytest.raises(SpecError, match=r"field\(s\) \['imageId'\]; allowed for gqa"):
        parse_spec(spec("gqa", "{imageId}.jpg"))
    with pytest.raises(SpecError, match="only .* accept a pattern"):
        parse_spec(spec("sharegpt", "{image_id}.jpg"))


def test_pf1m_sources_pipeline_spec() -> None:
    """jobs/ingest_pf1m_sources.yaml: one ingest job per dataset, each new adapter used."""
    from pf_ray.config import load_spec

    spec = load_spec(Path(__file__).parents[2] / "jobs" / "ingest_pf1m_sources.yaml", env={})
    adapters = {j.source.adapter for j in spec.jobs}
    assert adapters == {
        "vqav2", "gqa", "textvqa", "clevr", "aokvqa", "scienceqa", "coco_captions",
        "flickr30k", "textcaps", "image_paragraph", "webdataset", "refcocog",
        "image_folder_classes",
        # issue 22: the rest of Table 6
        "ocr_vqa", "pointqa", "vqa_e", "ret3", "dior", "hrrsd", "dota", "spot_the_diff",
        "image_editing_requests", "levir_cc"}
    rewrite = load_spec(Path(__file__).parents[2] / "jobs" / "rewrite_pf1m.yaml", env={})
    # every ingested dataset is an input of the rewrite, and every source it samples exists
    assert {j.output.path for j in spec.jobs} == set(rewrite.inputs)
    assert set(rewrite.select.samples or {}) == {j.source.name or j.source.adapter
                                                 for j in spec.jobs}
    assert all(j.kind == "ingest" and j.output.path.startswith("s3://pf-ray/raw_vl/")
               for j in spec.jobs)
    (elevater,) = (j for j in spec.jobs if j.source.adapter == "image_folder_classes")
    assert len(elevater.source.path) == 15  # the paper's 15 ELEVATER sets
