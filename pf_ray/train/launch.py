"""``kind: train``: build the example dataset, then run the loop on Ray Train (V2)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pf_ray.config import TrainJob
from pf_ray.data.io import join, resolve


@dataclass
class TrainResult:
    run_name: str
    steps: int
    metrics: dict[str, Any]
    checkpoint: str | None
    export: str | None
    history: list[dict[str, Any]]

    def summary(self) -> str:
        loss = self.metrics.get("loss")
        return (f"train {self.run_name}: {self.steps} step(s), last loss "
                f"{loss:.4f}" if loss is not None else f"train {self.run_name}: no step") + (
            f", exported to {self.export}" if self.export else "")


def total_steps(spec: TrainJob, rows_per_epoch: int) -> int:
    per_step = spec.batch_size * spec.scaling.num_workers * spec.grad_accum
    steps = max(1, rows_per_epoch // per_step) * spec.epochs
    return min(steps, spec.max_steps) if spec.max_steps else steps


def run_train(spec: TrainJob) -> TrainResult:
    from ray.data import DataContext
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from pf_ray.train.data import build_dataset, dataset_sizes, mixture_counts
    from pf_ray.train.loop import train_loop_per_worker

    sizes = dataset_sizes(spec)
    rows = sum(mixture_counts(sizes, [d.ratio for d in spec.data], spec.sampling,
                              spec.samples_per_epoch))
    steps = total_steps(spec, rows)
    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # same example order on every worker and run
    dataset = build_dataset(spec, sizes)
    fs, path = resolve(spec.storage_path, spec.storage)
    sc = spec.scaling
    resources = {"CPU": sc.cpus_per_worker}
    if sc.use_gpu:
        resources["GPU"] = sc.gpus_per_worker or 1.0
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.model_dump(mode="json"), "total_steps": steps},
        scaling_config=ScalingConfig(num_workers=sc.num_workers, use_gpu=sc.use_gpu,
                                     resources_per_worker=resources,
                                     accelerator_type=sc.accelerator_type),
        run_config=RunConfig(name=spec.run_name, storage_path=path, storage_filesystem=fs,
                             failure_config=FailureConfig(max_failures=spec.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets={"train": dataset},
        dataset_config=DataConfig(datasets_to_split=[]),  # each rank takes its slice
        torch_config=TorchConfig(backend="nccl" if sc.use_gpu else "gloo"),
    )
    result = trainer.fit()
    history = read_history(spec)
    ckpt = result.checkpoint.path if result.checkpoint is not None else None
    last = history[-1] if history else (result.metrics or {})
    return TrainResult(spec.run_name, int(last.get("step", 0)), last, ckpt, spec.export,
                       history)


def read_history(spec: TrainJob) -> list[dict[str, Any]]:
    """The per-step metrics the run wrote beside its checkpoints (``metrics.json``)."""
    from pf_ray.data.io import exists, read_bytes

    fs, path = resolve(join(spec.storage_path, spec.run_name, "metrics.json"), spec.storage)
    return json.loads(read_bytes(fs, path)) if exists(fs, path) else []
