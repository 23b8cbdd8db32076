"""The training loop run by every Ray Train worker.

Data: every worker iterates the same ordered stream of raw rows (Ray Data with
``preserve_order``) in global batches of ``batch_size * world`` rows and builds the
examples of its own slice only (``batch_size`` per rank; :mod:`pf_ray.train.examples`:
multi-turn augmentation, image decoding and tokenisation in ``data_workers`` threads,
ahead of the step). Every row gives an example, so the data position is one number, the
global batches consumed in the epoch, and a resumed run sees exactly the examples an
uninterrupted run would have seen (the global batches it skips are not decoded).

State saved every ``checkpoint_every`` steps with torch DCP (each rank writes its shards;
Ray Train merges the ranks' folders into one checkpoint): trainable parameters, optimizer,
scheduler, step, epoch, data position, the running counts below and each rank's RNG states
(Python, numpy, torch CPU and CUDA). A rerun with the same ``run_name`` (or a restart after a
worker failure) resumes from the latest checkpoint.

Metrics per optimizer step (``metrics.json``; ``ray.train.report`` only with each
checkpoint, see the loop) are rank 0's: loss, lr, grad_norm, tokens/s, ``step_s`` (wall
seconds since the previous step), ``data_wait_s`` (of which blocked on the data stream or
on building rank 0's examples), ``images`` (the images its examples of the step carried,
several per row for change captions, more with multi-turn augmentation),
and ``images_unreadable``, the running total of images that failed to load in the
examples rank 0 trained on (its slice of each global batch, not all ranks'),
``examples_skipped``, the examples rank 0 trained on that have no label token (a row without
a complete turn, or whose responses truncation cut away: the example stays in the batch, one
token with label -100, and adds nothing to the loss; rank 0's slices, as above), and
``empty_batches``, rank 0's micro-batches without any label token: their loss (a NaN mean
over no token, which FSDP would spread to every rank) is replaced by a zero that still
backpropagates through the model, so every rank runs the same collectives. All three are
running totals since the run began (a resumed run continues them). ``peak_host_bytes`` /
``peak_gpu_bytes`` (and their ``step_`` forms) are rank 0's measured memory peaks
(:mod:`pf_ray.train.memory`). The same rows go to TensorBoard, and to MLflow / W&B when the
spec names them (:mod:`pf_ray.train.tracking`).

Model families: a spec of ``model_family: hf_vlm`` (a transformers image-text-to-text
model) builds through :mod:`pf_ray.train.hf_build` (FSDP units in
:mod:`pf_ray.train.hf_fsdp`), batches through :func:`pf_ray.train.hf_data.collate_hf` and
exports through :mod:`pf_ray.train.hf_export`; the data stream, checkpoints, resume and
metrics above are the same for both families.

Console: rank 0 writes one line per optimizer step (``spec.ray.progress``); the driver
shows each worker's output once. Ray Train's own INFO records (one per ``report``, worker
group start-up...) are not shown; see :func:`quiet_worker_logging`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from pf_ray.model.prompts import IGNORE_INDEX
from pf_ray.train.spec import TrainSpec

STATE_FILE = "train_state.json"


def collate(rows: dict[str, list[Any]], pad_id: int, image_size: int,
            device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad ids (pad) and labels (-100); stack images, zero-padded, with a mask.

    Returns input_ids / labels / attention_mask ``(b, t)``, images ``(b, T_img, 3, H, W)``
    and image_mask ``(b, T_img)``.
    """
    b = len(rows["input_ids"])
    t = max(len(x) for x in rows["input_ids"])
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    for i, (x, y) in enumerate(zip(rows["input_ids"], rows["labels"], strict=True)):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    labels[ids == pad_id] = IGNORE_INDEX
    t_img = max(1, max(rows["n_images"]))
    images = torch.zeros((b, t_img, 3, image_size, image_size))
    image_mask = torch.zeros((b, t_img), dtype=torch.bool)
    for i, (raw, n) in enumerate(zip(rows["pixels"], rows["n_images"], strict=True)):
        if n:
            arr = np.frombuffer(raw, dtype=np.float32).reshape(n, 3, image_size, image_size)
            images[i, :n] = torch.from_numpy(arr.copy())
            image_mask[i, :n] = True
    out = {"input_ids": ids, "labels": labels, "attention_mask": mask, "images": images,
           "image_mask": image_mask}
    return {k: v.to(device) for k, v in out.items()}


