"""Contrastive (CLIP) pretraining of a small open_clip model on image-caption pairs.

Flamingo reads images through a *pretrained* CLIP tower (paper.md §3: openai ViT-L-14-336,
frozen). No CLIP weights ship inside a PyPI package, and a random tower hands the perceiver
features it cannot learn from in a quickstart's budget (measured on the quickstart's VQA
questions: after 1200 steps of training everything else, answers with and without the
image were the same). So the offline default pretrains its own small CLIP on an
image-caption corpus of the synthetic world, the way CLIP was pretrained on web pairs, and
the Flamingo model keeps its image tower frozen as the paper does.

The objective is open_clip's own (``open_clip.ClipLoss``: symmetric InfoNCE with the learned
temperature); the result is an open_clip state-dict file that ``vision.pretrained`` and the
CLIPScore filter load. :func:`retrieval_at_1` is the check against doing nothing: image to
caption retrieval on held-out pairs, beside chance (1 / pairs).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pf_ray.data.synthetic import CaptionPair


@dataclass(frozen=True)
class ClipRun:
    path: str  # the saved open_clip state dict
    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    retrieval_at_1: float  # held-out image -> caption, after training
    retrieval_untrained: float  # the same with the random initial weights
    chance: float  # 1 / held-out pairs


def _model(model_name: str, seed: int) -> torch.nn.Module:
    import open_clip

    from pf_ray.model.vision import register_tiny_configs

    register_tiny_configs()
    torch.manual_seed(seed)
    return open_clip.create_model(model_name, pretrained=None)


@torch.no_grad()
def retrieval_at_1(model: torch.nn.Module, model_name: str, pairs: Sequence[CaptionPair],
                   caption_index: int = 0) -> float:
    """Share of held-out images whose nearest caption (cosine, among the pairs' captions
    number ``caption_index``) is their own."""
    import open_clip

    if not pairs:
        return 0.0
    tokenizer = open_clip.get_tokenizer(model_name)
    transform = open_clip.image_transform(model.visual.image_size[0], is_train=False)
    was_training = model.training
    model.eval()
    images = torch.stack([transform(p.image) for p in pairs])  # (n, 3, H, W)
    texts = tokenizer([p.captions[caption_index % len(p.captions)] for p in pairs])
    sim = model.encode_image(images, normalize=True) @ model.encode_text(texts, normalize=True).T
    model.train(was_training)
    return float((sim.argmax(1) == torch.arange(len(pairs))).float().mean())


def train_clip(model_name: str, pairs: Sequence[CaptionPair], held: Sequence[CaptionPair],
               out: Path, *, steps: int, batch_size: int = 128, lr: float = 2e-3,
               seed: int = 0) -> ClipRun:
    """Train ``model_name`` (an open_clip config, random init) contrastively on ``pairs``;
    save its state dict to ``out``. Images are preprocessed once, captions drawn per step."""
    import open_clip

    if len(pairs) < 2:
        raise ValueError(f"pairs: received {len(pairs)}; allowed: at least 2 image-caption pairs")
    model = _model(model_name, seed)
    untrained = retrieval_at_1(model, model_name, held)
    tokenizer = open_clip.get_tokenizer(model_name)
    transform = open_clip.image_transform(model.visual.image_size[0], is_train=False)
    images = torch.stack([transform(p.image) for p in pairs])  # (n, 3, H, W)
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    rng = random.Random(seed)
    batch = min(batch_size, len(pairs))
    model.train()
    t0, losses = time.perf_counter(), []
    for _ in range(steps):
        idx = rng.sample(range(len(pairs)), batch)
        texts = tokenizer([rng.choice(pairs[i].captions) for i in idx])
        image_features, text_features, scale = model(images[idx], texts)
        loss = loss_fn(image_features, text_features, scale)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    return ClipRun(str(out), steps, round(seconds, 1), losses[0] if losses else 0.0,
                   losses[-1] if losses else 0.0, retrieval_at_1(model, model_name, held),
                   untrained, 1.0 / max(1, len(held)))
