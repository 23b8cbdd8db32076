"""Gated cross-attention from text tokens to image latents, and the text-to-image masks.

Blocks (same parameter names as OpenFlamingo v1's ``GatedCrossAttentionBlock``):

    attn.norm, attn.to_q, attn.to_kv, attn.to_out     MaskedCrossAttention (no biases)
    attn_gate                                        (1,), tanh gate, initialised to 0
    ff.0 LayerNorm, ff.1 Linear up, ff.3 Linear down  optional gated feed-forward
    ff_gate                                          (1,), tanh gate, initialised to 0

    x = x + tanh(attn_gate) * attn(x, media)       (only tokens that see an image)
    x = x + tanh(ff_gate) * ff(x)                  (every token; ``ffn=False`` drops it)

Both gates start at 0, so a fresh model computes exactly its language model.

Sizes for the 9B preset (D 4096, D_v 1024, 8 heads x 64 = 512): attention 2*4096 (norm) +
4096*512 (to_q) + 1024*1024 (to_kv) + 512*4096 (to_out) + 1 (gate) = 5,251,073 per block,
42,008,584 for the 8 blocks ("≈42M"); feed-forward 2*4096 + 2 * 4096*16384 + 1 =
134,225,921 per block, so ≈1.12B with both.

Masks. Each token attends to the latents of exactly one image or to none; ``media_index``
``(b, t)`` holds that image's 1-based number, 0 for none. For the sequence
``a <image> b c <image> d e`` (two images):

    token          a  <image>  b  c  <image>  d  e
    previous_image 0     1     1  1     2     2  2    most recent image at or before the token
    next_image     1     1     2  2     2     0  0    the next image at or after the token

``next_image`` is the released OpenFlamingo v1 behaviour (``only_attend_immediate_media=True``,
``attend_previous=False``): text before an image describes it (``{text}<image><|endofchunk|>``)
and tokens after the last image, generated tokens included, get no cross-attention.
``previous_image`` is v2's: text after an image is about it (``<image>{text}``).

With a KV cache, ``past_images`` (images already in the cached prefix) continues the count,
so a decode step attends to the last image in ``previous_image`` mode and to none in
``next_image`` mode (no image can follow: generation never emits ``<image>``).

Vision features reach the blocks as a forward argument: the Flamingo forward passes a
:class:`CrossAttentionInputs` under the keyword ``flamingo_xattn`` through the Hugging Face
LM's ``**kwargs``; a forward pre-hook on every decoder layer pops it and, on layers that
have a block, applies the block to the layer's input hidden states. Nothing is stored on
the layers between calls, and the LM's own modules and parameter names are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pf_ray.model.config import CrossAttentionConfig, MaskMode
from pf_ray.model.perceiver import feed_forward

XATTN_KWARG = "flamingo_xattn"


# --------------------------------------------------------------------------- masks


def media_index(media_locations: torch.Tensor, mode: MaskMode,
                past_images: torch.Tensor | None = None) -> torch.Tensor:
    """The image each token attends to.

    Args:
        media_locations: ``(b, t)`` bool, True at ``<image>`` tokens.
        mode: ``"next_image"`` or ``"previous_image"`` (see the module doc).
        past_images: ``(b,)`` images in the cached prefix before these t tokens (0 if None).

    Returns:
        ``(b, t)`` long: 1-based image number, 0 = no cross-attention.
    """
    loc = media_locations.long()
    past = (torch.zeros(loc.shape[0], dtype=torch.long, device=loc.device)
            if past_images is None else past_images.to(loc.device).long())
    count = past[:, None] + loc.cumsum(dim=-1)  # images at or before each token
    if mode == "previous_image":
        return count
    if mode != "next_image":
        raise ValueError(f"mask mode: received {mode!r}; allowed: 'next_image', 'previous_image'")
    nxt = count + (1 - loc)  # a text token waits for the next image; an <image> token is its own
    total = count[:, -1:] if loc.shape[1] else past[:, None]  # images seen up to the last token
    return torch.where(nxt > total, torch.zeros_like(nxt), nxt)


def restrict_to_available(index: torch.Tensor, image_mask: torch.Tensor | None,
                          num_media: int) -> torch.Tensor:
    """Zero the entries of ``index`` ``(b, t)`` whose image is absent.

    An image is absent when its number exceeds ``num_media`` (the T_img rows given) or its
    row of ``image_mask`` ``(b, T_img)`` is False (zero-padding of images).
    """
    ok = (index > 0) & (index <= num_media)
    if image_mask is not None and num_media:
        row = (index - 1).clamp(0, num_media - 1)
        ok &= image_mask.to(index.device).gather(1, row)
    return torch.where(ok, index, torch.zeros_like(index))


def text_to_image_mask(index: torch.Tensor, num_media: int) -> torch.Tensor:
    """``(b, t)`` image numbers -> ``(b, t, T_img)`` bool: True where token i sees image j."""
    images = torch.arange(1, num_media + 1, device=index.device)
    return index[:, :, None] == images


# --------------------------------------------------------------------------- blocks


class MaskedCrossAttention(nn.Module):
    def __init__(self, dim: int, dim_visual: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head ** -0.5
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_visual, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, media: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Cross-attend text to image latents.

        Args:
            x: ``(b, t, D)`` text hidden states.
            media: ``(b, T_img, n, D_v)`` image latents.
            index: ``(b, t)`` image number per token (0 = none), see :func:`media_index`.

        Returns:
            ``(b, t, D)``; exactly 0 for tokens that see no image.
        """
        b, t, _ = x.shape
        num_media, n = media.shape[1], media.shape[2]
        q = self.to_q(self.norm(x)).reshape(b, t, self.heads, self.dim_head).transpose(1, 2)
        k, v = self.to_kv(media.reshape(b, num_media * n, -1)).chunk(2, dim=-1)  # (b, T*n, h*d)
        k, v = (z.reshape(b, num_media * n, self.heads, self.dim_head).transpose(1, 2)
                for z in (k, v))  # (b, h, T*n, d)
        sim = (q * self.scale) @ k.transpose(-1, -2)  # (b, h, t, T*n)
        allowed = text_to_image_mask(index, num_media).repeat_interleave(n, dim=-1)  # (b, t, T*n)
        sim = sim.masked_fill(~allowed[:, None], torch.finfo(sim.dtype).min)
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        attn = sim.softmax(dim=-1) * (index > 0)[:, None, :, None].to(sim.dtype)
        out = (attn @ v).transpose(1, 2).reshape(b, t, -1)  # (b, t, h*d)
        return self.to_out(out)


