"""Batched generation vs one-by-one generation on the tiny model.

    python bench/bench_generate.py [--batch 32] [--unique-images 4] [--max-new-tokens 32]
                                   [--preset tiny] [--threads N] [--repeats 3]
                                   [--device cpu|cuda] [--dtype float32|bfloat16]

Both runs decode the same prompts (mixed lengths, one image each, ``--unique-images``
distinct images shared across the batch) greedily with the KV cache:

* batched: one ``generate`` call for all prompts (left padding, each unique image encoded
  once, finished rows leave the batch);
* one-by-one: one ``generate`` call per prompt (its image encoded each time), the loop the
  released inference code runs.

Prints generated tokens/s of each (best of ``--repeats``), the ratio, and checks that both
produced the same tokens.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

import torch
from PIL import Image, ImageDraw

from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.generate import Generation, GenerationConfig, generate
from pf_ray.model.presets import get_preset
from pf_ray.model.prompts import Turn, encode_chat
from pf_ray.model.tokenizer import load_tokenizer

QUESTIONS = (
    "What colour is the circle?",
    "Describe the following image in detail.",
    "How many shapes are there in the image?",
    "Is there a blue square in the image? Please explain where it is and what is around it.",
    "What is this?",
    "Give an elaborate description of the image.",
    "Which shape is the largest, and where is it located in the picture?",
    "What objects are in the image, and where are they?",
)
T = TypeVar("T")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")


def make_image(i: int, size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    c = COLOURS[i % len(COLOURS)]
    draw.ellipse((size * 0.1, size * 0.1, size * 0.5, size * 0.5), fill=c)
    draw.rectangle((size * 0.5, size * (0.4 + 0.05 * i % 0.5), size * 0.9, size * 0.9),
                   fill=COLOURS[(i + 2) % len(COLOURS)])
    return img


def timed(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Best wall time of ``repeats`` calls, and the last result."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--unique-images", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = get_preset(args.preset).replace(dtype=args.dtype)
    model = build_flamingo(config, device=args.device).eval()
    tokenizer = load_tokenizer(config.tokenizer)
    mode = config.xattn.mask
    size = config.vision.image_size
    images = [make_image(i, size) for i in range(args.unique_images)]
    prompts, prompt_images = [], []
    for i in range(args.batch):
        q = QUESTIONS[i % len(QUESTIONS)]
        prompts.append(encode_chat(tokenizer, [Turn(q, images=1)], mode).input_ids)
        # a fresh copy: deduplication goes by content, not by object
        prompt_images.append([images[i % args.unique_images].copy()])
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens)

    def batched() -> list[Generation]:
        return generate(model, tokenizer, prompts, prompt_images, gen)

    def one_by_one() -> list[Generation]:
        return [generate(model, tokenizer, [p], [im], gen)[0]
                for p, im in zip(prompts, prompt_images, strict=True)]

    batched()  # warm-up
    t_batch, out_batch = timed(batched, args.repeats)
    t_single, out_single = timed(one_by_one, args.repeats)
    same = [g.token_ids for g in out_batch] == [g.token_ids for g in out_single]
    tokens = sum(len(g.token_ids) for g in out_batch)
    lengths = sorted({len(p) for p in prompts})
    print(f"preset {args.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
          f"{args.batch} prompts ({lengths[0]}-{lengths[-1]} tokens), {args.unique_images} unique "
          f"images, {args.max_new_tokens} new tokens max, {args.device} {args.dtype}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"one-by-one: {tokens / t_single:8.1f} tokens/s  ({t_single:.2f} s)")
    print(f"batched:    {tokens / t_batch:8.1f} tokens/s  ({t_batch:.2f} s)")
    print(f"ratio:      {t_single / t_batch:8.1f}x   same tokens: {same}")
    if not same:
        raise SystemExit("batched and one-by-one outputs differ")


if __name__ == "__main__":
    main()
