"""How well a rewriter reconstructs originals from distorted drafts (mean ROUGE-L)."""

from __future__ import annotations

from typing import Any

from pf_ray.data.images import ImageLoader
from pf_ray.metrics.rouge import rouge_l
from pf_ray.specs import StorageConfig


def reconstruction_rouge(model: Any, tokenizer: Any, pairs: list[dict[str, Any]], *,
                         max_new_tokens: int = 96, batch_size: int = 16,
                         prompt_format: str = "paper") -> float:
    """Mean ROUGE-L of the rewriter's revision of each draft against the original.

    ``pairs`` are rows of a distort dataset (instruction, distorted, original, image...);
    ``prompt_format`` is the rewriter prompt the model was trained with (``paper`` or
    ``released``).
    """
    import torch

    from pf_ray.model.generate import GenerationConfig, generate
    from pf_ray.model.prompts import STOP_STRINGS, clean_response, encode_rewrite

    loader = ImageLoader(storage=StorageConfig())
    mode = model.config.xattn.mask
    scores = []
    model.eval()
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        images = [[loader.load(p.get("image"), p.get("image_bytes"))]
                  if p.get("image") or p.get("image_bytes") else [] for p in chunk]
        prompts = [encode_rewrite(tokenizer, p["instruction"], p["distorted"], None,
                                  images=len(imgs), mode=mode,
                                  prompt_format=prompt_format).input_ids  # type: ignore[arg-type]
                   for p, imgs in zip(chunk, images, strict=True)]
        with torch.no_grad():
            outs = generate(model, tokenizer, prompts, images, GenerationConfig(
                max_new_tokens=max_new_tokens, stop_strings=STOP_STRINGS))
        for p, out in zip(chunk, outs, strict=True):
            scores.append(rouge_l(clean_response(out.text), p["original"]))
    return sum(scores) / max(1, len(scores))
