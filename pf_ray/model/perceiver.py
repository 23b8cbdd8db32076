"""Perceiver resampler: a fixed number of learned latents that read the patch tokens.

Same module tree and parameter names as OpenFlamingo v1's ``PerceiverResampler`` (so
released ``perceiver.*`` keys load without renaming):

    latents                      (n_latents, D)
    layers.{i}.0                 PerceiverAttention: norm_media, norm_latents, to_q, to_kv, to_out
    layers.{i}.1                 FeedForward: 0 LayerNorm, 1 Linear D->mult*D, 2 GELU, 3 Linear back
    norm                         LayerNorm(D)

OpenFlamingo v1 builds it without media-time or frame embeddings, so each image is
resampled on its own (what makes per-image deduplication exact). Each layer attends from
the latents to [patch tokens; latents].

The 9B preset (D 1024, depth 6, 64 latents, 8 heads x 64, ff x4) has 63,019,008 params:
per layer attention 2 LayerNorms (2*2*1024) + to_q 1024*512 + to_kv 1024*1024 + to_out
512*1024 = 2,101,248, feed-forward LayerNorm 2048 + 2 * 1024*4096 = 8,390,656; times 6,
plus latents 64*1024 and the final norm 2048.
"""

from __future__ import annotations

import torch
from torch import nn

from pf_ray.model.config import PerceiverConfig


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """OpenFlamingo's FeedForward: LayerNorm, Linear up, GELU, Linear down (no biases)."""
    inner = dim * mult
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head ** -0.5
        inner = heads * dim_head
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x: ``(m, v, D)`` patch tokens; latents: ``(m, n, D)`` -> ``(m, n, D)``."""
        m, n, _ = latents.shape
        x = self.norm_media(x)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)  # (m, n, h*d)
        k, v = self.to_kv(torch.cat((x, latents), dim=1)).chunk(2, dim=-1)  # (m, v+n, h*d)
        q, k, v = (t.reshape(m, -1, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        sim = (q * self.scale) @ k.transpose(-1, -2)  # (m, h, n, v+n)
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        out = sim.softmax(dim=-1) @ v  # (m, h, n, d)
        return self.to_out(out.transpose(1, 2).reshape(m, n, -1))


class PerceiverResampler(nn.Module):
    def __init__(self, dim: int, cfg: PerceiverConfig):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, cfg.heads, cfg.dim_head),
                           feed_forward(dim, cfg.ff_mult)])
            for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Resample patch tokens to latents.

        Args:
            x: ``(b, T_img, v, D)`` patch tokens (any leading dims; each image on its own).

        Returns:
            ``(b, T_img, n_latents, D)``.
        """
        lead, (v, dim) = x.shape[:-2], x.shape[-2:]
        x = x.reshape(-1, v, dim)  # (m, v, D), m = b * T_img
        latents = self.latents.expand(x.shape[0], -1, -1)  # (m, n, D)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents).reshape(*lead, -1, dim)
