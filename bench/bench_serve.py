"""Serving throughput: dynamic batching on vs off, same model, same run.

    python bench/bench_serve.py [--preset tiny] [--max-tokens 16] [--concurrency 1 8 32]
                                [--requests 2] [--batch 32] [--torch-threads 1]
                                [--gpus-per-replica 0] [--json out.json]

Two Serve applications run side by side on one local Ray, each one replica of the same
model folder (``--preset`` built with seeded random weights and saved as an export):

* ``batched``: ``@serve.batch`` with ``max_batch_size=--batch`` (requests that arrive
  within ``batch_wait_timeout_s``, the spec's default unless ``--batch-wait``, decode
  together in one ``generate_rows`` call);
* ``unbatched``: ``max_batch_size=1`` (each request decodes alone, as a plain handler would;
  a lone request never waits, whatever the timeout).

At each concurrency C, C clients (aiohttp, one event loop) send image chats (4 distinct
images, mixed questions, greedy, ``--max-tokens``) back to back, ``--requests`` x C requests
in all; a quarter of them stream (they share batches with the others). Both apps are
measured at one level before the next (interleaved, so background load hits both alike).
Prints requests/s, p50 and p99 latency, generated tokens/s, the mean batch size the replica
ran (from its /health counters), and the batched / unbatched request throughput ratio at
each level.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

QUESTIONS = ("What colour is the circle?", "Describe the following image in detail.",
             "How many shapes are there in the image?", "What is this?",
             "Is there a blue square in the image? Please explain where it is.")
MODEL = "clever-flamingo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def export(preset: str, folder: str) -> str:
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer

    save_pretrained(build_model(preset, seed=0), folder, model_tokenizer(preset))
    return folder


def body(i: int, pics: list[str], max_tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "temperature": 0, "max_tokens": max_tokens, "stream": i % 4 == 0,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]},
                {"type": "image_url", "image_url": {"url": pics[i % len(pics)]}}]}]}


async def one(session: Any, url: str, req: dict[str, Any]) -> tuple[float, int]:
    t0 = time.perf_counter()
    async with session.post(url, json=req) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
        if req["stream"]:
            tokens = 0
            async for line in resp.content:
                if line.startswith(b"data: {") and b'"usage"' in line:
                    usage = json.loads(line[6:]).get("usage")
                    tokens = usage["completion_tokens"] if usage else tokens
        else:
            tokens = (await resp.json())["usage"]["completion_tokens"]
    return time.perf_counter() - t0, tokens


async def level(url: str, concurrency: int, n: int, pics: list[str],
                max_tokens: int) -> dict[str, Any]:
    import aiohttp

    queue = list(range(n))
    lat: list[float] = []
    toks = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal toks
        while queue:
            i = queue.pop()
            took, tokens = await one(session, url, body(i, pics, max_tokens))
            lat.append(took)
            toks += tokens

    conn = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        await one(session, url, body(0, pics, max_tokens))  # warm the connection
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat.sort()
    async with aiohttp.ClientSession() as session, \
            session.get(url.replace("/v1/chat/completions", "/health")) as resp:
        health = await resp.json()  # this replica's batch counters so far
    return {"batches_so_far": health["batches"], "batched_so_far": health["batched_requests"],
            "concurrency": concurrency, "requests": n, "wall_s": round(wall, 3),
            "rps": round(n / wall, 2), "tokens_per_s": round(toks / wall, 1),
            "p50_s": round(statistics.median(lat), 4),
            "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=2, help="requests per client per level "
                                                           "(at least 8 in all)")
    p.add_argument("--batch", type=int, default=32, help="max_batch_size of the batched app")
    p.add_argument("--batch-wait", type=float, default=None,
                   help="batch_wait_timeout_s of the batched app (default: the spec's)")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--gpus-per-replica", type=float, default=0.0)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    import ray
    from ray import serve

    from pf_ray.serve.launch import start
    from pf_ray.serve.spec import ServeSpec

    folder = export(args.preset, tempfile.mkdtemp(prefix="bench-serve-"))
    ray.init(num_cpus=max(os.cpu_count() or 1, 4), include_dashboard=False,
             log_to_driver=False)
    port = free_port()
    urls = {}
    wait = {} if args.batch_wait is None else {"batch_wait_timeout_s": args.batch_wait}
    for name, batch in (("batched", args.batch), ("unbatched", 1)):
        spec = ServeSpec(kind="serve", model=folder, app_name=name, route_prefix=f"/{name}",
                         port=port,
                         deployment={"cpus_per_replica": 0.5, "torch_threads": args.torch_threads,
                                     "gpus_per_replica": args.gpus_per_replica,
                                     "max_ongoing_requests": max(64, 2 * args.batch)},
                         batching={"max_batch_size": batch, **wait},
                         limits={"max_tokens": max(args.max_tokens, 16),
                                 "default_max_tokens": 16})
        urls[name] = start(spec) + "/v1/chat/completions"
    pics = images()
    results: dict[str, list[dict[str, Any]]] = {"batched": [], "unbatched": []}
    try:
        for c in args.concurrency:
            n = max(8, args.requests * c)
            for name in ("unbatched", "batched"):
                results[name].append(asyncio.run(level(urls[name], c, n, pics,
                                                       args.max_tokens)))
                prev = results[name][-2] if len(results[name]) > 1 else None
                now = results[name][-1]
                batches = now["batches_so_far"] - (prev["batches_so_far"] if prev else 0)
                reqs = now["batched_so_far"] - (prev["batched_so_far"] if prev else 0)
                now["mean_batch"] = round(reqs / max(batches, 1), 2)
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"preset {args.preset}, max_tokens {args.max_tokens}, 1 replica each, "
          f"torch threads {args.torch_threads}, batched max_batch_size {args.batch}, "
          f"batch wait {args.batch_wait if args.batch_wait is not None else 'spec default'}")
    print(f"{'concurrency':>11} {'mode':>10} {'req/s':>7} {'tok/s':>7} {'p50 s':>7} "
          f"{'p99 s':>7} {'batch':>6}")
    for i, c in enumerate(args.concurrency):
        for name in ("unbatched", "batched"):
            r = results[name][i]
            print(f"{c:>11} {name:>10} {r['rps']:>7.2f} {r['tokens_per_s']:>7.1f} "
                  f"{r['p50_s']:>7.3f} {r['p99_s']:>7.3f} {r['mean_batch']:>6.1f}")
        ratio = results["batched"][i]["rps"] / results["unbatched"][i]["rps"]
        print(f"{c:>11} {'ratio':>10} {ratio:>7.2f}x  (batched / unbatched requests/s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
