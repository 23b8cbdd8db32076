"""The rewrite job on local Ray: the flamingo engine in an actor pool (tiny rewriter saved
at module scope), SIGKILL and resume, the http engine against a scripted OpenAI-compatible
server (request bodies, output checks) and against a dead one."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai_server
import pytest
from fastapi import FastAPI, Request

from pf_ray.cli import main
from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.jobs.runner import run_job
from pf_ray.jobs.shard import JobFailed
from pf_ray.rewrite.checks import REASONS
from pf_ray.specs import StorageConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]
N = 90  # 5 input shards of 18 rows; 50 raw-annotation rows (source synthetic_vl)
VL_TASKS = ("vqa", "captions", "boxes", "classification", "multiple_choice")


@pytest.fixture(scope="module")
def rewriter(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny preset saved as a model folder (what ``pf-ray convert --preset tiny`` writes)."""
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer

    folder = tmp_path_factory.mktemp("rewriter") / "tiny"
    save_pretrained(build_model("tiny"), folder, tokenizer=model_tokenizer("tiny"))
    return str(folder)


@pytest.fixture(scope="module")
def synthetic(ray_session: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("syn") / "synthetic")
    run_job(parse_spec({"kind": "synthetic", "n": N, "rows_per_shard": 18,
                        "output": {"path": root}, "ray": {"progress": False}}))
    return root


def flamingo(model: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "flamingo", "model": model, "batch_size": 8, "num_cpus": 1,
            "min_actors": 1, "max_actors": 2, "num_threads": 1, **extra}


def rewrite_spec(inputs: list[str], out: Path | str, engine: dict[str, Any], **extra: Any):  # type: ignore[no-untyped-def]
    return parse_spec({"kind": "rewrite", "inputs": inputs, "output": {"path": str(out)},
                       "select": {"sources": ["synthetic_vl"]}, "engine": engine,
                       "decoding": {"max_new_tokens": 6}, "ray": {"progress": False}, **extra})


def read_all(root: str | Path) -> tuple[list[dict], list[dict]]:
    ds = Dataset(str(root), StorageConfig())
    rows = ds.read().to_pylist() if ds.shard_files() else []
    rejects = ds.read("rejects").to_pylist() if ds.reject_files() else []
    return rows, rejects


def input_rows(root: str) -> list[dict]:
    return Dataset(root, StorageConfig()).read(
        columns=["id", "source", "task", "image_bytes"]).to_pylist()