def rng_state() -> dict[str, Any]:
    """This process's RNG states (Python, numpy, torch CPU, every CUDA device).

    Tensors, lists, numbers and strings only, so ``torch.load(weights_only=True)`` reads
    them back; :func:`set_rng_state` restores them.
    """
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA: the devices both runs have).

    A checkpoint of an earlier pf-ray holds the torch CPU state only: the rest stays as is.
    """
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    if "numpy" in state:
        npy = state["numpy"]
        np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"],
                             npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def _state_dicts(model: Any, optimizer: Any) -> tuple[Any, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))


def save_checkpoint(model: Any, optimizer: Any, scheduler: Any, progress: dict[str, int],
                    metrics: dict[str, Any]) -> None:
    import ray.train
    import torch.distributed.checkpoint as dcp

    rank = ray.train.get_context().get_world_rank()
    with tempfile.TemporaryDirectory() as tmp:
        model_sd, optim_sd = _state_dicts(model, optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp)
        torch.save(rng_state(), os.path.join(tmp, f"rng_{rank}.pt"))
        if rank == 0:
            with open(os.path.join(tmp, STATE_FILE), "w") as f:
                json.dump({**progress, "scheduler": scheduler.state_dict()}, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def load_checkpoint(model: Any, optimizer: Any, scheduler: Any) -> dict[str, int] | None:
    import ray.train
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    rank = ray.train.get_context().get_world_rank()
    with ckpt.as_directory() as folder:
        model_sd, optim_sd = _state_dicts(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=folder)
        # only trainable parameters were saved: frozen ones come from the initial model
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"],
                       options=StateDictOptions(ignore_frozen_params=True, strict=False))
        with open(os.path.join(folder, STATE_FILE)) as f:
            saved = json.load(f)
        rng = os.path.join(folder, f"rng_{rank}.pt")
        if os.path.exists(rng):
            set_rng_state(torch.load(rng, weights_only=True))
    scheduler.load_state_dict(saved.pop("scheduler"))
    return saved


def quiet_worker_logging(level: int = logging.WARNING) -> None:
    """Log at ``level`` in this worker, and never Ray Train's per-report INFO records.

    Ray Train sets a worker's root logger to INFO, so every library's INFO record (open_clip
    logs each model it builds) reached the driver's console; ``level`` is the driver's. Ray
    Train also logs every ``report`` at INFO ("Reporting training result ...") through a
    logger named after its source file, outside ``ray.train.*``, which the run's
    ``LoggingConfig`` does not reach: that logger gets WARNING whatever ``level`` is.
    """
    logging.getLogger().setLevel(level)
    # Ray Data sets its own logger to INFO ("Starting execution of Dataset ..." per epoch)
    logging.getLogger("ray.data").setLevel(max(level, logging.INFO))
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: nothing to quiet
        return
    reporter = getattr(context, "logger", None)
    if isinstance(reporter, logging.Logger):
        reporter.setLevel(max(level, logging.WARNING))


def console_line(text: str) -> None:
    """One line on the driver's console, once.

    Not ``print``: Ray Train replaces ``print`` in its workers with a function that logs the
    text through the root logger (to stderr) and, because Ray gives each worker its own
    ``sys.stdout`` object, also prints it to stdout; the driver forwards both streams, so
    every printed line appeared twice.
    """
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def step_line(run_name: str, total: int, metrics: dict[str, Any]) -> str:
    line = (f"[{run_name}] step {metrics['step']}/{total} epoch {metrics['epoch']} "
            f"loss {metrics['loss']:.4f} lr {metrics['lr']:.2e} "
            f"grad_norm {metrics['grad_norm']:.3f} {metrics['tokens_per_s']:.0f} tok/s")
    if metrics.get("images_unreadable"):
        line += f" unreadable images {metrics['images_unreadable']}"
    if metrics.get("examples_skipped"):
        line += f" skipped examples {metrics['examples_skipped']}"
    if metrics.get("empty_batches"):
        line += f" empty batches {metrics['empty_batches']}"
    return line


def guarded_loss(out: Any, labels: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The model's loss, or a zero connected to the logits when no label token is left.

    Returns (loss, empty). Labels are shifted inside the model: position 0 never counts.
    """
    if bool((labels[:, 1:] != IGNORE_INDEX).any()):
        return out.loss, False
    return out.logits.sum() * 0.0, True


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (``config["spec"]`` is the TrainSpec as a dict).

    ``config["log_level"]``: the driver's logging level, applied in the worker.
    """
    import ray.train

    from pf_ray.train.build import build_for_training
    from pf_ray.train.examples import RankExamples, example_builder
    from pf_ray.train.hf_build import build_hf_for_training, hf_decays
    from pf_ray.train.hf_data import collate_hf
    from pf_ray.train.memory import PeakMemory
    from pf_ray.train.optim import build_optimizer, build_scheduler
    from pf_ray.train.tracking import open_tracker

    memory = PeakMemory()  # this worker's memory from here on: model, optimizer, data, steps
    quiet_worker_logging(config.get("log_level", logging.WARNING))
    spec = TrainSpec.model_validate(config["spec"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    use_gpu = spec.scaling.use_gpu and torch.cuda.is_available()
    device = torch.device(f"cuda:{ctx.get_local_rank()}" if use_gpu else "cpu")
    bf16 = spec.bf16 if spec.bf16 is not None else use_gpu
    torch.manual_seed(spec.seed)

    hf = spec.model_family == "hf_vlm"  # a transformers model (pf_ray.train.hf_build)
    build = build_hf_for_training if hf else build_for_training
    built = build(spec, device=device, rank=rank, world=world, bf16=bf16,
                  sharded=spec.fsdp and torch.distributed.is_initialized())
    model = built.model
    model.train()
    image_size = None if hf else model.config.vision.image_size
    optimizer = build_optimizer(model, spec.optim, decays=hf_decays if hf else None)
    total = config["total_steps"]
    scheduler = build_scheduler(optimizer, spec.optim, total)
    progress = load_checkpoint(model, optimizer, scheduler)  # restores each rank's RNG too
    resumed_from = progress["step"] if progress else 0
    if progress is None:
        progress = {"step": 0, "epoch": 0, "position": 0}
        torch.manual_seed(spec.seed * 1000 + rank)  # LoRA dropout differs per rank
    history = _load_history(spec, resumed_from) if rank == 0 else []
    tracker = open_tracker(spec, rank, resumed_from)  # TensorBoard, MLflow, W&B (rank 0)

    shard = ray.train.get_dataset_shard("train")  # every raw row, the same on every rank
    examples = RankExamples(example_builder(spec), rank=rank, world=world,
                            batch_size=spec.batch_size, workers=spec.data_workers)
    pad_id = examples.builder.tokenizer.pad_token_id
    step, epoch, position = progress["step"], progress["epoch"], progress["position"]
    # running totals since the run began (a checkpoint of an earlier pf-ray lacks some)
    counts = {k: progress.get(k, 0) for k in ("images_unreadable", "examples_skipped",
                                              "empty_batches")}
    accum = 0
    t_last, tokens, images, waited = time.time(), 0, 0, 0.0
    while epoch < spec.epochs and step < total:
        batches = shard.iter_batches(batch_size=spec.batch_size * world,
                                     batch_format="pyarrow", drop_last=True)
        t_wait = time.time()
        # this rank's examples of each global batch; those before position are not built
        for k, mine in examples.epoch(batches, skip=position):
            waited += time.time() - t_wait
            batch = (collate_hf(mine, examples.builder, device) if hf  # type: ignore[arg-type]
                     else collate(mine, pad_id, image_size, device))
            counts["images_unreadable"] += sum(mine["images_unreadable"])
            counts["examples_skipped"] += sum(mine["examples_skipped"])
            images += sum(mine["n_images"])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                if hf:  # input_ids, attention_mask, labels and the processor's image tensors
                    out = model(**batch, use_cache=False)
                else:
                    out = model(batch["input_ids"], batch["images"],
                                image_mask=batch["image_mask"],
                                attention_mask=batch["attention_mask"], labels=batch["labels"])
            loss, empty = guarded_loss(out, batch["labels"])
            counts["empty_batches"] += int(empty)
            (loss / spec.grad_accum).backward()
            tokens += int((batch["labels"] != IGNORE_INDEX).sum())
            accum += 1
            position = k + 1
            if accum < spec.grad_accum:
                t_wait = time.time()
                continue
            accum = 0
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], spec.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            now = time.time()
            metrics = {"step": step, "epoch": epoch, "position": position,
                       "loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0],
                       "grad_norm": float(grad_norm.full_tensor() if hasattr(
                           grad_norm, "full_tensor") else grad_norm),
                       "tokens_per_s": tokens / max(now - t_last, 1e-9),
                       "step_s": now - t_last, "data_wait_s": waited, "images": images,
                       **counts, "resumed_from": resumed_from}
            t_last, tokens, images, waited = now, 0, 0, 0.0
            metrics.update(memory.read(device))  # measured peaks (this rank's)
            if step == progress["step"] + 1:
                metrics["build_host_bytes"] = built.host_peak_bytes
            history.append(metrics)
            tracker.log(metrics)
            if rank == 0 and spec.ray.progress:  # worker stdout reaches the driver's console
                console_line(step_line(spec.run_name, total, metrics))
            if spec.fail_at_step == step and _first_failure(spec, rank):
                raise RuntimeError(f"injected failure at step {step} (fail_at_step)")
            if step % spec.checkpoint_every == 0 or step == total:
                if rank == 0:
                    _write_history(spec, history)
                tracker.flush()
                save_checkpoint(model, optimizer, scheduler,
                                {"step": step, "epoch": epoch, "position": position,
                                 **counts}, metrics)
            # no ray.train.report between checkpoints: in Train V2 a report waits until the
            # controller drains the worker's result queue (size 1), which it polls every
            # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s). Reporting every step capped the tiny
            # preset at one step per 2.0 s (0.6 s of compute; step_s measured on 2 CPUs).
            # Per-step metrics go to the console and metrics.json instead.
            if step >= total:
                break
            t_wait = time.time()
        else:
            epoch, position = epoch + 1, 0
            continue
        break
    examples.close()
    if rank == 0:
        _write_history(spec, history)
    tracker.close()
    if spec.export:
        export_model(model, spec, rank, step)


def _run_folder(spec: TrainSpec) -> str:
    from pf_ray.storage import join

    return join(spec.storage_path, spec.run_name)


def _load_history(spec: TrainSpec, upto: int) -> list[dict[str, Any]]:
    """Metrics of the steps before the checkpoint this run resumes from."""
    from pf_ray.storage import exists, join, read_bytes, resolve

    fs, path = resolve(join(_run_folder(spec), "metrics.json"), spec.storage)
    if not upto or not exists(fs, path):
        return []
    return [r for r in json.loads(read_bytes(fs, path)) if r["step"] <= upto]


def _write_history(spec: TrainSpec, history: list[dict[str, Any]]) -> None:
    from pf_ray.train.metrics import write_metrics

    write_metrics(history, _run_folder(spec), spec.storage)


def _first_failure(spec: TrainSpec, rank: int) -> bool:
    """True once per run (a marker beside the checkpoints remembers the failure)."""
    from pf_ray.storage import exists, join, resolve, write_bytes_atomic

    fs, base = resolve(join(spec.storage_path, spec.run_name, "_injected_failure"), spec.storage)
    if exists(fs, base):
        return False
    if rank == 0:
        write_bytes_atomic(fs, base, b"failed once\n")
    return True


def export_model(model: Any, spec: TrainSpec, rank: int, step: int) -> None:
    """Gather the full weights and write a model folder (rank 0), adapters or merged
    (family hf_vlm: a transformers folder, :mod:`pf_ray.train.hf_export`)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from pf_ray.train.export import write_export
    from pf_ray.train.hf_export import write_hf_export

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))
    if rank == 0:
        (write_hf_export if spec.model_family == "hf_vlm" else write_export)(full, spec, step)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
