"""Raw vision-language ingest (issue 11) end to end on local Ray: a pipeline of ``vqav2``,
``webdataset``, ``refcocog`` and ``image_folder_classes`` jobs over files in their public
layouts, with missing and corrupt images; every record comes out once, as a row or a
reject with its reason, and a rerun resumes without rewriting."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from vl_sources import (
    jpeg,
    save,
    write_image_folders,
    write_refcocog,
    write_vqav2,
    write_webdataset,
)

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def add_vqa_questions(file: Path) -> None:
    """Questions 9005 (image file absent) and 9006 (corrupt image) beside the fixture's."""
    qs = json.loads(file.read_text())
    anns_file = file.parent / "v2_mscoco_val2014_annotations.json"
    anns = json.loads(anns_file.read_text())
    for qid, image_id in ((9005, 10), (9006, 11)):
        qs["questions"].append({"image_id": image_id, "question": "What is it?",
                                "question_id": qid})
        anns["annotations"].append({"question_id": qid, "image_id": image_id,
                                    "multiple_choice_answer": "a cat", "answers": [],
                                    "answer_type": "other", "question_type": "what is"})
    file.write_text(json.dumps(qs))
    anns_file.write_text(json.dumps(anns))


def read_all(root: str) -> tuple[dict[str, dict], dict[str, str]]:
    ds = Dataset(root, StorageConfig())
    kept = {r["id"]: r for r in ds.read().to_pylist()}
    try:
        rejected = {r["id"]: r["reason"] for r in ds.read("rejects").to_pylist()}
    except FileNotFoundError:
        rejected = {}
    return kept, rejected


def test_raw_sources_pipeline_on_ray(ray_session: str, tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    questions = write_vqav2(tmp_path / "vqa")
    add_vqa_questions(questions)
    save(coco / "val2014" / "COCO_val2014_000000000009.jpg", jpeg())
    save(coco / "val2014" / "COCO_val2014_000000000011.jpg", b"\xff\xd8\xff\xe0 broken")
    shards = tmp_path / "cc3m"
    write_webdataset(shards, "00000.tar")
    refs = write_refcocog(tmp_path / "refcocog", image_root=coco / "train2014")
    folders = write_image_folders(tmp_path / "pets")
    save(folders / "tabby_cat" / "n02123045_2.jpg", b"not an image at all")
    out = tmp_path / "out"

    def job(name: str, adapter: str, path: Path | str, **source: str) -> dict[str, object]:
        return {"kind": "ingest", "name": name, "output": {"path": str(out / name)},
                "rows_per_shard": 2,
                "source": {"adapter": adapter, "path": str(path), "name": name, **source}}

    spec = parse_spec({"kind": "pipeline", "ray": {"progress": False},
                       "faults": {"max_reject_fraction": 1.0}, "jobs": [
        job("vqav2", "vqav2", questions, image_root=str(coco)),
        job("cc3m", "webdataset", shards / "*.tar"),
        job("refcocog", "refcocog", refs, image_root=str(coco / "train2014")),
        job("pets", "image_folder_classes", folders)]})
    results = run_job(spec)
    assert len(results) == 4

    kept, rejected = read_all(str(out / "vqav2"))
    assert sorted(kept) == ["vqav2:9001"]
    assert rejected == {"vqav2:9002": "missing_annotation", "vqav2:9003": "bad_field",
                        "vqav2:9004": "empty_text", "vqav2:9005": "image_missing",
                        "vqav2:9006": "image_corrupt"}
    assert kept["vqav2:9001"]["conversations"][1]["content"] == "red"

    kept, rejected = read_all(str(out / "cc3m"))
    assert sorted(kept) == ["cc3m:000000000", "cc3m:000000001"]
    assert rejected == {"cc3m:000000002": "image_corrupt", "cc3m:000000003": "image_missing",
                        "cc3m:000000004": "missing_field"}
    assert Image.open(io.BytesIO(kept["cc3m:000000001"]["image_bytes"])).size == (40, 30)

    kept, rejected = read_all(str(out / "refcocog"))
    assert list(kept) == ["refcocog:0"] and rejected == {"refcocog:1": "missing_annotation"}
    drawn = Image.open(io.BytesIO(kept["refcocog:0"]["image_bytes"])).convert("RGB")
    assert drawn.getpixel((60, 16))[1] > 100 > drawn.getpixel((60, 16))[0]  # the green edge

    kept, rejected = read_all(str(out / "pets"))
    assert len(kept) == 3
    assert rejected == {"pets:pets/tabby_cat/n02123045_2.jpg": "image_not_image"}
    assert {r["task"] for r in kept.values()} == {"classification"}

    records_in = [6, 5, 2, 4]  # questions, tar keys, refs, class-folder images
    assert [r.manifest["totals"]["rows"] + r.manifest["totals"]["rejects"]
            for r in results] == records_in
    again = run_job(spec)
    assert all(r.written == 0 for r in again)  # resumed: every shard was committed


def test_webdataset_shards_on_s3(ray_session: str, s3_server, s3_bucket: str,
                                 tmp_path: Path) -> None:
    """img2dataset's bucket layout: the ``0000[0-1].tar`` glob takes the shards and leaves
    the ``_stats.json`` / ``.parquet`` beside them; images are read from the tar in S3."""
    import pyarrow.fs as pafs

    from pf_ray.storage import resolve

    storage = {"endpoint_url": s3_server.endpoint}
    local = tmp_path / "shards"
    write_webdataset(local, "00000.tar", corrupt=False)
    fs, _ = resolve(f"{s3_bucket}/x", StorageConfig(**storage))
    for f in [*local.iterdir(), save(local / "00000.parquet", b"PAR1")]:
        pafs.copy_files(str(f), f"{s3_bucket.removeprefix('s3://')}/cc3m/{f.name}",
                        destination_filesystem=fs)
    out = f"{s3_bucket}/raw_vl/cc3m"
    (res,) = run_job(parse_spec({
        "kind": "ingest", "storage": storage, "ray": {"progress": False},
        "faults": {"max_reject_fraction": 1.0}, "output": {"path": out},
        "source": {"adapter": "webdataset", "path": f"{s3_bucket}/cc3m/0000[0-1].tar",
                   "name": "cc3m"}}))
    assert res.manifest["totals"] == {**res.manifest["totals"], "rows": 2, "rejects": 2}
    ds = Dataset(out, StorageConfig(**storage))
    kept = {r["id"]: r for r in ds.read().to_pylist()}
    assert kept["cc3m:000000000"]["image"] == f"tar://000000000.jpg::{s3_bucket}/cc3m/00000.tar"
    assert kept["cc3m:000000000"]["image_bytes"][:2] == b"\xff\xd8"  # the shard's JPEG
