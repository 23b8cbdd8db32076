"""Run a validated job spec: connect to Ray, dispatch on ``kind``, report."""

from __future__ import annotations

import logging
import os
from typing import Any

from pf_ray.config import (
    DistortJob,
    IngestJob,
    JobBase,
    PipelineJob,
    RayConfig,
    SyntheticJob,
    TrainJob,
)
from pf_ray.data.shard_job import ShardJob, run_shard_job
from pf_ray.progress import ShardProgress

log = logging.getLogger(__name__)


def connect_ray(cfg: RayConfig) -> None:
    """Connect to ``cfg.address`` / ``RAY_ADDRESS``, or start a local instance."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"runtime_env": cfg.runtime_env or None,
                              "log_to_driver": True, "include_dashboard": False}
    if address is None:
        # A local instance gets at least 8 logical CPUs: Train's controller, its workers and
        # their data pipelines each hold CPUs, and Ray waits forever when they run short.
        kwargs["num_cpus"] = cfg.num_cpus or max(os.cpu_count() or 1, 8)
    if address is not None:
        kwargs.pop("include_dashboard")
    ray.init(address=address, **kwargs)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = cfg.progress


def build_shard_job(spec: Any) -> ShardJob:
    from pf_ray.data.jobs import ingest_job, synthetic_job

    if isinstance(spec, DistortJob):
        from pf_ray.distort.job import distort_job

        return distort_job(spec)
    if isinstance(spec, SyntheticJob):
        return synthetic_job(spec)
    if isinstance(spec, IngestJob):
        return ingest_job(spec)
    raise TypeError(f"no shard job for kind {getattr(spec, 'kind', spec)!r}")


def run_job(spec: Any, *, executor: str = "ray", connect: bool = True) -> list[Any]:
    """Run one job (or each job of a pipeline, in order); returns one result per job."""
    if connect and executor == "ray":
        connect_ray(spec.ray)
    if isinstance(spec, PipelineJob):
        results = []
        for i, sub in enumerate(spec.jobs):
            if "storage" not in sub.model_fields_set:  # inherit the pipeline's storage
                sub = sub.model_copy(update={"storage": spec.storage})
            log.info("pipeline step %d/%d: %s", i + 1, len(spec.jobs), sub.kind)
            results.extend(run_job(sub, executor=executor, connect=False))
        return results
    if isinstance(spec, TrainJob):
        from pf_ray.train.launch import run_train

        return [run_train(spec)]
    job = build_shard_job(spec)
    label = f"{spec.kind}{f' ({spec.name})' if spec.name else ''}"
    with ShardProgress(label, enabled=isinstance(spec, JobBase) and spec.ray.progress) as bar:
        result = run_shard_job(job, executor=executor, progress=bar)
    return [result]
