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
Prints requests/s, generated (completion) tokens/s, p50 and p99 latency, the mean batch size
the replica ran (from its /health counters), and the batched / unbatched ratios of requests/s
and tokens/s at each level.

Both apps get the same requests at each level (request i has the same body in both), and
the bench checks that each got the same completion from both (text, completion tokens,
finish reason; greedy, so batching must not change them): it lists the requests that
differ and exits 1 if any does, after printing the table.
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
import sys
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Reply:
    """One request's measured latency and what the app answered (text, tokens, why it
    stopped): the batched and unbatched apps must answer each request alike."""

    seconds: float
    tokens: int
    text: str
    finish_reason: str | None


async def one(session: Any, url: str, req: dict[str, Any]) -> Reply:
    t0 = time.perf_counter()
    async with session.post(url, json=req) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
        if req["stream"]:
            tokens, parts, reason = 0, [], None
            async for line in resp.content:
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices") or []:
                    parts.append(choice["delta"].get("content") or "")
                    reason = choice.get("finish_reason") or reason
            text = "".join(parts)
        else:
            reply = await resp.json()
            tokens = reply["usage"]["completion_tokens"]
            text = reply["choices"][0]["message"]["content"]
            reason = reply["choices"][0]["finish_reason"]
    return Reply(time.perf_counter() - t0, tokens, text, reason)


async def level(url: str, concurrency: int, n: int, pics: list[str],
                max_tokens: int) -> tuple[dict[str, Any], dict[int, Reply]]:
    """Measure one app at one concurrency; also returns each request's reply by index."""
    import aiohttp

    queue = list(range(n))
    replies: dict[int, Reply] = {}

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            i = queue.pop()
            replies[i] = await one(session, url, body(i, pics, max_tokens))

    conn = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        await one(session, url, body(0, pics, max_tokens))  # warm the connection
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = sorted(r.seconds for r in replies.values())
    toks = sum(r.tokens for r in replies.values())
    async with aiohttp.ClientSession() as session, \
            session.get(url.replace("/v1/chat/completions", "/health")) as resp:
        health = await resp.json()  # this replica's batch counters so far
    return {"batches_so_far": health["batches"], "batched_so_far": health["batched_requests"],
            "concurrency": concurrency, "requests": n, "wall_s": round(wall, 3),
            "rps": round(n / wall, 2), "tokens_per_s": round(toks / wall, 1),
            "p50_s": round(statistics.median(lat), 4),
            "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 4),
            "completion_tokens": toks}, replies


def differences(concurrency: int, batched: dict[int, Reply],
                unbatched: dict[int, Reply]) -> list[str]:
    """The requests whose completions differ between the two apps (text, token count or
    finish reason), described one a line. Greedy decoding of the same model must give the
    same completion whether a request decoded alone or in a batch (left padding, rows
    leaving the batch); a difference means batching changed what the model says, and
    the throughput ratio would compare different work."""
    out = []
    for i in sorted(unbatched):
        a, b = unbatched[i], batched.get(i)
        if b is None:
            out.append(f"concurrency {concurrency}, request {i}: no batched reply")
        elif (a.text, a.tokens, a.finish_reason) != (b.text, b.tokens, b.finish_reason):
            out.append(f"concurrency {concurrency}, request {i}: unbatched {a.tokens} tokens "
                       f"({a.finish_reason}) {a.text[:80]!r} | batched {b.tokens} tokens "
                       f"({b.finish_reason}) {b.text[:80]!r}")
    return out


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
    mismatches: list[str] = []
    completions: list[dict[str, Any]] = []  # the unbatched app's replies, for the JSON
    try:
        for c in args.concurrency:
            n = max(8, args.requests * c)
            replies = {}
            for name in ("unbatched", "batched"):
                measured, replies[name] = asyncio.run(level(urls[name], c, n, pics,
                                                             args.max_tokens))
                results[name].append(measured)
                prev = results[name][-2] if len(results[name]) > 1 else None
                now = results[name][-1]
                batches = now["batches_so_far"] - (prev["batches_so_far"] if prev else 0)
                reqs = now["batched_so_far"] - (prev["batched_so_far"] if prev else 0)
                now["mean_batch"] = round(reqs / max(batches, 1), 2)
            found = differences(c, replies["batched"], replies["unbatched"])
            completions.append({"concurrency": c, "replies": {
                i: {"tokens": r.tokens, "finish_reason": r.finish_reason, "text": r.text,
                    "stream": body(i, pics, args.max_tokens)["stream"]}
                for i, r in sorted(replies["unbatched"].items())}})
            results["batched"][-1]["same_completions"] = n - len(found)
            mismatches += found
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
        b, u = results["batched"][i], results["unbatched"][i]
        print(f"{c:>11} {'ratio':>10} {b['rps'] / u['rps']:>6.2f}x "
              f"{b['tokens_per_s'] / max(u['tokens_per_s'], 1e-9):>6.2f}x  (batched / "
              f"unbatched; same completions: {b['same_completions']} of {b['requests']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "mismatches": mismatches,
                       "completions": completions}, f, indent=1)
    if mismatches:
        print(f"FAILED: {len(mismatches)} request(s) got different completions from the "
              "batched and the unbatched app (greedy, same model):", file=sys.stderr)
        for line in mismatches[:20]:
            print("  " + line, file=sys.stderr)
        raise SystemExit(1)
    print("every request got the same completion (text, tokens, finish reason) from both "
          "apps")


if __name__ == "__main__":
    main()
