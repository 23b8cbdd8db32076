"""Infrastructure faults fail the job (nothing committed); a rerun resumes once it is fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openai_server
import pytest

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.engines.text import HFEngine
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(500)]
N = 90  # 3 input shards of 30 rows
PF_RAY = str(Path(sys.executable).parent / "pf-ray")


def test_dead_endpoint_fails_the_job_and_the_rerun_resumes(
        ray_session: str, tiny_lm_path: Path, tmp_path: Path) -> None:
    synthetic = str(tmp_path / "synthetic")
    run_job(parse_spec({"kind": "synthetic", "n": N, "rows_per_shard": 30,
                        "output": {"path": synthetic}, "ray": {"progress": False}}))
    port = openai_server.free_port()
    url = f"http://127.0.0.1:{port}/v1"
    out = tmp_path / "pairs"
    spec_file = tmp_path / "distort.yaml"
    spec_file.write_text(json.dumps({
        "kind": "distort", "inputs": [synthetic], "output": {"path": str(out)},
        "select": {"sources": ["synthetic_text", "synthetic_llava"]},
        "mixture": {"text": {"llm": 1.0}, "image": {"llm": 1.0}},
        "images": {"check": False}, "ray": {"progress": False},
        "pairs_per_conversation": "one_turn",  # one pair per sample: N ids
        "engine": {"kind": "http", "base_url": url, "model": "tiny", "batch_size": 8,
                   "max_concurrency": 2, "sampling": {"max_new_tokens": 12}},
        # a random tiny LM writes mostly unusable distortions (rejects, as they should be)
        "faults": {"retries": 2, "backoff_s": 0.5, "max_reject_fraction": 1.0}}))

    # 1. nothing listens on the port: the job fails, names the URL, commits nothing
    env = {**os.environ, "RAY_ADDRESS": ray_session}
    t0 = time.time()
    proc = subprocess.run([PF_RAY, "run", str(spec_file), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=300)
    seconds = time.time() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert seconds < 120
    assert url in proc.stderr and "llm_distort" in proc.stderr
    assert "infrastructure fault" in proc.stderr
    dataset = Dataset(str(out), StorageConfig())
    assert not dataset.committed()
    manifest = dataset.read_manifest()
    assert manifest is not None and manifest["totals"]["shards"] == 0
    assert manifest["runs"][-1]["units_failed"] >= 1

    # 2. a server comes up on that port: the rerun completes, every id exactly once
    server = openai_server.start(HFEngine(model=str(tiny_lm_path)), "tiny", port=port)
    try:
        proc = subprocess.run([PF_RAY, "run", str(spec_file), "--no-progress", "--json"],
                              env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout[proc.stdout.index("["):])
    assert result[0]["kind"] == "distort" and result[0]["run"]["shards_written"] == 3
    rows = dataset.read(columns=["id"]).column("id").to_pylist()
    rejects = dataset.read("rejects", columns=["id"]).column("id").to_pylist()
    ids = rows + rejects
    assert len(ids) == N and len(set(ids)) == N
    assert server.app.state.requests > 0
