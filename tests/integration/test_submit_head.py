"""The whole small pipeline submitted to a real Ray head, twice: ``pf-ray submit`` and
plain ``ray job submit --working-dir . -- pf-ray run SPEC``.

The head is a separate ``ray start --head`` on 127.0.0.1 (2 CPUs, its own temp dir and
ports, the dashboard's Jobs API), not the session's in-process Ray: what a user gets on a
cluster. ``jobs/quickstart_pipeline.yaml`` (synthetic -> distort -> train the tiny
rewriter -> rewrite -> filter -> eval) runs as the job; every stage's outputs are checked
(each input id is in the output or in rejects, the exported model and the filtered shards
load, the eval's answers and tables).
The head is stopped by process id (its processes are found through its temp dir): ``ray
stop`` would stop every Ray on the machine, the session's fixture included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPEC = "jobs/quickstart_pipeline.yaml"
BIN = Path(sys.executable).parent
SECRET = "not-a-real-secret-9f3a1c"  # must never appear in pf-ray submit's output


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Head:
    url: str
    temp_dir: Path
    env: dict[str, str]


def _head_processes(temp_dir: Path) -> list[Any]:
    """Every process of the head: those naming its temp dir and their descendants."""
    import psutil

    roots = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in part for part in p.info["cmdline"] or []):
                roots.append(p)
        except psutil.Error:
            continue
    found = {p.pid: p for p in roots}
    for p in roots:
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            continue
    return list(found.values())


def _stop_head(temp_dir: Path) -> None:
    import psutil

    procs = _head_processes(temp_dir)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    _, alive = psutil.wait_procs(procs, timeout=20)
    assert not alive, f"head processes still alive: {[p.pid for p in alive]}"


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    # a short temp dir: Ray's unix socket paths must stay under ~107 characters
    temp_dir = Path(tempfile.mkdtemp(prefix="pfh", dir="/tmp"))
    (gcs, dash, client, agent_http, agent_grpc, metrics, node_mgr, obj_mgr,
     env_agent) = _free_ports(9)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
           "--include-dashboard=true", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent_http}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
           f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
           f"--runtime-env-agent-port={env_agent}",
           "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats",
           '--resources={"pf_driver": 100}']
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, f"ray start failed: {out.stdout[-2000:]}{out.stderr[-2000:]}"
        url = f"http://127.0.0.1:{dash}"
        import requests

        for _ in range(120):  # the Jobs API answers a little after `ray start` returns
            try:
                if requests.get(f"{url}/api/version", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"the dashboard at {url} never answered (ray start: {out.stdout[-1500:]})")
        yield Head(url=url, temp_dir=temp_dir, env=env)
    finally:
        _stop_head(temp_dir)
        assert not _head_processes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _ids(root: Path, which: str = "shards") -> list[str]:
    files = sorted((root / which).glob("*.parquet"))
    return [i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]


def _manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "_manifest.json").read_text())


def check_pipeline_outputs(work: Path, n: int = 270) -> None:
    """Every stage's outputs: manifests, ids in = ids out + reject ids, exports load."""
    syn, dis = work / "synthetic", work / "distort"
    rew, fil = work / "pf1m" / "rewritten", work / "pf1m" / "filtered"
    syn_ids = _ids(syn)
    assert len(syn_ids) == len(set(syn_ids)) == n
    assert _manifest(syn)["totals"]["rows"] == n and _manifest(syn)["totals"]["rejects"] == 0
    # distort: a pair per assistant turn (id "<sample id>#t<turn>"); raw rows not_selected
    pairs, dis_rej = _ids(dis), _ids(dis, "rejects")
    totals = _manifest(dis)["totals"]
    assert (totals["rows"], totals["rejects"]) == (len(pairs), len(dis_rej)) and pairs
    assert {p.split("#t")[0] for p in pairs} | {r.split("#t")[0] for r in dis_rej} == set(syn_ids)
    assert totals["rejects_per_reason"].get("not_selected") == 150  # the synthetic_vl rows
    # the rewriter: 8 steps trained, metrics written, the export loads
    metrics = json.loads((work / "runs" / "rewriter" / "metrics.json").read_text())
    assert [m["step"] for m in metrics] == list(range(1, 9))
    from pf_ray.model.checkpoint import load_pretrained

    assert sum(p.numel() for p in load_pretrained(str(work / "models" / "rewriter"))
               .parameters()) > 1e6
    # rewrite and filter: one row per input id, in the output or in the rejects
    rew_ids, rew_rej = _ids(rew), _ids(rew, "rejects")
    assert sorted(rew_ids + rew_rej) == sorted(syn_ids) and rew_ids
    assert (_manifest(rew)["totals"]["rows"], _manifest(rew)["totals"]["rejects"]) == \
        (len(rew_ids), len(rew_rej))
    fil_ids, fil_rej = _ids(fil), _ids(fil, "rejects")
    assert sorted(fil_ids + fil_rej) == sorted(rew_ids) and fil_ids
    assert (_manifest(fil)["totals"]["rows"], _manifest(fil)["totals"]["rejects"]) == \
        (len(fil_ids), len(fil_rej))
    import datasets

    loaded = datasets.load_dataset("parquet", data_files=[str(f) for f in sorted(
        (fil / "shards").glob("*.parquet"))], split="train")
    assert sorted(loaded["id"]) == sorted(fil_ids)
    # eval: every (set row, source) pair is an answer or a reject (no_answer: a PF rewrite
    # the filter dropped); the tables and results were written
    ev = work / "eval"
    totals = _manifest(ev)["totals"]
    vl = _manifest(syn)["totals"]["counts"]["task"]
    asked = (vl["captions"] + vl["vqa"]) * 3  # raw, pf-rewrite, rewriter
    assert totals["rows"] + totals["rejects"] == asked
    assert set(totals["rejects_per_reason"]) <= {"no_answer"}
    results = json.loads((ev / "results.json").read_text())
    assert set(results["sources"]) == {"raw", "pf-rewrite", "rewriter"}
    assert "| raw |" in (ev / "tables.md").read_text()


