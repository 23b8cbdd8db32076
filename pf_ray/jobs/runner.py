"""Run a validated job spec: connect to Ray, dispatch through the registry, return results.

A kind with a ``plan`` becomes a :class:`~pf_ray.jobs.shard.ShardPlan` executed here: on
Ray Data (units as blocks through the steps' ``map_batches``, committed by write tasks) or
in this process (``executor="local"``). A kind with a ``run`` runs itself. A pipeline runs
its jobs in order; the first failure stops it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from pf_ray.data.io import Dataset
from pf_ray.data.schema import UNIT
from pf_ray.jobs import registry
from pf_ray.jobs.progress import ShardProgress, interactive, ray_console
from pf_ray.jobs.shard import (
    JobFailed,
    ShardPlan,
    ShardResult,
    Unit,
    failure_from,
    finish,
    prepare_output,
    read_unit,
    run_units_locally,
    write_unit,
)
from pf_ray.specs import RayConfig

log = logging.getLogger(__name__)


def connect_ray(cfg: RayConfig) -> None:
    """Connect to ``cfg.address`` / ``RAY_ADDRESS``, or start a local instance."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"runtime_env": cfg.runtime_env or None, "log_to_driver": True}
    if address is None:
        # A local instance gets at least 8 logical CPUs: Train's controller, its workers and
        # their data pipelines each hold CPUs, and Ray waits forever when they run short.
        kwargs["num_cpus"] = cfg.num_cpus or max(os.cpu_count() or 1, 8)
        # The dashboard serves the State API, which Ray Train's placement-group cleaner
        # polls every second: without it each poll logs a warning. Loopback only.
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1")
    # bars and colours only on a terminal; no escape sequences in logs and pipes
    bars = ray_console(cfg.progress)
    if not interactive():  # Ray's own start-up line is coloured: say it plainly instead
        kwargs["logging_level"] = logging.WARNING
    context = ray.init(address=address, **kwargs)
    if not interactive():
        url = getattr(context, "dashboard_url", None)
        print(f"Ray: {'started a local instance' if address is None else 'connected to ' + address}"
              + (f", dashboard at http://{url}" if url else ""), file=sys.stderr)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = bars
    if not logging.getLogger().isEnabledFor(logging.INFO):  # pf-ray -v keeps them
        # Ray Data's "Starting execution / Execution plan / finished" lines per dataset:
        # the shard progress lines already say what ran
        logging.getLogger("ray.data").setLevel(logging.WARNING)


def run_job(spec: Any, *, executor: str = "ray", connect: bool = True) -> list[Any]:
    """Run one job (or each job of a pipeline, in order); returns one result per job."""
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', received {executor!r}")
    if connect and executor == "ray":
        connect_ray(spec.ray)
    if registry.is_pipeline(spec):
        results = []
        for i, sub in enumerate(spec.jobs):
            inherit = {k: getattr(spec, k) for k in ("storage", "faults")
                       if k not in sub.model_fields_set}  # unless the job sets its own
            sub = sub.model_copy(update=inherit) if inherit else sub
            log.info("pipeline step %d/%d: %s", i + 1, len(spec.jobs), sub.kind)
            results.extend(run_job(sub, executor=executor, connect=False))
        return results
    kind = registry.get(spec.kind)
    if kind.run is not None:
        return [kind.run(spec, executor=executor)]
    plan: ShardPlan = kind.plan(spec)  # type: ignore[misc]
    if plan.schema.name != kind.output.name:  # type: ignore[union-attr]
        raise TypeError(f"kind {kind.name!r}: its plan writes {plan.schema.name!r} rows, its "
                        f"registration declares {kind.output.name!r}")  # type: ignore[union-attr]
    label = f"{spec.kind}{f' ({spec.name})' if spec.name else ''}"
    with ShardProgress(label, enabled=spec.ray.progress) as bar:
        result = run_plan(plan, executor=executor, progress=bar)
    return [kind.finalize(spec, result) if kind.finalize is not None else result]


ProgressFn = Callable[[dict[str, Any]], None]


def run_plan(plan: ShardPlan, *, executor: str = "ray",
             progress: ProgressFn | None = None) -> ShardResult:
    """Execute a shard plan; ``executor`` is ``"ray"`` (Ray Data) or ``"local"``.

    Raises :class:`~pf_ray.jobs.shard.JobFailed` when a unit hit an infrastructure fault or
    exceeded ``max_reject_fraction``: the units that finished stay committed, the failed
    ones do not, the manifest is rebuilt from what is committed, and a rerun resumes.
    """
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', received {executor!r}")
    t0 = time.time()
    dataset, pending, skipped = prepare_output(plan)
    summaries: list[dict[str, Any]] = []

    def done(summary: dict[str, Any]) -> None:
        summaries.append(summary)
        if progress:
            progress({"done": len(summaries), "total": len(pending), **summary})

    error: JobFailed | None = None
    try:
        if pending and executor == "ray":
            _run_ray(plan, dataset, pending, done)
        elif pending:
            run_units_locally(plan, dataset, pending, done)
    except JobFailed as exc:
        error = exc
    except Exception as exc:  # Ray wraps a task's exception; unwrap ours
        error = failure_from(exc)
        if error is None:
            raise
    if error is None:
        error = _unreported(plan, pending, summaries)
    return finish(plan, dataset, summaries, skipped, t0, executor, error)


def _unreported(plan: ShardPlan, pending: list[Unit], summaries: list[dict[str, Any]]
                ) -> JobFailed | None:
    """A failure for units the writers never completed (parts that never added up to the
    unit: rows lost on the way), or None. Without it such a unit would be left uncommitted
    by a job that exits 0."""
    reported = {s["name"] for s in summaries}
    lost = [u.key for u in pending if plan.shard_name(u) not in reported]
    if not lost:
        return None
    return JobFailed(f"unit(s) {', '.join(lost[:20])}{' ...' if len(lost) > 20 else ''}: "
                     "their rows did not all reach the writer (parts that never add up to "
                     "the unit's ids); not committed: rerun to redo them")


def _run_ray(plan: ShardPlan, dataset: Dataset, pending: list[Unit],
             done: Callable[[dict[str, Any]], None]) -> None:
    import ray.data
    from ray.data import DataContext

    from pf_ray.steps.ray_adapter import map_steps, map_units

    ctx = DataContext.get_current()
    saved = ctx.target_max_block_size
    ctx.target_max_block_size = None  # never split a unit's block (see ray_adapter)
    try:
        items = [{UNIT: u.key, "_params": json.dumps(u.params)} for u in pending]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = map_units(ds, read_unit, reader=plan.reader)
        ds = map_steps(ds, plan.steps, plan.faults, plan.schema)
        if plan.ray_stage is not None:
            ds = plan.ray_stage(ds)
        ds = map_units(ds, write_unit, dataset=dataset, spec_hash=plan.spec_hash,
                       schema=plan.schema, max_reject_fraction=plan.faults.max_reject_fraction,
                       expected_reasons=plan.expected_reasons, unit_stats=plan.unit_stats)
        for row in ds.iter_rows():
            done(dict(row))
    finally:
        ctx.target_max_block_size = saved