class GatedCrossAttentionBlock(nn.Module):
    """One gated block; with ``checkpointing`` on (training), its activations are recomputed
    in the backward pass. Like Hugging Face's decoder layers, ``forward`` is what is
    checkpointed, not ``__call__``: module hooks (FSDP2's gathering) run once."""

    def __init__(self, dim: int, dim_visual: int, cfg: CrossAttentionConfig):
        super().__init__()
        self.attn = MaskedCrossAttention(dim, dim_visual, cfg.heads, cfg.dim_head)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff = feed_forward(dim, cfg.ff_mult) if cfg.ffn else None
        self.ff_gate = nn.Parameter(torch.zeros(1)) if cfg.ffn else None
        self.checkpointing = False

    def forward(self, x: torch.Tensor, media: torch.Tensor | None,
                index: torch.Tensor) -> torch.Tensor:
        """x: ``(b, t, D)``, media: ``(b, T_img, n, D_v)`` or None, index: ``(b, t)`` -> ``(b, t, D)``."""
        if self.checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self._forward, x, media, index, use_reentrant=False)
        return self._forward(x, media, index)

    def _forward(self, x: torch.Tensor, media: torch.Tensor | None,
                 index: torch.Tensor) -> torch.Tensor:
        if media is not None and media.shape[1] and bool((index > 0).any()):
            x = x + self.attn_gate.tanh() * self.attn(x, media, index)
        if self.ff is not None:
            x = x + self.ff_gate.tanh() * self.ff(x)
        return x


def build_blocks(dim: int, dim_visual: int, cfg: CrossAttentionConfig,
                 num_layers: int) -> nn.ModuleDict:
    """One block per decoder layer ``i`` with ``(i+1) % every == 0``, keyed ``str(i)``."""
    return nn.ModuleDict({str(i): GatedCrossAttentionBlock(dim, dim_visual, cfg)
                          for i in cfg.layer_indices(num_layers)})


# --------------------------------------------------------------------------- wiring


@dataclass(frozen=True)
class CrossAttentionInputs:
    """What one forward call hands the decoder layers (through the LM's ``**kwargs``)."""

    blocks: nn.ModuleDict  # the model's gated_cross_attn_layers
    media: torch.Tensor | None  # (b, T_img, n, D_v)
    index: torch.Tensor  # (b, t) image number per token, 0 = none


def _pre_hook(layer_idx: int, module: nn.Module, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    ctx = kwargs.pop(XATTN_KWARG, None)
    key = str(layer_idx)
    if ctx is None or key not in ctx.blocks:
        return args, kwargs
    block = ctx.blocks[key]
    if args:
        args = (block(args[0], ctx.media, ctx.index), *args[1:])
    else:
        kwargs["hidden_states"] = block(kwargs["hidden_states"], ctx.media, ctx.index)
    return args, kwargs


def attach(layers: nn.ModuleList) -> list[RemovableHandle]:
    """Register the pre-hook on every decoder layer (layers without a block only pop the
    keyword). The hook holds the layer index only, so copies of the model stay correct."""
    return [layer.register_forward_pre_hook(partial(_pre_hook, i), with_kwargs=True)
            for i, layer in enumerate(layers)]
