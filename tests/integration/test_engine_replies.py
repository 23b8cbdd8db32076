"""An endpoint that answers HTTP 200 with something that is no completion fails the job:
exit 1, no marker, nothing in rejects/; once it answers properly, the rerun commits every
id exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]
PF_RAY = str(Path(sys.executable).parent / "pf-ray")
N = 12  # 2 input shards of 6 synthetic rows (4 of them raw VL annotations each)
STATE: dict[str, Any] = {"mode": "html", "requests": 0}


class _Server(BaseHTTPRequestHandler):
    """``html``: a proxy's error page with status 200; ``ok``: an OpenAI completion."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        STATE["requests"] += 1
        if STATE["mode"] == "html":
            data, kind = b"<html><body>Service temporarily unavailable</body></html>", "text/html"
        else:
            data = json.dumps({"id": "c", "object": "text_completion", "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "text": " The picture shows a red square, which "
                                                    "is the answer to your question."}]}).encode()
            kind = "application/json"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_200_that_is_not_json_fails_the_job_and_the_rerun_resumes(
        ray_session: str, endpoint: str, tmp_path: Path) -> None:
    synthetic = str(tmp_path / "synthetic")
    run_job(parse_spec({"kind": "synthetic", "n": N, "rows_per_shard": 6,
                        "output": {"path": synthetic}}), executor="local")
    out = tmp_path / "rewrites"
    spec_file = tmp_path / "rewrite.yaml"
    spec_file.write_text(json.dumps({
        "kind": "rewrite", "inputs": [synthetic], "output": {"path": str(out)},
        "select": {"sources": ["synthetic_vl"]}, "ray": {"progress": False},
        "engine": {"kind": "http", "base_url": endpoint, "model": "rewriter",
                   "batch_size": 4, "max_concurrency": 2},
        "faults": {"retries": 1, "backoff_s": 0.1}}))
    env = {**os.environ, "RAY_ADDRESS": ray_session}

    STATE["mode"] = "html"
    proc = subprocess.run([PF_RAY, "run", str(spec_file), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "HTTP 200 but the body is not JSON" in proc.stderr
    assert "infrastructure fault" in proc.stderr and STATE["requests"] > 0
    dataset = Dataset(str(out), StorageConfig())
    assert not dataset.committed()
    assert not dataset.shard_files() and not dataset.reject_files()
    assert not [p for p in out.rglob("*.parquet")]  # no part of a unit written anywhere

    STATE["mode"] = "ok"
    proc = subprocess.run([PF_RAY, "run", str(spec_file), "--no-progress", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = (dataset.read(columns=["id"]).column("id").to_pylist()
           + dataset.read("rejects", columns=["id"]).column("id").to_pylist())
    assert len(ids) == N and len(set(ids)) == N
    kept = dataset.read().to_pylist()
    assert kept and all(r["output"].startswith("The picture shows") for r in kept)