@pytest.mark.timeout(420)
def test_pf_ray_submit_runs_the_pipeline_on_the_head(head: Head, tmp_path: Path) -> None:
    work = tmp_path / "submitted"
    env = {**head.env, "PF_WORKDIR": str(work), "AWS_SECRET_ACCESS_KEY": SECRET}
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "pf_ray.cli", "submit", SPEC, "--address",
                          head.url, "--follow"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=400)
    took = time.time() - t0
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    print(f"pf-ray submit: {took:.0f} s")
    assert "SUCCEEDED" in out.stdout
    # env vars: names shown (the ${VAR}s of the spec, the credentials), values never
    assert "PF_WORKDIR" in out.stdout and "AWS_SECRET_ACCESS_KEY" in out.stdout
    assert SECRET not in text
    assert "'pf_driver': 1.0" in out.stdout  # the driver asked for a CPU-group node
    assert "filtered: 3 shard(s)" in out.stdout  # the job's own log, streamed
    check_pipeline_outputs(work)


@pytest.mark.timeout(420)
def test_plain_ray_job_submit_runs_the_same_pipeline(head: Head, tmp_path: Path) -> None:
    work = tmp_path / "plain"
    t0 = time.time()
    out = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", head.url,
                          "--working-dir", ".", "--runtime-env-json",
                          json.dumps({"env_vars": {"PF_WORKDIR": str(work)}}), "--",
                          "pf-ray", "run", SPEC, "--no-progress"], cwd=ROOT, env=head.env,
                         capture_output=True, text=True, timeout=400)
    took = time.time() - t0
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    print(f"ray job submit: {took:.0f} s")
    assert "succeeded" in out.stdout.lower()
    check_pipeline_outputs(work)


def test_a_bad_spec_is_refused_before_anything_is_sent(head: Head, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: synthetic\nn: many\noutput: {path: x}\n")
    out = subprocess.run([sys.executable, "-m", "pf_ray.cli", "submit", str(bad), "--address",
                          head.url, "--working-dir", str(tmp_path)], cwd=ROOT, env=head.env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "n:" in out.stderr and "many" in out.stderr
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(head.url).list_jobs()
    assert all("bad.yaml" not in (j.entrypoint or "") for j in jobs)


def test_a_failing_job_exits_1_with_its_log(head: Head, tmp_path: Path) -> None:
    spec = tmp_path / "fails.yaml"  # a rewrite whose model folder does not exist
    spec.write_text(f"kind: rewrite\ninputs: [{tmp_path / 'none'}]\n"
                    f"engine: {{kind: flamingo, model: {tmp_path / 'no-model'}}}\n"
                    f"output: {{path: {tmp_path / 'out'}}}\n")
    out = subprocess.run([sys.executable, "-m", "pf_ray.cli", "submit", str(spec), "--address",
                          head.url, "--working-dir", str(tmp_path)], cwd=ROOT, env=head.env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout
    assert "last lines of the job's log" in out.stderr
