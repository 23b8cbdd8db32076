"""``kind: train``: the ordered stream of raw rows in Ray Data, then the loop on Ray Train (V2)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from pf_ray.storage import join, resolve
from pf_ray.train.spec import TrainSpec

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_name: str
    steps: int
    metrics: dict[str, Any]
    checkpoint: str | None
    export: str | None
    history: list[dict[str, Any]]
    skipped: bool = False  # the export was complete: no worker started (finished_stage)

    def summary(self) -> str:
        if self.skipped:
            return (f"train {self.run_name}: skipped, its export {self.export} is complete "
                    f"({self.steps} step(s))")
        loss = self.metrics.get("loss")
        return (f"train {self.run_name}: {self.steps} step(s), last loss "
                f"{loss:.4f}" if loss is not None else f"train {self.run_name}: no step") + (
            f", exported to {self.export}" if self.export else "")

    def to_json(self) -> dict[str, Any]:
        return {"kind": "train", "run_name": self.run_name, "steps": self.steps,
                "metrics": self.metrics, "checkpoint": self.checkpoint, "export": self.export,
                "skipped": self.skipped}


def total_steps(spec: TrainSpec, rows_per_epoch: int) -> int:
    per_step = spec.batch_size * spec.scaling.num_workers * spec.grad_accum
    steps = max(1, rows_per_epoch // per_step) * spec.epochs
    return min(steps, spec.max_steps) if spec.max_steps else steps


def run_train(spec: TrainSpec, *, executor: str = "ray") -> TrainResult:
    """Train on Ray Train (``executor`` must be ``ray``: there is no in-process trainer)."""
    if executor != "ray":
        raise ValueError("kind train runs on Ray Train; use executor 'ray'")
    from ray.data import DataContext
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    from pf_ray.jobs.progress import ray_console
    from pf_ray.train.data import data_files, epoch_counts
    from pf_ray.train.hf_build import check_spec_model
    from pf_ray.train.loop import train_loop_per_worker

    check_spec_model(spec)  # a folder of the other model family: an error naming both
    files = data_files(spec)  # a sources / tasks selection that keeps no row: an error
    counts = epoch_counts(spec, [sum(rows for _, rows in f) for f in files])
    for d, f, count in zip(spec.data, files, counts, strict=True):
        if not f:
            log.warning("data %s holds no committed shards: it gives no examples", d.path)
        log.info("data %s: %d rows -> %d examples per epoch", d.path,
                 sum(rows for _, rows in f), count)
    steps = total_steps(spec, sum(counts))
    finished = finished_stage(spec, steps)
    if finished is not None:
        return finished
    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # same row order on every worker and run
    # the workers run the pipeline: its bars reach this console as cursor movements
    ctx.enable_progress_bars = ray_console(spec.ray.progress)
    dataset = build_dataset(spec, files, counts)
    fs, path = resolve(spec.storage_path, spec.storage)
    sc = spec.scaling
    resources = {"CPU": sc.cpus_per_worker}
    if sc.use_gpu:
        resources["GPU"] = sc.gpus_per_worker or 1.0
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.model_dump(mode="json"), "total_steps": steps,
                           "log_level": logging.getLogger().getEffectiveLevel()},
        scaling_config=ScalingConfig(num_workers=sc.num_workers, use_gpu=sc.use_gpu,
                                     resources_per_worker=resources,
                                     accelerator_type=sc.accelerator_type),
        run_config=RunConfig(name=spec.run_name, storage_path=path, storage_filesystem=fs,
                             failure_config=failure_config(spec),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             # Ray Train's INFO records (worker group start-up, each
                             # checkpoint...): the step lines say what a person needs
                             logging_config=LoggingConfig(log_level="WARNING")),
        datasets={"train": dataset},
        # each rank iterates every row, builds the examples of its slice (train.examples)
        dataset_config=DataConfig(datasets_to_split=[]),
        torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"),
    )
    result = trainer.fit()
    history = read_history(spec)
    ckpt = result.checkpoint.path if result.checkpoint is not None else None
    last = history[-1] if history else (result.metrics or {})
    return TrainResult(spec.run_name, int(last.get("step", 0)), last, ckpt, spec.export,
                       history)


def failure_config(spec: TrainSpec) -> Any:
    """Ray Train's ``FailureConfig`` of the spec's ``failure`` block."""
    from ray.train import FailureConfig

    f = spec.failure
    return FailureConfig(max_failures=f.max_failures,
                         max_preemption_failures=f.max_preemption_failures,
                         preemption_grace_s=f.preemption_grace_s)


def finished_stage(spec: TrainSpec, steps: int) -> TrainResult | None:
    """The result of a stage already done, None when it must run (resume or start).

    Done: ``spec.export`` holds a complete export (its marker, written last) of this
    ``run_name`` and ``model`` at ``steps`` steps or more. The result takes its step from
    the marker, its history and metrics from the run's ``metrics.json``.
    """
    from pf_ray.train.export import export_marker

    marker = export_marker(spec)
    if marker is None:
        return None
    step = marker.get("step")
    if (marker.get("run_name"), marker.get("model")) != (spec.run_name, spec.model) or (
            step is not None and step < steps):
        log.warning("export %s holds run %s of %s at step %s; this spec trains run %s of %s "
                    "to step %d: training", spec.export, marker.get("run_name"),
                    marker.get("model"), step, spec.run_name, spec.model, steps)
        return None
    history = read_history(spec)
    last = history[-1] if history else {}
    result = TrainResult(spec.run_name, int(step if step is not None else last.get("step", 0)),
                         last, _latest_checkpoint(spec), spec.export, history, skipped=True)
    log.info("%s", result.summary())
    return result


def _latest_checkpoint(spec: TrainSpec) -> str | None:
    from ray.train import Result

    fs, path = resolve(join(spec.storage_path, spec.run_name), spec.storage)
    try:
        checkpoint = Result.from_path(path, storage_filesystem=fs).checkpoint
    except (RuntimeError, ValueError, OSError):  # no run there (an export copied in)
        return None
    return checkpoint.path if checkpoint is not None else None


def read_history(spec: TrainSpec) -> list[dict[str, Any]]:
    """The per-step metrics the run wrote beside its checkpoints (``metrics.json``)."""
    from pf_ray.storage import exists, read_bytes

    fs, path = resolve(join(spec.storage_path, spec.run_name, "metrics.json"), spec.storage)
    return json.loads(read_bytes(fs, path)) if exists(fs, path) else []


def build_dataset(spec: TrainSpec, files: list[list[tuple[str, int]]],
                  counts: list[int]) -> Any:
    """The Ray Dataset of one epoch of ``spec``'s raw rows, in order (nothing decoded).

    ``files[k]``: dataset ``k``'s ``(file, rows)``; ``counts[k]``: its examples per epoch.
    One read task per :class:`~pf_ray.train.data.ReadUnit`, in the interleaved epoch order;
    then a seeded shuffle of ``shuffle_window`` consecutive rows. Every training worker
    iterates all of it and builds the examples of its own rows (``train.examples``).
    """
    import ray.data

    from pf_ray.steps.ray_adapter import map_batches_any
    from pf_ray.train.data import epoch_plan, read_units, shuffle_rows
    from pf_ray.train.stages import EXAMPLE_FORMAT

    fmt = EXAMPLE_FORMAT[spec.stage]
    images = ["image", "image_bytes", "extra_images"]
    columns = (["id", "instruction", "original", "distorted", *images] if fmt == "rewrite"
               else ["id", "conversations", *images])
    units = epoch_plan(files, counts, spec.seed)
    if not units:
        raise ValueError("data: every dataset is empty")
    # Every training worker runs this pipeline (see loop.py): keep its footprint small.
    ds = ray.data.from_items([asdict(u) for u in units], override_num_blocks=len(units))
    ds = map_batches_any(ds, read_units, batch_size=1, num_cpus=0.25, columns=columns,
                         storage=spec.storage, seed=spec.seed,
                         select=[d.sources for d in spec.data],
                         select_tasks=[d.tasks for d in spec.data])
    if spec.shuffle_window > 1:
        ds = map_batches_any(ds, shuffle_rows, batch_size=spec.shuffle_window, num_cpus=0.25,
                             seed=spec.seed)
    return ds
