"""The flamingo rewriter on a tiny model folder (built from the ``tiny`` preset and saved as
``pf-ray convert --preset tiny`` does): batching, image dedup, missing models, and a whole
rewrite job in process (``executor="local"``) over good and broken rows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pf_ray.config import parse_spec
from pf_ray.data.images import ImageLoader
from pf_ray.data.io import Dataset
from pf_ray.data.schema import SAMPLE_SCHEMA, to_table
from pf_ray.data.synthetic import generate
from pf_ray.engines.config import DecodingConfig
from pf_ray.engines.flamingo import FlamingoGenerator
from pf_ray.faults import ModelUnavailable, UnitFailed
from pf_ray.jobs.runner import run_job
from pf_ray.rewrite.engines import Request, Rewriter
from pf_ray.rewrite.spec import ChecksConfig
from pf_ray.rewrite.steps import Rewrite
from pf_ray.specs import FaultPolicy, StorageConfig
from pf_ray.steps.base import StepDef, run_step

DECODING = DecodingConfig(max_new_tokens=6)


@pytest.fixture(scope="module")
def rewriter(tmp_path_factory: pytest.TempPathFactory) -> str:
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer

    folder = tmp_path_factory.mktemp("rewriter") / "tiny"
    save_pretrained(build_model("tiny"), folder, tokenizer=model_tokenizer("tiny"))
    return str(folder)


@pytest.fixture(scope="module")
def rows() -> dict:
    batch = generate(0, 0, 27)  # 3 images, each shared by its cycle's 9 tasks
    keep = [i for i, s in enumerate(batch["source"]) if s == "synthetic_vl"]
    return {k: [v[i] for i in keep] for k, v in batch.items()}


def requests_of(rows: dict) -> list[Request]:
    loader = ImageLoader()
    return [Request(c[0]["content"], c[1]["content"], (loader.load(ref, data),))
            for c, ref, data in zip(rows["conversations"], rows["image"], rows["image_bytes"],
                                    strict=True)]


def test_batched_rewrite_encodes_each_image_once_and_equals_batch_one(rewriter: str,
                                                                     rows: dict) -> None:
    engine = Rewriter(FlamingoGenerator(rewriter, decoding=DECODING, num_threads=1),
                      prompt_format="paper", decoding=DECODING)
    model = engine.generator.model  # type: ignore[attr-defined]
    encoded: list[int] = []
    original = model.encode_images

    def counting(pixels):  # type: ignore[no-untyped-def]
        encoded.append(pixels.shape[0])
        return original(pixels)

    model.encode_images = counting
    reqs = requests_of(rows)
    assert len(reqs) == 15  # 5 raw-annotation rows per image, 3 images
    batched = engine.rewrite(reqs)
    assert sum(encoded) == 3  # each distinct image once for the whole batch
    encoded.clear()
    single = [engine.rewrite([r])[0] for r in reqs[:5]]
    assert sum(encoded) == 5
    assert batched[:5] == single  # left padding: a row decodes as it would alone
    assert all(r.finish_reason in ("eos", "stop", "length") and r.reject is None
               for r in batched)


def test_missing_model_is_an_infrastructure_fault(tmp_path: Path, rows: dict) -> None:
    engine = Rewriter(FlamingoGenerator(str(tmp_path / "nowhere"), decoding=DECODING),
                      prompt_format="paper", decoding=DECODING)
    with pytest.raises(ModelUnavailable, match="nowhere"):
        engine.rewrite(requests_of(rows)[:1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match="config.json"):
        FlamingoGenerator(str(tmp_path / "empty"), decoding=DECODING).load()
    # in the step: retried, then the unit fails; no row becomes a reject
    step = StepDef(Rewrite.name, Rewrite, Rewrite.inputs, Rewrite.outputs, init_kwargs={
        "engine_factory": lambda: engine, "checks": ChecksConfig(), "loader": ImageLoader()})
    batch = {"id": rows["id"][:2], "image": rows["image"][:2],
             "image_bytes": rows["image_bytes"][:2], "instruction": ["q", "q"],
             "original": ["a", "a"]}
    with pytest.raises(UnitFailed, match="infrastructure fault.*ModelUnavailable"):
        run_step(step, step.build(), batch, FaultPolicy(retries=1, backoff_s=0.0))


def _dataset_with_bad_rows(root: Path) -> list[str]:
    good = generate(2, 0, 9)
    rows = [{k: good[k][i] for k in good} for i in range(9)]
    vqa = next(r for r in rows if r["task"] == "vqa")
    rows += [
        dict(vqa, id="bad:no_instruction", conversations=[
            {"role": "user", "content": "<image>"}, {"role": "assistant", "content": "yes"}]),
        dict(vqa, id="bad:no_answer", conversations=[{"role": "user", "content": "What?"}]),
        dict(vqa, id="bad:image", image_bytes=vqa["image_bytes"][:100]),
        dict(vqa, id="bad:long", conversations=[
            {"role": "user", "content": "Why? " * 200}, {"role": "assistant", "content": "no"}]),
        dict(vqa, id="text:only", image=None, image_bytes=None),
    ]
    table = to_table({k: [r[k] for r in rows] for k in SAMPLE_SCHEMA.names if k in rows[0]},
                     SAMPLE_SCHEMA)
    ds = Dataset(str(root), StorageConfig())
    ds.write_data("bad.parquet", table, table.slice(0, 0))
    ds.commit("bad", {"unit": "bad", "spec_hash": "x", "rows": table.num_rows, "rejects": 0,
                      "counts": {}, "rejects_per_reason": {}, "files": ["bad.parquet"],
                      "reject_files": []})
    return [r["id"] for r in rows]


def test_local_job_rewrites_rows_and_rejects_bad_ones(rewriter: str, tmp_path: Path) -> None:
    ids = _dataset_with_bad_rows(tmp_path / "in")
    spec = parse_spec({
        "kind": "rewrite", "inputs": [str(tmp_path / "in")], "output": {"path": str(tmp_path / "out")},
        "select": {"sources": ["synthetic_vl"]}, "ray": {"progress": False},
        "engine": {"kind": "flamingo", "model": rewriter, "batch_size": 4, "num_threads": 1,
                   "max_prompt_tokens": 400},
        "decoding": {"max_new_tokens": 6},
        # an untrained model never stops by itself: keep its outputs to look at them
        "checks": {"missing_eos": False, "repetition_loop": False}})
    (result,) = run_job(spec, executor="local")
    ds = Dataset(result.root, StorageConfig())
    kept = ds.read().to_pylist()
    rejects = {r["id"]: r for r in ds.read("rejects").to_pylist()}
    assert sorted([r["id"] for r in kept] + list(rejects)) == sorted(ids)
    reasons = {i: r["reason"] for i, r in rejects.items() if r["reason"] != "not_selected"}
    assert reasons == {"bad:no_instruction": "no_instruction", "bad:no_answer": "no_raw_answer",
                       "bad:image": "image_corrupt", "bad:long": "prompt_too_long"}
    assert Counter(r["reason"] for r in rejects.values())["not_selected"] == 4
    assert json.loads(rejects["bad:image"]["row"])["instruction"]
    by_id = {r["id"]: r for r in kept}
    assert "text:only" in by_id and by_id["text:only"]["image"] is None  # no image: text prompt
    assert len(kept) == 6 and {r["task"] for r in kept} == {
        "vqa", "captions", "boxes", "classification", "multiple_choice"}
    for r in kept:
        assert r["output"] and r["finish_reason"] == "length" and r["instruction"]
        assert "<image>" not in r["instruction"] and r["original"]
        assert json.loads(r["meta"])["seed"] == 2  # the input row's meta, ground truth kept
    boxes = next(r for r in kept if r["task"] == "boxes")
    assert "The followings are specific object locations" in boxes["original"]
    totals = result.manifest["totals"]
    assert totals["rows"] == 6 and totals["counts"]["task"]["vqa"] == 2
