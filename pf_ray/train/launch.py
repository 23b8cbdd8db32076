"""``kind: train``: build the example dataset in Ray Data, then run the loop on Ray Train (V2)."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any

from pf_ray.storage import join, resolve
from pf_ray.train.spec import TrainSpec


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

    def to_json(self) -> dict[str, Any]:
        return {"kind": "train", "run_name": self.run_name, "steps": self.steps,
                "metrics": self.metrics, "checkpoint": self.checkpoint, "export": self.export}


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
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    from pf_ray.jobs.progress import ray_console
    from pf_ray.train.data import dataset_sizes, mixture_counts
    from pf_ray.train.loop import train_loop_per_worker

    sizes = dataset_sizes(spec)
    rows = sum(mixture_counts(sizes, [d.ratio for d in spec.data], spec.sampling,
                              spec.samples_per_epoch))
    steps = total_steps(spec, rows)
    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True  # same example order on every worker and run
    # the workers run the pipeline: its bars reach this console as cursor movements
    ctx.enable_progress_bars = ray_console(spec.ray.progress)
    dataset = build_dataset(spec, sizes)
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
                             failure_config=FailureConfig(max_failures=spec.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             # Ray Train's INFO records (worker group start-up, each
                             # checkpoint...): the step lines say what a person needs
                             logging_config=LoggingConfig(log_level="WARNING")),
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


def read_history(spec: TrainSpec) -> list[dict[str, Any]]:
    """The per-step metrics the run wrote beside its checkpoints (``metrics.json``)."""
    from pf_ray.storage import exists, read_bytes

    fs, path = resolve(join(spec.storage_path, spec.run_name, "metrics.json"), spec.storage)
    return json.loads(read_bytes(fs, path)) if exists(fs, path) else []


def build_dataset(spec: TrainSpec, sizes: list[int]) -> Any:
    """The Ray Dataset of tokenised examples for one epoch of ``spec``."""
    import ray.data

    from pf_ray.steps.ray_adapter import map_batches_any
    from pf_ray.train.data import ExampleBuilder, dataset_files, mixture_counts, sample_rows
    from pf_ray.train.stages import EXAMPLE_FORMAT

    fmt = EXAMPLE_FORMAT[spec.stage]
    counts = mixture_counts(sizes, [d.ratio for d in spec.data], spec.sampling,
                            spec.samples_per_epoch)
    columns = (["id", "instruction", "original", "distorted", "image", "image_bytes"]
               if fmt == "rewrite" else ["id", "conversations", "image", "image_bytes"])
    parts = []
    for k, (d, size, count) in enumerate(zip(spec.data, sizes, counts, strict=True)):
        if size == 0 or count == 0:
            continue
        fs, _ = resolve(d.path, spec.storage)
        files = dataset_files(d.path, spec.storage)
        rng = random.Random(f"{spec.seed}:files:{k}")
        rng.shuffle(files)  # a fixed, seeded file order
        inner = [resolve(f, spec.storage)[1] for f in files]
        part = ray.data.read_parquet(inner, filesystem=fs, columns=columns,
                                     override_num_blocks=len(inner))
        parts.append(map_batches_any(part, sample_rows, batch_size=None, num_cpus=0.25,
                                     size=size, target=count, seed=spec.seed + k))
    if not parts:
        raise ValueError("data: every dataset is empty")
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    multiturn = spec.multiturn if spec.multiturn is not None else fmt == "chat"
    # Every training worker runs this pipeline (see loop.py): keep its footprint small.
    return map_batches_any(
        ds, ExampleBuilder, batch_size=max(8, spec.batch_size), num_cpus=0.5,
        actors=(1, 1), fn_constructor_kwargs={
            "model": spec.model, "fmt": fmt, "max_length": spec.max_length,
            "max_images": spec.max_images, "multiturn": multiturn, "seed": spec.seed,
            "storage": spec.storage})
