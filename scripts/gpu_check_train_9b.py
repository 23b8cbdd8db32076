"""GPU check (device machine): the 9B preset (openflamingo-9b-v1) trains on one GPU as one
rank of the paper's 8-GPU runs would: meta construction, FSDP2 (world 1, NCCL), bf16 compute
over fp32 trainable masters, activation checkpointing per decoder layer, AdamW. Random
weights, random tokens (one image per sample). Prints tokens/s, MFU and peak GPU memory for
activation checkpointing on, then off (the baseline: faster when it fits).

    PYTHONPATH=. python3 scripts/gpu_check_train_9b.py [--stage rewriter] [--batch 4]
        [--seq 1024] [--steps 6] [--peak-tflops 989]
    # a dry run of the script itself on the CPU (gloo), small preset:
    PYTHONPATH=. python3 scripts/gpu_check_train_9b.py --device cpu --preset tiny --seq 64

MFU = model FLOPs per second / peak bf16 FLOPs (989 TFLOP/s dense for H100 / H200 SXM).
Model FLOPs per token, as torchtitan counts them: 6 x (LM + cross-attention + perceiver
parameters, embeddings excluded) + 12 x layers x width x sequence (attention), plus the frozen
vision tower's forward (2 x its parameters x 577 tokens per image, once per sample). A LoRA
stage skips the frozen weights' gradients (4N instead of 6N): ``needed`` is that count, the
work the step really has; recomputation by checkpointing is counted by neither.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist

from pf_ray.config import parse_spec


def init_random(model: torch.nn.Module) -> None:
    """Random values on the GPU (fast): norms 1, biases and gates 0, the rest N(0, 0.02);
    LoRA B stays 0 as a fresh adapter's."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            if name.endswith("_gate") or name.endswith(".bias") or ".lora_B." in name:
                local.zero_()
            elif p.dim() == 1:
                local.fill_(1.0)
            else:
                local.normal_(0.0, 0.02)


def flops_per_token(model: torch.nn.Module, seq: int) -> tuple[float, float]:
    """(torchtitan's 6N + attention count, the count the stage needs), per LM token."""
    cfg = model.config
    emb = {id(model.lang_encoder.get_input_embeddings().weight)}
    head = model.lang_encoder.get_output_embeddings()
    if head is not None:
        emb.add(id(head.weight))
    dense = trainable = 0
    for name, p in model.named_parameters():
        if name.startswith("vision_encoder.") or id(p) in emb:
            continue
        n = p.numel()  # a DTensor's numel is its global size
        dense += n
        trainable += n if p.requires_grad else 0
    attention = 12 * cfg.lm.num_layers * cfg.lm.hidden_size * seq
    return 6 * dense + attention, 4 * dense + 2 * trainable + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="rewriter")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--preset", default="openflamingo-9b-v1")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    cuda = args.device == "cuda"

    from pf_ray.train.build import compute_dtype, materialise, meta_model
    from pf_ray.train.fsdp import shard_model
    from pf_ray.train.optim import build_optimizer

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    if cuda:
        torch.cuda.set_device(0)
    device = torch.device("cuda:0" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device {name}, torch {torch.__version__}")
    for checkpointing in (True, False):
        spec = parse_spec({"kind": "train", "stage": args.stage, "model": args.preset,
                           "data": [{"path": "/unused"}], "storage_path": "/unused",
                           "run_name": "gpu-check", "bf16": True,
                           "activation_checkpointing": checkpointing})
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        model = meta_model(spec, None)
        shard_model(model, device_type=device.type, world_size=1,
                    param_dtype=compute_dtype(model, True))
        materialise(model, device)
        init_random(model)
        model.train()
        built_s = time.time() - t0
        masters = {str(p.dtype) for p in model.parameters() if p.requires_grad}
        optimizer = build_optimizer(model, spec.optim)
        cfg = model.config
        g = torch.Generator(device=device).manual_seed(0)
        ids = torch.randint(3, cfg.lm.vocab_size - 3, (args.batch, args.seq), device=device,
                            generator=g)
        ids[:, 1] = cfg.tokens.media
        size = cfg.vision.image_size
        images = torch.randn(args.batch, 1, 3, size, size, device=device, generator=g)
        labels = ids.clone()
        times = []
        try:
            for step in range(args.steps):
                sync()
                t = time.time()
                out = model(ids, images, labels=labels)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                sync()
                times.append(time.time() - t)
                print(f"  ac={checkpointing} step {step} {times[-1]:.3f}s "
                      f"loss {float(out.loss):.3f}", flush=True)
        except torch.OutOfMemoryError:
            print(f"activation_checkpointing={checkpointing}: out of memory at batch "
                  f"{args.batch} x {args.seq}")
            del model, optimizer
            torch.cuda.empty_cache()
            continue
        step_s = sum(times[2:]) / max(1, len(times[2:]))
        tokens = args.batch * args.seq
        per_token_6n, per_token_needed = flops_per_token(model, args.seq)
        vis = sum(p.numel() for n, p in model.named_parameters()
                  if n.startswith("vision_encoder."))
        vision_flops = 2 * vis * ((size // cfg.vision.patch_size) ** 2 + 1) * args.batch
        peak = args.peak_tflops * 1e12
        mfu = (per_token_6n * tokens + vision_flops) / step_s / peak
        needed = (per_token_needed * tokens + vision_flops) / step_s / peak
        peak_mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        print(f"activation_checkpointing={checkpointing} stage={args.stage} batch {args.batch} "
              f"x seq {args.seq}: built in {built_s:.1f}s, trainable masters {masters}, "
              f"{tokens / step_s:.0f} tokens/s, step {step_s:.3f}s, MFU {mfu:.1%} "
              f"(6N count), {needed:.1%} (the stage's own count), peak GPU memory "
              f"{peak_mem:.1f} GiB")
        del model, optimizer, out
        if cuda:
            torch.cuda.empty_cache()
    dist.destroy_process_group()
    print("GPU CHECK DONE")


if __name__ == "__main__":
    main()
