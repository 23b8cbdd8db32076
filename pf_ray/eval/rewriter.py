"""How well a rewriter reconstructs originals from distorted drafts (ROUGE-L), beside the
baseline of doing nothing: returning the draft unchanged."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pf_ray.data.images import ImageLoader
from pf_ray.metrics.rouge import rouge_l
from pf_ray.specs import StorageConfig


def revise(model: Any, tokenizer: Any, pairs: list[dict[str, Any]], *,
           max_new_tokens: int = 96, batch_size: int = 16,
           prompt_format: str = "paper") -> list[str]:
    """The rewriter's revision of each pair's draft (greedy).

    ``pairs`` are rows of a distort dataset (instruction, distorted, original, image...);
    ``prompt_format`` is the rewriter prompt the model was trained with (``paper`` or
    ``released``).
    """
    from pf_ray.engines.config import DecodingConfig
    from pf_ray.engines.flamingo import FlamingoGenerator
    from pf_ray.model.prompts import STOP_STRINGS, clean_response, encode_rewrite

    loader = ImageLoader(storage=StorageConfig())
    gen = FlamingoGenerator(model=model.eval(), tokenizer=tokenizer,
                            decoding=DecodingConfig(max_new_tokens=max_new_tokens))
    images = [[loader.load(p.get("image"), p.get("image_bytes"))]
              if p.get("image") or p.get("image_bytes") else [] for p in pairs]
    prompts = [encode_rewrite(tokenizer, p["instruction"], p["distorted"], None,
                              images=len(imgs), mode=gen.mask_mode,
                              prompt_format=prompt_format).input_ids  # type: ignore[arg-type]
               for p, imgs in zip(pairs, images, strict=True)]
    # A prompt too long for the model is revised to nothing (scored as such).
    return [clean_response(r.text) for r in gen.generate_ids(prompts, images, STOP_STRINGS,
                                                           batch_size=batch_size)]


def mean_rouge(pairs: list[dict[str, Any]], texts: list[str]) -> dict[str, float]:
    """Mean ROUGE-L of ``texts`` against each pair's original: ``overall`` and per family."""
    per: dict[str, list[float]] = defaultdict(list)
    for pair, text in zip(pairs, texts, strict=True):
        score = rouge_l(text, pair["original"])
        per["overall"].append(score)
        per[pair.get("family") or "unknown"].append(score)
    return {k: sum(v) / len(v) for k, v in per.items()}


def copy_baseline(pairs: list[dict[str, Any]]) -> dict[str, float]:
    """The same scores for returning every draft unchanged (the rewriter's baseline)."""
    return mean_rouge(pairs, [p["distorted"] for p in pairs])


def revise_vlm(generator: Any, pairs: list[dict[str, Any]], *,
               batch_size: int = 16) -> list[str]:
    """:func:`revise` for an ``hf_vlm`` rewriter: ``generator`` is a
    :class:`~pf_ray.engines.hf_vlm.HFVLMGenerator` (its decoding decides the length);
    the prompt is :func:`pf_ray.model.hf_vlm.prompts.rewrite_messages`."""
    from functools import partial

    from pf_ray.engines.base import Prompt
    from pf_ray.model.hf_vlm.prompts import rewrite_messages
    from pf_ray.model.prompts import STOP_STRINGS, clean_response

    loader = ImageLoader(storage=StorageConfig())
    prompts = []
    for p in pairs:
        images = ((loader.load(p.get("image"), p.get("image_bytes")),)
                  if p.get("image") or p.get("image_bytes") else ())
        prompts.append(Prompt(user=p["instruction"], images=images, stops=STOP_STRINGS,
                              messages=partial(rewrite_messages, p["instruction"],
                                               p["distorted"], len(images))))
    # a prompt too long for the model is revised to nothing (scored as such)
    return [clean_response(r.text) for r in generator.generate(prompts, batch_size=batch_size)]