def test_flamingo_actor_pool_counts_and_fault_policy(synthetic: str, rewriter: str,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "rw"
    # 1. an untrained rewriter never ends a response: most rows fail missing_eos or
    #    repetition_loop, more than faults.max_reject_fraction (0.5): nothing is committed
    with pytest.raises(JobFailed, match="missing_eos|repetition_loop") as info:
        run_job(rewrite_spec([synthetic], out, flamingo(rewriter)))
    assert "faults.max_reject_fraction 0.5" in str(info.value)
    assert not Dataset(str(out), StorageConfig()).committed()
    # 2. the same job accepting them (faults are not part of the shard names: a resume)
    spec = rewrite_spec([synthetic], out, flamingo(rewriter),
                        faults={"max_reject_fraction": 1.0})
    (result,) = run_job(spec)
    assert result.written == 5 and result.skipped == 0
    rows, rejects = read_all(out)
    inputs = input_rows(synthetic)
    assert sorted(r["id"] for r in rows + rejects) == sorted(r["id"] for r in inputs)
    per_source = Counter(r["source"] for r in inputs)
    dropped = Counter(json.loads(r["row"])["source"] for r in rejects
                      if r["reason"] != "not_selected")
    kept = Counter(r["source"] for r in rows)
    assert kept["synthetic_vl"] + dropped["synthetic_vl"] == per_source["synthetic_vl"] == 50
    assert Counter(r["reason"] for r in rejects)["not_selected"] == 40
    assert {r["reason"] for r in rejects} <= {"not_selected", *REASONS}
    for r in rejects:
        if r["reason"] in ("missing_eos", "repetition_loop"):
            assert json.loads(r["row"])["finish_reason"] in ("length", "eos", "stop")
    for r in rows:
        assert r["task"] in VL_TASKS and r["output"] and r["finish_reason"]
    totals = result.manifest["totals"]
    assert totals["rows"] == len(rows) and totals["rejects"] == len(rejects)
    # 3. a finished job writes nothing
    (again,) = run_job(spec)
    assert again.written == 0 and again.skipped == 5


def test_killed_job_resumes_with_each_id_once(ray_session: str, rewriter: str,
                                              tmp_path: Path) -> None:
    syn = str(tmp_path / "syn")
    run_job(parse_spec({"kind": "synthetic", "n": 360, "rows_per_shard": 18,
                        "output": {"path": syn}, "ray": {"progress": False}}))
    out = tmp_path / "rw"
    spec_file = tmp_path / "rewrite.yaml"
    spec_file.write_text(json.dumps({
        "kind": "rewrite", "inputs": [syn], "output": {"path": str(out)},
        "select": {"sources": ["synthetic_vl"]}, "decoding": {"max_new_tokens": 4},
        "engine": flamingo(rewriter, max_actors=1, batch_size=16),
        "faults": {"max_reject_fraction": 1.0}}))
    env = {**os.environ, "RAY_ADDRESS": ray_session, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "pf_ray.cli", "run", str(spec_file),
                             "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and len(list((out / "_markers").glob("*.json"))) < 2:
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(list((out / "_markers").glob("*.json")))
    assert 2 <= committed < 20
    # resumed on a bigger pool: where the engine runs is not part of the shard names
    spec = json.loads(spec_file.read_text())
    spec["engine"].update(max_actors=2, batch_size=32)
    (resumed,) = run_job(parse_spec(spec))
    assert resumed.skipped == committed and resumed.written == 20 - committed
    rows, rejects = read_all(out)
    ids = [r["id"] for r in rows] + [r["id"] for r in rejects]
    assert len(ids) == len(set(ids)) == 360


# --------------------------------------------------------------------- http engine


def scripted_app() -> FastAPI:
    """An OpenAI-compatible server that records each body and answers by the request's
    task: classification loops until its budget, multiple choice trails off in '...',
    everything else is a clean sentence quoting the draft."""
    app = FastAPI()
    app.state.bodies = []
    lock = threading.Lock()

    def answer(text: str) -> tuple[str, str]:
        if "What is this?" in text:
            return "a shape a shape a shape a shape a shape", "length"
        if "Choices:" in text:
            return "The answer is one of the colours...", "stop"
        draft = text.split("(Drafted Response) ")[-1].split("Draft response: ")[-1]
        return f"Revised: {draft.split(' (Revised')[0].splitlines()[0]}.", "stop"

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        body = await request.json()
        with lock:
            app.state.bodies.append(body)
        text, reason = answer(body["prompt"])
        return {"choices": [{"index": 0, "text": text, "finish_reason": reason}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        with lock:
            app.state.bodies.append(body)
        text, reason = answer(body["messages"][-1]["content"][-1]["text"])
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": reason}]}

    return app


def start_scripted() -> openai_server.Server:
    return openai_server.serve_app(scripted_app())


def image_of(uri: str) -> bytes:
    head, data = uri.split(",", 1)
    assert head == "data:image/png;base64"
    return base64.b64decode(data)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_http_engine_bodies_outputs_and_checks(synthetic: str, tmp_path: Path,
                                               api: str) -> None:
    server = start_scripted()
    try:
        engine = {"kind": "http", "api": api, "base_url": server.url, "model": "polite",
                  "batch_size": 8, "max_concurrency": 4}
        (result,) = run_job(rewrite_spec([synthetic], tmp_path / api, engine))
    finally:
        server.stop()
    bodies = server.app.state.bodies
    assert len(bodies) == 50  # one request per raw-annotation row
    images = {r["id"]: r["image_bytes"] for r in input_rows(synthetic)}
    pngs = set(images.values())
    for body in bodies:
        assert body["model"] == "polite" and body["max_tokens"] == 6
        assert body["temperature"] == 0.0 and "\n### Human:" in body["stop"]
        if api == "completions":
            assert body["prompt"].count("<image><|endofchunk|>") == 1
            assert len(body["images"]) == 1 and image_of(body["images"][0]) in pngs
        else:
            parts = body["messages"][-1]["content"]
            assert [p["type"] for p in parts] == ["image_url", "text"]
            assert image_of(parts[0]["image_url"]["url"]) in pngs
    rows, rejects = read_all(result.root)
    assert len(rows) + len(rejects) == N
    by_task = Counter((json.loads(r["row"])["task"], r["reason"]) for r in rejects
                      if r["reason"] != "not_selected")
    assert by_task == {("classification", "repetition_loop"): 10,
                       ("multiple_choice", "ellipsis_ending"): 10}
    assert Counter(r["task"] for r in rows) == {"vqa": 10, "captions": 10, "boxes": 10}
    for r in rows:
        assert r["output"] == f"Revised: {r['original'].splitlines()[0]}."
        assert r["finish_reason"] == "eos"
        assert r["image_bytes"] == images[r["id"]]


def test_dead_endpoint_fails_the_job_with_exit_1(synthetic: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{openai_server.free_port()}/v1"  # nothing listens there
    out = tmp_path / "rw"
    spec_file = tmp_path / "rewrite.yaml"
    spec_file.write_text(json.dumps({
        "kind": "rewrite", "inputs": [synthetic], "output": {"path": str(out)},
        "engine": {"kind": "http", "base_url": url, "model": "m", "batch_size": 8},
        "faults": {"retries": 1, "backoff_s": 0.1}}))
    assert main(["run", str(spec_file), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert url in err and "infrastructure fault" in err and "EngineUnavailable" in err
    ds = Dataset(str(out), StorageConfig())
    assert not ds.committed() and not ds.reject_files() and not ds.shard_files()
    manifest = ds.read_manifest()
    assert manifest is not None and manifest["totals"]["rejects"] == 0
