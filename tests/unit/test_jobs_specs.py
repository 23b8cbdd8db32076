"""jobs/*.yaml: every spec validates, opens with its command, and the pipelines chain.

``test_config.test_every_shipped_spec_validates`` loads each file; here, beyond that:

* each file opens with the command that runs it (``pf-ray ...`` / ``ray job submit ...``)
  and a header (its inputs, the arithmetic behind its sizes) of several comment lines;
* paper-scale specs default to ``s3://`` locations and ask for GPUs where the paper did;
* the pipelines chain: every path a job reads is written by an earlier job of the same
  pipeline, or is an external input (released data under ``raw/`` or ``eval/``, a base
  model from ``pf-ray convert``, a preset, a scorer model). A renamed output would break
  the chain silently on a cluster; here it fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pf_ray.config import load_spec

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
COMMANDS = ("# pf-ray ", "# ray job submit ", "# RAY_ADDRESS=")
PAPER = ("distort.yaml", "train_rewriter.yaml", "rewrite_pf1m.yaml", "filter_pf1m.yaml",
         "train_clever.yaml", "pipeline_pf1m.yaml", "pipeline_paper.yaml")
# what a pipeline may read without an earlier job writing it
EXTERNAL = ("/raw/", "/eval/", "/models/openflamingo-9b-guanaco")


def _header(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return lines[:next((i for i, x in enumerate(lines) if not x.startswith("#")), len(lines))]


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_each_spec_opens_with_its_command_and_a_header(path: Path) -> None:
    header = _header(path)
    assert header and header[0].startswith(COMMANDS), f"{path.name}: {header[:1]}"
    assert len(header) >= 2, f"{path.name}: say what it reads and why its sizes"
    load_spec(path, env={})  # the defaults alone make a valid spec


@pytest.mark.parametrize("name", PAPER)
def test_paper_scale_specs_default_to_buckets_and_gpus(name: str) -> None:
    spec = load_spec(ROOT / "jobs" / name, env={})
    jobs = spec.jobs if spec.kind == "pipeline" else [spec]
    for job in jobs:
        out = getattr(getattr(job, "output", None), "path", None) or getattr(job, "export", None)
        assert out is None or out.startswith("s3://"), (name, job.kind, out)
        if job.kind == "train":
            assert job.scaling.use_gpu and job.scaling.num_workers >= 8, (name, job.stage)
        if job.kind in ("rewrite", "distort") and getattr(job, "engine", None) is not None:
            assert job.engine.num_gpus >= 1 and job.engine.max_actors >= 8, (name, job.kind)


def _reads(job: Any) -> list[str]:
    """The paths (and model folders) a job reads."""
    paths: list[str] = list(getattr(job, "inputs", None) or [])
    if getattr(job, "boxes_from", None):
        paths.append(job.boxes_from)
    if job.kind == "train":
        paths += [d.path for d in job.data]
        paths.append(job.model)
    engine = getattr(job, "engine", None)
    if job.kind == "rewrite" and engine is not None and getattr(engine, "model", None):
        paths.append(engine.model)
    if job.kind == "eval":  # its sets and stored answers (models: released or any export)
        paths += [s.path for s in job.sets]
        paths += [s.path for s in job.sources if s.kind == "dataset" and s.path]
    return paths


def _writes(job: Any) -> list[str]:
    out = [p for p in (getattr(getattr(job, "output", None), "path", None),
                       getattr(job, "export", None)) if p]
    return out


def chain_breaks(spec: Any, external: tuple[str, ...] = ()) -> list[str]:
    """Reads of a pipeline that no earlier job writes and that are not external inputs."""
    written: set[str] = set()
    problems = []
    for i, job in enumerate(spec.jobs):
        for path in _reads(job):
            if path in written or any(e in path for e in (*EXTERNAL, *external)) \
                    or "/" not in path:
                continue  # "/" not in path: a preset name (tiny, openflamingo-9b-v1...)
            problems.append(f"jobs.{i} ({job.kind} {job.name or ''}) reads {path}")
        written.update(_writes(job))
    return problems


@pytest.mark.parametrize(("name", "external"), [
    ("pipeline_paper.yaml", ()), ("quickstart_pipeline.yaml", ()),
    # PF-1M alone: the rewriter is jobs/train_rewriter.yaml's export, made before
    ("pipeline_pf1m.yaml", ("/models/polite-flamingo",))])
def test_pipelines_chain_their_stages(name: str, external: tuple[str, ...]) -> None:
    spec = load_spec(ROOT / "jobs" / name, env={"PF_WORKDIR": "/w"})
    assert chain_breaks(spec, external) == []


def test_the_paper_pipeline_holds_every_stage_in_order() -> None:
    spec = load_spec(ROOT / "jobs" / "pipeline_paper.yaml", env={})
    kinds = [j.kind for j in spec.jobs]
    order = [kinds.index(k) for k in ("distort", "train", "rewrite", "filter")]
    assert order == sorted(order)
    stages = [j.stage for j in spec.jobs if j.kind == "train"]
    assert stages == ["rewriter", "clever_s1", "clever_s2", "clever_s3"]
    assert "eval" in kinds and kinds.index("eval") > kinds.index("filter")


def test_a_broken_chain_is_found() -> None:
    spec = load_spec(ROOT / "jobs" / "pipeline_pf1m.yaml", env={})
    filt = spec.jobs[-1]
    moved = filt.model_copy(update={"inputs": ["s3://pf-ray/pf1m/rewritten-v2"]})
    spec = spec.model_copy(update={"jobs": [*spec.jobs[:-1], moved]})
    assert chain_breaks(spec, ("/models/polite-flamingo",)) == [
        f"jobs.{len(spec.jobs) - 1} (filter pf1m-filter) reads s3://pf-ray/pf1m/rewritten-v2"]
