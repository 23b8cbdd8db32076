"""Rows/s of the rewrite job (actor pool, batched) vs the released code's batch-1 loop.

    python bench/bench_rewrite.py [--rows 1800] [--bare-rows 48] [--batch-size 32]
                                  [--actors 2] [--threads 1] [--max-new-tokens 128]
                                  [--model FOLDER] [--device cpu|cuda]

Both sides run the same rewriter (default: the ``tiny`` preset saved as a model folder, as
``pf-ray convert --preset tiny`` writes it) on the synthetic dataset's raw annotations
(source ``synthetic_vl``), greedy, the same prompt and stop strings:

* job: ``kind: rewrite`` on a local Ray instance, the flamingo engine in an actor pool of
  ``--actors`` actors with ``--threads`` torch threads each, ``--batch-size`` rows per
  ``generate`` call (each distinct image encoded once per batch); wall time of
  ``run_job`` (actor start, model loads, reading and writing shards included; Ray's own
  start excluded);
* bare loop: one process, the model loaded once (LoRA unmerged, as the released code loads
  it; the job's engine folds LoRA into the weights, so the loop is also timed merged to show
  what batching alone brings), one ``generate`` call per row (its image encoded each
  time), as the released ``instruction_dataset_inference.py`` does, with
  ``--bare-threads`` torch threads (default ``--threads``: one actor's share; with
  ``--actors 1`` both sides use the same cores); timed on the first ``--bare-rows`` rows.

Prints rows/s of each, the ratio, the job's rate per actor, and checks that the batched
job and the loop wrote the same text for the rows both did.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

RAY_CPUS = 4


def build_rewriter(folder: Path) -> str:
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer

    save_pretrained(build_model("tiny"), folder, tokenizer=model_tokenizer("tiny"))
    return str(folder)


def bare_loop(model_dir: str, rows: list[dict], max_new_tokens: int, threads: int,
              device: str, merge: bool = False) -> tuple[float, dict[str, str]]:
    """The released way: one row at a time (``merge``: with LoRA folded into the weights,
    as the job's engine does, so the ratio of batching alone shows). Returns (seconds,
    id -> output)."""
    import torch

    from pf_ray.data.conversation import draft_of, first_turn
    from pf_ray.data.images import ImageLoader
    from pf_ray.model.checkpoint import load_folder_tokenizer, load_pretrained
    from pf_ray.model.generate import GenerationConfig, generate
    from pf_ray.model.prompts import encode_rewrite, rewrite_stops

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = load_pretrained(model_dir, device=device)
    if merge and model.config.lora is not None:
        from pf_ray.model.lora import merge_for_inference

        merge_for_inference(model.lang_encoder)
    tok = load_folder_tokenizer(model_dir)
    loader = ImageLoader()
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, stop_strings=rewrite_stops("paper"))
    outputs = {}
    for r in rows:
        _, instruction, answer = first_turn(r["conversations"])  # type: ignore[misc]
        image = loader.load(r["image"], r["image_bytes"])
        ids = encode_rewrite(tok, instruction, draft_of(answer, r["boxes"], True), None,
                             images=1, mode=model.config.xattn.mask).input_ids
        (g,) = generate(model, tok, [ids], [[image]], cfg)
        outputs[r["id"]] = g.text.strip()
    return time.perf_counter() - t0, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1800, help="synthetic rows (5/9 raw)")
    parser.add_argument("--bare-rows", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per actor")
    parser.add_argument("--bare-threads", type=int, help="torch threads of the loop")
    parser.add_argument("--max-new-tokens", type=int, default=128,
                        help="the rewrite spec's default (the released script's)")
    parser.add_argument("--rows-per-shard", type=int, default=90)
    parser.add_argument("--model", help="a rewriter model folder (default: tiny preset)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray

    from pf_ray.config import parse_spec
    from pf_ray.data.io import Dataset
    from pf_ray.jobs.runner import run_job
    from pf_ray.specs import StorageConfig

    work = Path(tempfile.mkdtemp(prefix="bench_rewrite_"))
    model = args.model or build_rewriter(work / "tiny")
    syn = str(work / "synthetic")
    ray.init(num_cpus=max(RAY_CPUS, args.actors + 1), include_dashboard=False,
             log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    run_job(parse_spec({"kind": "synthetic", "n": args.rows,
                        "rows_per_shard": args.rows_per_shard, "output": {"path": syn},
                        "ray": {"progress": False}}), connect=False)
    spec = parse_spec({
        "kind": "rewrite", "inputs": [syn], "output": {"path": str(work / "rewritten")},
        "select": {"sources": ["synthetic_vl"]}, "ray": {"progress": False},
        "engine": {"kind": "flamingo", "model": model, "batch_size": args.batch_size,
                   "num_cpus": 1, "min_actors": args.actors, "max_actors": args.actors,
                   "num_threads": args.threads, "device": args.device,
                   "num_gpus": 1 if args.device == "cuda" else 0},
        "decoding": {"max_new_tokens": args.max_new_tokens},
        "faults": {"max_reject_fraction": 1.0}})  # an untrained model's outputs are rejects
    t0 = time.perf_counter()
    (result,) = run_job(spec, connect=False)
    job_s = time.perf_counter() - t0
    ray.shutdown()

    ds = Dataset(result.root, StorageConfig())
    job_out = {r["id"]: r["output"] for r in ds.read(columns=["id", "output"]).to_pylist()} \
        if ds.shard_files() else {}
    rewritten = len(job_out)
    for r in ds.read("rejects").to_pylist():
        row = json.loads(r["row"])
        if r["reason"] != "not_selected":
            rewritten += 1
            if row.get("output") is not None:
                job_out[r["id"]] = row["output"]
    inputs = Dataset(syn, StorageConfig()).read().to_pylist()
    raw = [r for r in inputs if r["source"] == "synthetic_vl"][:args.bare_rows]
    bare_threads = args.bare_threads or args.threads
    bare_s, bare_out = bare_loop(model, raw, args.max_new_tokens, bare_threads, args.device)
    same = sum(job_out.get(k) == v for k, v in bare_out.items())
    merged_s, _ = bare_loop(model, raw, args.max_new_tokens, bare_threads, args.device,
                            merge=True)

    job_rate, bare_rate = rewritten / job_s, len(raw) / bare_s
    print(f"rewriter: {'tiny preset' if not args.model else model} on {args.device}; "
          f"{args.max_new_tokens} new tokens max, greedy")
    print(f"job   (Ray, {args.actors} actor(s) x {args.threads} thread(s), batch "
          f"{args.batch_size}): {rewritten} rows in {job_s:.1f}s = {job_rate:.2f} rows/s "
          f"({job_rate / args.actors:.2f} rows/s per actor)")
    print(f"bare  (one process, {bare_threads} thread(s), batch 1): "
          f"{len(raw)} rows in {bare_s:.1f}s = {bare_rate:.2f} rows/s")
    print(f"ratio job / bare: {job_rate / bare_rate:.1f}x (goal >= 8x)")
    merged_rate = len(raw) / merged_s
    print(f"bare, LoRA merged as the job's engine does: {merged_rate:.2f} rows/s; ratio of "
          f"the actor pool + batching alone: {job_rate / merged_rate:.1f}x")
    print(f"same text as the batched job: {same} of {len(bare_out)} rows")
    per_actor = job_rate / args.actors
    for gpus in (8, 32):
        hours = 1.2e6 / (per_actor * gpus) / 3600
        print(f"projection at this per-actor rate: 1.2M rows on {gpus} actors = {hours:.1f} h")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
