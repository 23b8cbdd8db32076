"""The eval job on local Ray, tiny models end to end: a tiny Clever Flamingo export answering
in an actor pool, the same export behind pf-ray's Serve app answering over HTTP (greedy:
the same answers), raw annotations from the dataset, a tiny random reward model and a
tiny NLI judge; tables, plots and the report; bad images as rejects; a dead endpoint
and a missing model fail the job."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.jobs.runner import run_job
from pf_ray.jobs.shard import JobFailed
from pf_ray.specs import StorageConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
N = 90  # 2 shards of 45 synthetic rows: 10 VQA questions, 10 captions
APP = "pf-ray-eval-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny Clever Flamingo export (gates open: answers depend on the images) and tiny
    random scorers (reward: 1 logit; NLI: 3 labels, its logits pinned to 'entailment')."""
    import torch

    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer
    from pf_ray.scorers.tiny import build_classifier

    root = tmp_path_factory.mktemp("eval_models")
    model = build_model("tiny", seed=0)
    with torch.no_grad():
        for block in model.gated_cross_attn_layers.values():
            block.attn_gate.fill_(1.0)
            block.ff_gate.fill_(0.5)
    save_pretrained(model, root / "clever", model_tokenizer("tiny"))
    return {"clever": str(root / "clever"),
            "reward": str(build_classifier(root / "reward", 1, seed=2)),
            "nli": str(build_classifier(root / "nli", 3, seed=1, bias=[0.0, 1.0, 0.0]))}


@pytest.fixture(scope="module")
def synthetic(ray_session: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("eval_syn") / "synthetic")
    run_job(parse_spec({"kind": "synthetic", "n": N, "rows_per_shard": 45,
                        "output": {"path": root}, "ray": {"progress": False}}))
    return root


@pytest.fixture(scope="module")
def served(ray_session: str, models: dict[str, str]) -> Iterator[str]:
    """The same export on Ray Serve (one replica); yields its /v1 base URL."""
    from ray import serve

    from pf_ray.serve.launch import start
    from pf_ray.serve.spec import ServeSpec

    spec = ServeSpec(kind="serve", model=models["clever"], app_name=APP, port=free_port(),
                     api_key_env=None,
                     deployment={"num_replicas": 1, "cpus_per_replica": 0.5,
                                 "torch_threads": 1},
                     batching={"max_batch_size": 8, "batch_wait_timeout_s": 0.02})
    url = start(spec)
    yield url.rstrip("/") + "/v1"
    serve.delete(APP)
    serve.shutdown()


def model_source(name: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "model", "name": name, "model": path, "batch_size": 8, "num_cpus": 1,
            "num_threads": 1, **extra}


def eval_spec(out: Path, sets: list[dict[str, Any]], sources: list[dict[str, Any]],
              **extra: Any) -> Any:
    return parse_spec({"kind": "eval", "output": {"path": str(out)}, "sets": sets,
                       "sources": sources, "decoding": {"max_new_tokens": 6},
                       "ray": {"progress": False}, "faults": {"retries": 0, "backoff_s": 0},
                       **extra})


def answers(root: Path) -> dict[tuple[str, str], str]:
    rows = Dataset(str(root), StorageConfig()).read(
        columns=["item", "answerer", "output"]).to_pylist()
    return {(r["item"], r["answerer"]): r["output"] for r in rows}


