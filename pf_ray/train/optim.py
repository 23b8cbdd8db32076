"""AdamW with weight decay on cross-attention parameters only (hf_vlm: the connector), and
the LR schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from pf_ray.train.spec import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig,
                    decays: Callable[[str], bool] | None = None) -> torch.optim.AdamW:
    """Two groups of trainable parameters: those ``decays`` names (default: the Flamingo
    family's ``gated_cross_attn*``) with weight decay, the rest without."""
    decays = decays or (lambda name: "gated_cross_attn" in name)
    decay, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decays(name) else rest).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay},
                          {"params": rest, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr * cfg.lr_scale, betas=cfg.betas)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then constant or cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        span = max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
