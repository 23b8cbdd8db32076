"""GPU check (device machine): FSDP2 + bf16 mixed precision on the tiny Flamingo, NCCL world
of 1, for the rewriter and clever_s2 stages. Run: PYTHONPATH=. python3 scripts/gpu_check_fsdp_bf16.py
(needs open_clip_torch, ftfy, wcwidth; no Ray)."""
import os
import time

import torch
import torch.distributed as dist

from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.presets import get_preset
from pf_ray.model.prompts import encode_rewrite
from pf_ray.model.tokenizer import load_tokenizer
from pf_ray.model.trainability import apply_trainability
from pf_ray.train.fsdp import shard_model
from pf_ray.train.stages import STAGE_TRAINABILITY

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29512")
dist.init_process_group("nccl", rank=0, world_size=1)
torch.cuda.set_device(0)
for stage in ("rewriter", "clever_s2"):
    torch.manual_seed(0)
    model = build_flamingo(get_preset("tiny")).cuda()
    apply_trainability(model, STAGE_TRAINABILITY[stage])
    shard_model(model, device_type="cuda", world_size=1, param_dtype=torch.bfloat16)
    tok = load_tokenizer(model.config.tokenizer)
    enc = [encode_rewrite(tok, "What is this?", "red circle", "There is a red circle.", images=1)
           for _ in range(4)]
    ids = torch.tensor([e.input_ids for e in enc]).cuda()
    labels = torch.tensor([e.labels for e in enc]).cuda()
    images = torch.randn(4, 1, 3, 64, 64).cuda()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    t = time.time()
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids, images, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(float(out.loss.detach()))
    torch.cuda.synchronize()
    print(f"{stage}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in 20 bf16 FSDP2 steps "
          f"({time.time() - t:.1f}s), logits dtype {out.logits.dtype}, "
          f"param type {type(next(model.parameters())).__name__}")
    assert losses[-1] < losses[0]
dist.destroy_process_group()
print("GPU CHECK OK")
