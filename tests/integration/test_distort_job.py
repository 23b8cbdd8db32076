"""The distortion job on local Ray: every family, every engine but vllm (tests/vllm), exact
targets, one pair per assistant turn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import openai_server
import pyarrow.parquet as pq
import pytest

from pf_ray.config import parse_spec
from pf_ray.data.conversation import expand_turns
from pf_ray.data.io import Dataset
from pf_ray.data.schema import SAMPLE_SCHEMA, to_table
from pf_ray.data.synthetic import generate
from pf_ray.engines.text import HFEngine
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]
N = 540  # 6 input shards of 90 rows
CLEAN = ["synthetic_llava", "synthetic_text"]


@pytest.fixture(scope="module")
def synthetic_root(ray_session: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("syn") / "synthetic")
    run_job(parse_spec({"kind": "synthetic", "n": N, "rows_per_shard": 90,
                        "output": {"path": root}, "ray": {"progress": False}}))
    return root


def distort_spec(inputs: list[str], out: str, **extra: object):  # type: ignore[no-untyped-def]
    return parse_spec({"kind": "distort", "inputs": inputs, "output": {"path": out},
                       "ray": {"progress": False}, **extra})


def read_all(root: str) -> tuple[list[dict], list[dict]]:
    ds = Dataset(root, StorageConfig())
    rows = ds.read().to_pylist()
    try:
        rejects = ds.read("rejects").to_pylist()
    except FileNotFoundError:
        rejects = []
    return rows, rejects


def pair_ids(root: str, sources: list[str] | None = None) -> list[str]:
    """The ids of the pairs a dataset gives: one per assistant turn (``<id>#t<turn>``)."""
    table = Dataset(root, StorageConfig()).read(columns=["id", "source", "conversations"])
    ids = expand_turns(table.to_pydict())
    return [i for i, s in zip(ids["id"], ids["source"], strict=True)
            if sources is None or s in sources]


def hf_engine(path: Path) -> dict:
    return {"kind": "hf", "model": str(path), "batch_size": 8, "min_actors": 1,
            "max_actors": 2, "num_cpus": 0.5, "sampling": {"max_new_tokens": 24}}


def test_all_families_with_the_hf_engine(synthetic_root: str, tiny_lm_path: Path,
                                         tmp_path: Path) -> None:
    spec = distort_spec([synthetic_root], str(tmp_path / "pairs"), boxes_from=synthetic_root,
                        select={"sources": CLEAN}, engine=hf_engine(tiny_lm_path),
                        mixture={"per_source": {"synthetic_text": {"llm": 1.0}}},
                        llm_reject_longer=True)
    (result,) = run_job(spec)
    rows, rejects = read_all(spec.output.path)
    expected = pair_ids(synthetic_root)  # one pair per assistant turn
    assert len(expected) > N and len(rows) + len(rejects) == len(expected)
    assert {r["id"] for r in rows} | {r["id"] for r in rejects} == set(expected)
    families = {r["family"] for r in rows}
    assert {"augment", "boxes"} <= families
    reasons = {r["reason"] for r in rejects}
    assert "not_selected" in reasons
    llm_rows = [r for r in rows if r["family"] == "llm"]
    llm_rejects = [r for r in rejects if r["stage"] == "llm_distort"]
    assert len(llm_rows) + len(llm_rejects) >= 60  # every text row went to the engine
    assert all(r["reason"].startswith("llm_") for r in llm_rejects)
    for r in llm_rows:
        assert r["distorted"] and len(r["distorted"]) <= len(r["original"])
        assert '"' not in r["distorted"] and "###" not in r["distorted"]
    for r in rows:
        if r["family"] == "boxes":
            assert "The followings are specific object locations" in r["distorted"]
            assert r["task"] == "detail" and r["style"] == "captions_boxes"
    counts = result.manifest["totals"]["counts"]
    assert set(counts["family"]) == families and "captions_boxes" in counts["style"]


def test_http_engine_against_a_loopback_server(synthetic_root: str, tiny_lm_path: Path,
                                               tmp_path: Path) -> None:
    server = openai_server.start(HFEngine(model=str(tiny_lm_path)), "tiny")
    try:
        common = {"select": {"sources": ["synthetic_text"]},
                  "mixture": {"per_source": {"synthetic_text": {"llm": 1.0}}},
                  "images": {"check": False}}
        http = {"kind": "http", "base_url": server.url, "model": "tiny", "batch_size": 4,
                "max_concurrency": 2, "sampling": {"max_new_tokens": 16}}
        (res_http,) = run_job(distort_spec([synthetic_root], str(tmp_path / "http"),
                                           engine=http, **common))
        assert server.app.state.requests == N // 9  # one request per text row
        hf = {**hf_engine(tiny_lm_path), "batch_size": 1, "sampling": {"max_new_tokens": 16}}
        (res_hf,) = run_job(distort_spec([synthetic_root], str(tmp_path / "hf"), engine=hf,
                                         **common))
    finally:
        server.stop()
    http_rows, http_rejects = read_all(res_http.root)
    hf_rows, hf_rejects = read_all(res_hf.root)
    assert len(http_rows) + len(http_rejects) == len(pair_ids(synthetic_root))
    # the same greedy model behind HTTP gives the same pairs and the same rejects
    assert sorted((r["id"], r["distorted"]) for r in http_rows) == sorted(
        (r["id"], r["distorted"]) for r in hf_rows)
    assert sorted((r["id"], r["reason"]) for r in http_rejects) == sorted(
        (r["id"], r["reason"]) for r in hf_rejects)


def _bad_rows_dataset(root: Path) -> int:
    """A sample dataset whose rows break the distort job in every documented way."""
    good = generate(1, 0, 18)
    rows = [{k: good[k][i] for k in good} for i in range(18)]
    broken = dict(rows[0], id="bad:no_assistant",
                  conversations=[{"role": "user", "content": "hello?"}])
    blank = dict(rows[0], id="bad:blank",
                 conversations=[{"role": "user", "content": "q"},
                                {"role": "assistant", "content": " \n "}])
    huge = dict(rows[0], id="bad:huge", conversations=[{"role": "user", "content": "q"},
                                                       {"role": "assistant", "content": "x. " * 5000}])
    corrupt = dict(rows[0], id="bad:image", image_bytes=rows[0]["image_bytes"][:169])
    rows += [broken, blank, huge, corrupt]
    table = to_table({k: [r[k] for r in rows] for k in SAMPLE_SCHEMA.names if k in rows[0]},
                     SAMPLE_SCHEMA)
    ds = Dataset(str(root), StorageConfig())
    ds.write_data("bad.parquet", table, table.slice(0, 0))
    ds.commit("bad", {"unit": "bad", "spec_hash": "x", "rows": table.num_rows, "rejects": 0,
                      "counts": {}, "rejects_per_reason": {}, "files": ["bad.parquet"],
                      "reject_files": []})
    return table.num_rows


def test_bad_rows_land_in_rejects(ray_session: str, tiny_lm_path: Path, tmp_path: Path) -> None:
    n = _bad_rows_dataset(tmp_path / "bad")
    spec = distort_spec([str(tmp_path / "bad")], str(tmp_path / "out"), max_chars=4000,
                        engine=hf_engine(tiny_lm_path))
    (result,) = run_job(spec)
    rows, rejects = read_all(spec.output.path)
    assert n == 22 and len(rows) + len(rejects) == len(pair_ids(str(tmp_path / "bad")))
    by_id = {r["id"]: r for r in rejects}
    assert by_id["bad:no_assistant"]["reason"] == "no_assistant_turn"  # no pair: its own id
    assert by_id["bad:blank#t1"]["reason"] == "empty_text"
    assert by_id["bad:huge#t1"]["reason"] == "text_too_long"
    assert by_id["bad:image#t1"]["reason"] == "image_corrupt"
    assert json.loads(by_id["bad:image#t1"]["row"])["id"] == "bad:image#t1"
    assert result.manifest["totals"]["rejects"] == len(rejects)


def test_same_spec_gives_byte_identical_shards(synthetic_root: str, tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        spec = distort_spec([synthetic_root], str(tmp_path / name), boxes_from=synthetic_root,
                            select={"sources": ["synthetic_llava"]})
        (res,) = run_job(spec)
        ds = Dataset(res.root, StorageConfig())
        outs.append({Path(f).name: Path(f).read_bytes() for f in ds.shard_files()})
    assert outs[0] == outs[1] and len(outs[0]) == 6


def test_killed_job_resumes_and_finished_job_writes_nothing(ray_session: str,
                                                           tmp_path: Path) -> None:
    syn = str(tmp_path / "syn")
    run_job(parse_spec({"kind": "synthetic", "n": 6000, "rows_per_shard": 150,
                        "image_size": 160, "output": {"path": syn}, "ray": {"progress": False}}))
    out = tmp_path / "pairs"
    spec_file = tmp_path / "distort.yaml"
    spec_file.write_text(json.dumps({"kind": "distort", "inputs": [syn], "output": {"path": str(out)},
                                     "select": {"sources": ["synthetic_llava"]}}))
    env = {**os.environ, "RAY_ADDRESS": ray_session, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "pf_ray.cli", "run", str(spec_file),
                             "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "_markers").glob("*.json"))) < 3:
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(list((out / "_markers").glob("*.json")))
    assert 3 <= committed < 40
    spec = parse_spec(json.loads(spec_file.read_text()))
    (resumed,) = run_job(spec)
    assert resumed.skipped == committed and resumed.written == 40 - committed
    rows, rejects = read_all(str(out))
    ids = [r["id"] for r in rows] + [r["id"] for r in rejects]
    assert len(ids) == len(set(ids)) == len(pair_ids(syn))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    (again,) = run_job(spec)
    assert again.written == 0 and again.skipped == 40
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()} == before
    assert pq.read_table(next((out / "shards").iterdir())).num_rows > 0


TARGETS = [  # filled in order: the captions+boxes pool first
    {"family": "boxes", "sources": ["synthetic_llava"], "tasks": ["detail"], "pairs": 30},
    {"family": "llm", "sources": ["synthetic_text"], "pairs": 20},
    {"family": "augment", "sources": ["synthetic_llava"], "pairs": 100},
    {"family": "augment", "sources": ["synthetic_text", "synthetic_llava"], "pairs": 25},
]


def test_targets_give_exact_counts_per_family_and_source(synthetic_root: str,
                                                          tiny_lm_path: Path,
                                                          tmp_path: Path) -> None:
    spec = distort_spec([synthetic_root], str(tmp_path / "pairs"), boxes_from=synthetic_root,
                        engine=hf_engine(tiny_lm_path), targets=TARGETS)
    (result,) = run_job(spec)
    rows, rejects = read_all(spec.output.path)
    assert len(rows) + len(rejects) == len(pair_ids(synthetic_root))
    cells = Counter((r["family"], r["source"]) for r in rows)
    llm_rejects = [r for r in rejects if r["stage"] == "llm_distort"]
    # the LLM's unusable outputs are rejects (a random tiny LM writes some), not replaced
    assert cells[("llm", "synthetic_text")] + len(llm_rejects) == 20
    assert all(r["reason"] in ("llm_empty", "llm_unchanged", "llm_refusal") for r in llm_rejects)
    assert cells[("boxes", "synthetic_llava")] == 30
    assert cells[("augment", "synthetic_llava")] + cells[("augment", "synthetic_text")] == 125
    assert cells[("augment", "synthetic_text")] <= 25  # the mixed target's share
    assert set(cells) <= {("boxes", "synthetic_llava"), ("llm", "synthetic_text"),
                          ("augment", "synthetic_llava"), ("augment", "synthetic_text")}
    others = Counter(r["reason"] for r in rejects if r["stage"] != "llm_distort")
    assert set(others) == {"not_selected"}
    manifest = result.manifest
    counts = manifest["totals"]["counts"]
    assert counts["family"] == dict(Counter(r["family"] for r in rows))
    assert counts["source"] == dict(Counter(r["source"] for r in rows))
    selection = manifest["spec"]["selection"]
    assert [s["pairs"] for s in selection] == [30, 20, 100, 25]
    assert selection[0]["eligible"] == 60  # the 60 detailed descriptions (N / 9)
