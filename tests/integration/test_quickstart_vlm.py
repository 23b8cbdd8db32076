"""``pf-ray quickstart --preset tiny-vlm`` end to end: the hf_vlm flow (base, rewriter, the
rewrite on vLLM through ray.data.llm in the vLLM venv's interpreter, filters, Clever S1-S3,
eval, Serve LLM), one run per module (600 synthetic rows, a third of the default's, for CI time), every test
reads its outputs. Skipped where no vLLM
interpreter exists (``scripts/setup.sh --vllm``; CI's command 2 makes one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pf_ray.data.io import Dataset
from pf_ray.specs import StorageConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3000)]


@pytest.fixture(scope="module")
def run(ray_session: str, tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    from pf_ray.engines.interpreter import vllm_python

    try:
        vllm_python()
    except FileNotFoundError as exc:  # no vLLM venv on this machine (setup.sh --vllm makes it)
        pytest.skip(f"needs vLLM's CPU build in its own venv: {exc}")
    workdir = tmp_path_factory.mktemp("quickstart_vlm") / "qs"
    env = {**os.environ, "RAY_ADDRESS": ray_session, "RAY_AUTH_MODE": "disabled",
           "VLLM_CPU_KVCACHE_SPACE": "1"}
    out = subprocess.run([sys.executable, "-m", "pf_ray.cli", "quickstart", "--preset",
                          "tiny-vlm", "--n", "600", "--workdir", str(workdir), "--no-progress"], env=env,
                         capture_output=True, text=True, timeout=2900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return workdir, out


@pytest.fixture(scope="module")
def summary(run: tuple[Path, Any]) -> dict[str, Any]:
    return json.loads((run[0] / "summary.json").read_text())


def test_every_step_ran_and_the_served_model_answered(run, summary) -> None:
    _, out = run
    assert "quickstart done" in out.stdout
    for step in range(1, 10):
        assert f"[{step}/9]" in out.stdout, step
    assert summary["preset"] == "tiny-idefics3"  # the hf_vlm preset the flow trains
    serve = summary["serve"]
    assert serve["ok"] and serve["completion_tokens"] > 0, serve


def test_the_rewriter_stands_beside_its_baselines(summary) -> None:
    rw = summary["rewriter"]
    assert rw["pairs"] > 0
    for key in ("heldout_rougeL", "copy_baseline_rougeL", "untrained_rougeL"):
        assert 0.0 <= rw[key] <= 1.0, (key, rw)
    assert rw["intervals"]["trained_minus_copy"]["n"] == rw["pairs"]


def test_the_rewrite_ran_on_vllm_and_lost_no_row(run, summary) -> None:
    workdir, _ = run
    store = StorageConfig()
    rewritten = Dataset(str(workdir / "pf1m" / "rewritten"), store)
    rows = rewritten.read(columns=["id", "output"]).to_pylist()
    rejects = rewritten.read("rejects", columns=["id", "reason"]).to_pylist()
    synthetic = Dataset(str(workdir / "synthetic"), store).read(columns=["id"]).num_rows
    ids = [r["id"] for r in rows] + [r["id"] for r in rejects]
    assert len(ids) == len(set(ids)) == synthetic  # rows in = kept + rejects, each once
    assert rows and all(r["output"] for r in rows)
    engine = json.loads((workdir / "pf1m" / "rewritten" / "_manifest.json").read_text()
                        )["spec"]["engine"]
    assert engine["kind"] == "vllm" and engine["model"].endswith("rewriter")
    assert engine["python"] and "vllm" in engine["python"]  # the vLLM venv's interpreter


def test_clever_stages_and_the_image_withheld(summary) -> None:
    cl = summary["clever"]
    assert set(cl["heldout_accuracy"]) == {"base", "s1", "s2", "s3", "blind"}
    assert cl["questions"] > 0
    assert cl["differences"]["s3_minus_blind"]["n"] == cl["questions"]
    stages = summary["stages"]
    for name in ("base", "rewriter", "clever_s1", "clever_s2", "clever_s3"):
        assert stages[name]["steps"] > 0, name
    assert summary["eval"]["answers"]
