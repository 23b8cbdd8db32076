"""The filter kind without Ray: spec errors, the whole chain in process, top-k, stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tiny_filter_models import (
    CASES,
    build_classifier,
    build_tiny_clip,
    case_rows,
    write_rewrite_dataset,
)

from pf_ray.config import SpecError, parse_spec
from pf_ray.data.io import Dataset
from pf_ray.filters.plan import plan_filter
from pf_ray.filters.stats import merge_sketches, sketch
from pf_ray.jobs.runner import run_job
from pf_ray.jobs.shard import JobFailed
from pf_ray.specs import StorageConfig


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {"clip": str(build_tiny_clip(root / "clip.pt")),
            "nli": str(build_classifier(root / "nli", 3, bias=[0.0, 3.0, 1.0])),
            "reward": str(build_classifier(root / "reward", 1, seed=2))}


def spec(inputs: str, out: str, models: dict[str, str], **extra: Any) -> Any:
    body = {"kind": "filter", "inputs": [inputs], "output": {"path": out},
            "ray": {"progress": False}, "pool": {"device": "cpu", "batch_size": 8},
            "clip": {"model_name": "pf-tiny-vit", "pretrained": models["clip"],
                     "threshold": -1000.0},
            "nli": {"model": models["nli"]}, "reward": {"model": models["reward"]}}
    for k, v in extra.items():
        body[k] = {**body.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_spec(body)


def test_spec_errors_name_the_fields() -> None:
    with pytest.raises(SpecError, match="nli.model, reward.model: required"):
        parse_spec({"kind": "filter", "inputs": ["x"], "output": {"path": "y"},
                    "clip": {"enabled": False}})
    with pytest.raises(SpecError, match="top_k is a second pass.*length, change"):
        parse_spec({"kind": "filter", "inputs": ["x"], "output": {"path": "y"},
                    "top_k": {"k": 3}, "sts": {"enabled": False},
                    **{f: {"enabled": False} for f in ("clip", "nli", "reward")}})
    with pytest.raises(SpecError, match="nli.labels"):
        parse_spec({"kind": "filter", "inputs": ["x"], "output": {"path": "y"},
                    "nli": {"labels": ["a", "b", "c"]}})


def test_chain_in_process(tmp_path: Path, models: dict[str, str]) -> None:
    rows = case_rows(2)
    src = str(tmp_path / "rewrite")
    write_rewrite_dataset(src, rows, rows_per_shard=7)
    job = spec(src, str(tmp_path / "pf1m"), models)
    plan = plan_filter(job)
    assert [s.name for s in plan.steps] == ["length", "change", "sts", "clip", "nli", "reward"]
    [result] = run_job(job, executor="local")
    ds = Dataset(str(tmp_path / "pf1m"), StorageConfig())
    kept = ds.read().to_pylist()
    rejects = ds.read("rejects").to_pylist()
    assert len(kept) + len(rejects) == len(rows)
    fate = {r["id"]: r["reason"] for r in rejects}
    for r, case in zip(rows, CASES * 2, strict=True):
        assert fate.get(r["id"]) == case[4], r["id"]
    by_id = {r["id"]: r for r in kept}
    for r in kept:  # every applicable score on every kept row, null elsewhere
        assert r["length"] is not None and r["rouge_score"] is not None
        assert r["reward"] is not None
        assert (r["sts_similarity"] is not None) == (r["task"] in ("captions", "region_caption"))
        assert (r["nli_similarity"] is not None) == (r["task"] in ("vqa", "multiple_choice"))
        assert (r["paragraph_clip_scores"] is not None) == ("\n\n" in r["output"])
    multi = [r for r in by_id.values() if r["paragraph_clip_scores"]]
    assert multi and all(len(r["paragraph_clip_scores"]) == 2 for r in multi)
    manifest = ds.read_manifest()
    summary = manifest["summary"]
    assert summary["filters"]["sts"]["dropped"] == 2
    assert summary["filters"]["length"]["scored"] == len(rows)
    assert summary["rows"]["in"]["source"]["vqav2"] == 6
    assert summary["scores"]["kept"]["reward"]["count"] == len(kept)
    assert manifest["totals"]["rejects_per_reason"] == {
        "filter_length_short": 2, "filter_unchanged": 2, "filter_sts": 2}
    assert result.manifest["totals"]["rows"] == len(kept)

    # top-k: a second pass over the filtered dataset keeps the k best rewards exactly
    top = spec(str(tmp_path / "pf1m"), str(tmp_path / "top"), models, top_k={"k": 5},
               **{f: {"enabled": False} for f in ("length", "change", "sts", "clip", "nli",
                                                   "reward")})
    run_job(top, executor="local")
    best = sorted(kept, key=lambda r: (-r["reward"], r["id"]))[:5]
    got = Dataset(str(tmp_path / "top"), StorageConfig()).read().to_pylist()
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in best)
    assert got[0]["sts_similarity"] == by_id[got[0]["id"]]["sts_similarity"]  # scores kept


def test_missing_model_fails_the_job_and_commits_nothing(tmp_path: Path,
                                                         models: dict[str, str]) -> None:
    src = str(tmp_path / "rewrite")
    write_rewrite_dataset(src, case_rows(1), rows_per_shard=5)
    job = spec(src, str(tmp_path / "pf1m"), models, nli={"model": str(tmp_path / "gone")},
               faults={"retries": 0})
    with pytest.raises(JobFailed, match="infrastructure fault.*gone"):
        run_job(job, executor="local")
    ds = Dataset(str(tmp_path / "pf1m"), StorageConfig())
    assert ds.committed() == {} and ds.reject_files() == []
    assert not list((tmp_path / "pf1m").glob("rejects/*"))


def test_shard_names_ignore_where_models_run(models: dict[str, str]) -> None:
    from pf_ray.filters.plan import filter_hash

    a = spec("in", "out", models)
    b = spec("in", "out2", models, pool={"num_gpus": 0.5, "max_actors": 8},
             nli={"pool": {"batch_size": 4}})
    c = spec("in", "out", models, sts={"threshold": 0.5})
    assert filter_hash(a) == filter_hash(b) != filter_hash(c)


def test_sketch_merge() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0, 100.0], [5.0, 6.0]
    one = merge_sketches([sketch(a)])
    assert one == {"count": 5, "mean": 22.0, "p50": 3.0, "min": 1.0, "max": 100.0}
    two = merge_sketches([sketch(a), sketch(b), sketch([])])
    assert two["count"] == 7 and two["mean"] == pytest.approx(121 / 7)
    assert two["min"] == 1.0 and two["max"] == 100.0 and 3.0 <= two["p50"] <= 5.0
