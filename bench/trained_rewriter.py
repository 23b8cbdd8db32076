"""A small trained rewriter for the benchmarks: one whose outputs end at EOS.

An untrained (random) model never emits EOS, so every row decodes to ``max_new_tokens``:
all rows of a batch run equally long, the best case for static batching. A trained
rewriter stops after a varied number of tokens, so a batch keeps decoding for its longest
row while the shorter ones have left it; that is the case a benchmark of batched
generation must also show.

:func:`train_rewriter` trains the ``tiny`` preset in this process (no Ray Train: a plain
torch loop over the training loss of :mod:`pf_ray.train`, :func:`fit_rewriter`, which
``bench/bench_presets.py`` uses too) on the (distorted, original) pairs of the quickstart's distortion families
(:func:`distort_spec`), as the quickstart's rewriter stage does, with its settings
(batch size, max length, learning rate, whole LM trainable: a random LM cannot be adapted
by LoRA alone; bf16 autocast where the CPU has native bf16; see
:mod:`pf_ray.quickstart.settings`), and saves it as a model folder (float32 weights).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainedRewriter:
    folder: str
    steps: int
    seconds: float
    first_loss: float  # mean of the first 10 steps' losses
    last_loss: float  # mean of the last 10 steps' losses


def distort_spec(synthetic: str, output: str) -> dict[str, Any]:
    """The quickstart's distortion job without an LLM (augment + captions/boxes families)."""
    from pf_ray.quickstart.flow import CLEAN_SOURCES

    return {"kind": "distort", "inputs": [synthetic], "boxes_from": synthetic,
            "output": {"path": output}, "select": {"sources": CLEAN_SOURCES},
            "mixture": {"text": {"llm": 1.0, "augment": 1.0}}, "ray": {"progress": False}}


def fit_rewriter(model: Any, tok: Any, pairs: list[dict[str, Any]], *, preset: str,
                 steps: int, seed: int = 0, bf16: bool = False, max_images: int = 1,
                 log_every: int = 0) -> tuple[list[float], float]:
    """Train ``model`` (built from ``preset``) in place on ``pairs`` for ``steps`` steps with
    the quickstart's rewriter settings (what trains, lr, batch size, max length); returns
    each step's loss and the seconds the steps took. Also used by ``bench_presets.py``."""
    import torch

    from pf_ray.model.trainability import apply_trainability
    from pf_ray.quickstart.settings import SETTINGS
    from pf_ray.specs import StorageConfig
    from pf_ray.train.data import ExampleBuilder
    from pf_ray.train.loop import collate
    from pf_ray.train.optim import build_optimizer, build_scheduler
    from pf_ray.train.spec import OptimConfig, TrainSpec

    if steps < 1:
        raise ValueError(f"fit_rewriter steps: received {steps}; allowed: >= 1")
    if not pairs:
        raise ValueError("fit_rewriter pairs: received none; allowed: rows of a distort "
                         "dataset (instruction, distorted, original)")
    cfg = SETTINGS[preset]
    spec = TrainSpec.model_validate({
        "kind": "train", "stage": "rewriter", "model": preset, "data": [{"path": "-"}],
        "storage_path": "-", "run_name": "-", "trainable": cfg.lm_trainable or None})
    apply_trainability(model, spec.trainability())
    optim = OptimConfig(lr=cfg.rewriter.lr)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, steps)
    builder = ExampleBuilder(preset, "rewrite", cfg.max_length, max_images, False, seed,
                             StorageConfig())
    size, pad = model.config.vision.image_size, tok.pad_token_id
    rows = list(pairs)
    random.Random(seed).shuffle(rows)
    params = [p for p in model.parameters() if p.requires_grad]
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        chunk = [rows[(step * cfg.batch_size + i) % len(rows)] for i in range(cfg.batch_size)]
        batch = collate(builder({k: [r[k] for r in chunk] for k in chunk[0]}), pad, size,
                        torch.device("cpu"))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(batch["input_ids"], batch["images"], image_mask=batch["image_mask"],
                        attention_mask=batch["attention_mask"], labels=batch["labels"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"      rewriter step {step + 1}/{steps}: loss {losses[-1]:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    seconds = time.perf_counter() - t0
    model.eval()
    return losses, seconds


def train_rewriter(pairs: list[dict[str, Any]], folder: Path, *, steps: int,
                   preset: str = "tiny", seed: int = 0, log_every: int = 50) -> TrainedRewriter:
    """Train ``preset`` from its seeded random weights on ``pairs`` (rows of a distort
    dataset) for ``steps`` steps with the quickstart's rewriter settings; save it to
    ``folder`` (a pf-ray model folder, LoRA unmerged as training exports it)."""
    import torch

    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer
    from pf_ray.quickstart.settings import native_bf16

    torch.manual_seed(seed)
    model = build_model(preset, seed=seed)
    tok = model_tokenizer(preset, model.config)
    # bf16 as the quickstart's training: faster where the CPU has native bf16
    losses, seconds = fit_rewriter(model, tok, pairs, preset=preset, steps=steps, seed=seed,
                                   bf16=native_bf16(), log_every=log_every)
    save_pretrained(model, folder, tokenizer=tok)
    head, tail = losses[:10], losses[-10:]
    return TrainedRewriter(str(folder), steps, seconds, sum(head) / len(head),
                           sum(tail) / len(tail))