def test_politeness_and_understanding_end_to_end(synthetic: str, models: dict[str, str],
                                                 tmp_path: Path) -> None:
    out = tmp_path / "eval"
    spec = eval_spec(out, [
        {"name": "VQA", "path": synthetic, "tasks": ["vqa"], "metric": "nli"},
        {"name": "Captions", "path": synthetic, "tasks": ["captions"], "metric": "rouge_l",
         "samples": 6},
        {"name": "Synthetic-GT", "path": synthetic, "tasks": ["vqa"],
         "metric": "answer_match", "samples": 4}],
        [{"kind": "dataset", "name": "raw"}, model_source("clever", models["clever"])],
        politeness={"model": models["reward"]},
        understanding={"nli": {"model": models["nli"]}})
    (result,) = run_job(spec)
    rows = Dataset(str(out), StorageConfig()).read().to_pylist()
    # every source answered the same items: 10 VQA + 6 captions + 4 sampled VQA
    items = {(r["set"], r["item"]) for r in rows}
    assert len(items) == 20
    for source in ("raw", "clever"):
        assert {(r["set"], r["item"]) for r in rows if r["answerer"] == source} == items
    assert all(r["reward"] is not None for r in rows)
    raw = {r["item"]: r for r in rows if r["answerer"] == "raw" and r["set"] == "Captions"}
    for r in raw.values():  # the raw annotation scores against its own references
        assert r["rouge_l"] is not None and r["score"] == r["rouge_l"]
    # the NLI judge's logits are pinned to entailment: every VQA answer is judged correct
    assert {r["score"] for r in rows if r["set"] == "VQA"} == {1.0}
    # the raw annotation states its own ground truth
    assert {r["score"] for r in rows if r["set"] == "Synthetic-GT"
            and r["answerer"] == "raw"} == {1.0}
    res = result.results
    matrix = res["politeness"]["win_rates"]
    assert matrix["clever"]["raw"]["n"] == 20
    assert matrix["clever"]["raw"]["win_rate"] + matrix["raw"]["clever"]["win_rate"] == \
        pytest.approx(1.0)
    assert res["understanding"]["VQA"]["clever"]["score"] == 1.0
    assert res["sets"]["Captions"] == {"metric": "rouge_l", "path": synthetic,
                                      "eligible": 10, "taken": 6}
    # the files under the output folder, and the report including them
    tables = (out / "tables.md").read_text()
    assert "## Table 1 layout" in tables and "## Politeness" in tables
    assert "| clever |" in tables and "Median reward" in tables
    assert json.loads((out / "results.json").read_text())["sources"] == ["raw", "clever"]
    for png in ("reward_distributions.png", "median_reward.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from pf_ray.cli import main

    assert main(["report", str(out), "--out", str(tmp_path / "card")]) == 0
    card = (tmp_path / "card" / "README.md").read_text()
    assert "### Politeness" in card and "reward_distributions.png" in card
    assert (tmp_path / "card" / "reward_distributions.png").exists()
    # a rerun resumes: nothing to answer again, same tables
    (again,) = run_job(spec)
    assert again.shards.written == 0 and again.results["politeness"] == res["politeness"]


def test_served_app_and_checkpoint_give_the_same_greedy_answers(
        synthetic: str, models: dict[str, str], served: str, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    spec = eval_spec(out, [{"name": "VQA", "path": synthetic, "tasks": ["vqa"],
                            "metric": "answer_match"}],
                     [model_source("checkpoint", models["clever"]),
                      {"kind": "http", "name": "served", "base_url": served,
                       "model": "clever-flamingo", "max_concurrency": 4}])
    run_job(spec)
    got = answers(out)
    items = sorted({i for i, _ in got})
    assert len(items) == 10
    assert [got[(i, "served")] for i in items] == [got[(i, "checkpoint")] for i in items]
    assert any(got[(i, "served")] for i in items)  # not all empty


def test_two_image_items_served_and_checkpoint_agree(
        synthetic: str, models: dict[str, str], served: str, tmp_path: Path) -> None:
    """Rows with a before and an after image (``extra_images``) through the Ray job: the
    checkpoint (model source, both images in one human turn) and the served app (http
    source, two image_url parts) give the same greedy answers; a row whose second image is
    missing is a reject of both sources naming image 2."""
    from pf_ray.data.schema import SAMPLE_SCHEMA

    src = Dataset(synthetic, StorageConfig())
    rows = [r for r in pq.read_table(src.shard_files()[0]).to_pylist() if r["task"] == "vqa"]
    assert len(rows) >= 3 and all(r.get("extra_images") is None for r in rows)
    for r, after in zip(rows, rows[1:] + rows[:1], strict=True):  # the after image: another
        r["extra_images"] = [{"image": after["image"], "image_bytes": after["image_bytes"]}]
    rows[0]["extra_images"] = [{"image": str(tmp_path / "gone.png"), "image_bytes": None}]
    two_root = tmp_path / "two"
    run_job(parse_spec({"kind": "synthetic", "n": 1, "output": {"path": str(two_root)},
                        "ray": {"progress": False}}))
    shard = Dataset(str(two_root), StorageConfig()).shard_files()[0]  # its rows replaced
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), shard)
    out = tmp_path / "eval"
    run_job(eval_spec(out, [{"name": "Change", "path": str(two_root), "tasks": ["vqa"],
                             "metric": "answer_match"}],
                      [model_source("checkpoint", models["clever"]),
                       {"kind": "http", "name": "served", "base_url": served,
                        "model": "clever-flamingo", "max_concurrency": 4}],
                      faults={"max_reject_fraction": 1.0}))
    got = answers(out)
    items = sorted({i for i, _ in got})
    assert items == sorted(r["id"] for r in rows[1:])
    assert [got[(i, "served")] for i in items] == [got[(i, "checkpoint")] for i in items]
    assert any(got[(i, "served")] for i in items)
    rejects = Dataset(str(out), StorageConfig()).read("rejects").to_pylist()
    assert {r["id"].rsplit("@", 1)[1] for r in rejects} == {"checkpoint", "served"}
    assert {r["reason"] for r in rejects} == {"image_missing"}
    assert all(r["detail"].startswith("image 2 of 2: ") for r in rejects)


def test_bad_images_are_rejects_and_dead_infrastructure_fails(
        synthetic: str, models: dict[str, str], tmp_path: Path) -> None:
    # a dataset whose images are not images: the model source rejects those rows (reason
    # image_not_image); the raw answers of the same items are kept
    src = Dataset(synthetic, StorageConfig())
    table = pq.read_table(src.shard_files()[0])
    rows = table.to_pylist()
    broken = {r["id"] for r in rows if r["task"] == "vqa"}
    for r in rows:
        if r["id"] in broken:
            r["image"], r["image_bytes"] = None, b"not an image"
    bad_root = tmp_path / "bad"
    run_job(parse_spec({"kind": "synthetic", "n": 1, "output": {"path": str(bad_root)},
                        "ray": {"progress": False}}))
    shard = Dataset(str(bad_root), StorageConfig()).shard_files()[0]  # its rows replaced
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    out = tmp_path / "eval"
    run_job(eval_spec(out, [{"name": "VQA", "path": str(bad_root), "tasks": ["vqa"],
                             "metric": "answer_match"}],
                      [{"kind": "dataset", "name": "raw"},
                       model_source("clever", models["clever"])],
                      faults={"max_reject_fraction": 1.0}))
    data = Dataset(str(out), StorageConfig())
    rejects = data.read("rejects").to_pylist()
    assert {r["reason"] for r in rejects} == {"image_not_image"}
    assert {r["id"].rsplit("@", 1)[1] for r in rejects} == {"clever"}
    assert {r["id"].rsplit("@", 1)[0].split("/", 1)[1] for r in rejects} == broken
    kept = data.read(columns=["answerer"]).to_pylist()
    assert sum(r["answerer"] == "raw" for r in kept) == len(broken)
    # a dead endpoint and a missing model fail the job; nothing is committed
    for source in ({"kind": "http", "name": "dead", "base_url": f"http://127.0.0.1:"
                    f"{free_port()}/v1", "model": "m"},
                   model_source("missing", str(tmp_path / "no-such-model"))):
        dead = tmp_path / f"dead-{source['name']}"
        with pytest.raises(JobFailed, match="EngineUnavailable|ModelUnavailable"):
            run_job(eval_spec(dead, [{"name": "VQA", "path": synthetic, "tasks": ["vqa"],
                                      "metric": "answer_match"}], [source]))
        assert not Dataset(str(dead), StorageConfig()).committed()
