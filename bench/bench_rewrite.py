"""Rows/s of the rewrite job (actor pool, batched) vs the released code's batch-1 loop, on
equal cores, for an untrained rewriter and a trained one that stops early.

    python bench/bench_rewrite.py [--rows 900] [--bare-rows 48] [--batch-size 32]
                                  [--actors 2] [--threads 1] [--bare-threads N]
                                  [--max-new-tokens 128] [--runs untrained trained]
                                  [--train-steps 300] [--model FOLDER] [--device cpu|cuda]
                                  [--json out.json]

Both sides run the same rewriter on the synthetic dataset's raw annotations (source
``synthetic_vl``), greedy, the same prompt and stop strings:

* job: ``kind: rewrite`` on a local Ray instance, the flamingo engine in an actor pool of
  ``--actors`` actors with ``--threads`` torch threads each, ``--batch-size`` rows per
  ``generate`` call (each distinct image encoded once per batch; LoRA folded into the
  weights); wall time of ``run_job`` (actor start, model loads, reading and writing shards
  included; Ray's own start excluded);
* loop: one process, one ``generate`` call per row (its image encoded each time), as the
  released ``instruction_dataset_inference.py`` does, with ``--bare-threads`` torch threads,
  by default ``--actors`` x ``--threads``: the same cores as the job (the headline). It is
  timed twice: LoRA unmerged (as the released code loads it) and LoRA merged (as the job's
  engine does, so that ratio is what the actor pool and batching alone bring); on the first
  ``--bare-rows`` rows, after Ray has shut down, the model load and one warm-up row
  excluded (a long run pays them once; the job's time includes its actors' start and model
  loads, so this favours the loop).

The runs (``--runs``):

* ``untrained``: the ``tiny`` preset's seeded random weights (or ``--model``). It never emits
  EOS, so every row decodes to ``--max-new-tokens``: all rows of a batch run equally long,
  the best case for static batching.
* ``trained``: the ``tiny`` preset trained here for ``--train-steps`` steps on the
  quickstart's distortion pairs of the same synthetic data (``bench/trained_rewriter.py``);
  its rewrites end at EOS after a varied number of tokens, so a batch decodes as long as
  its longest row.

Prints, per run: the cores each side had, rows/s of each, the job / loop ratios (unmerged
and merged), the generated tokens per row (mean, min, max) and why generation stopped (the
loop's rows counted; the job's rows that ran to the limit exact, the others re-tokenised
from their texts), and how many rows the batched job and the loop wrote the same text for
(batched decoding pads prompts on the left, so greedy text can differ in a few rows where
two tokens' logits nearly tie).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RAY_CPUS = 4


@dataclass
class Lengths:
    """Generated tokens per row (EOS counted as a token: it costs a decoding step)."""

    tokens: list[int] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, tokens: int, reason: str | None) -> None:
        self.tokens.append(tokens)
        self.reasons[reason or "none"] += 1

    def summary(self) -> str:
        if not self.tokens:
            return "no rows"
        stop = ", ".join(f"{k} {v}" for k, v in self.reasons.most_common())
        return (f"mean {statistics.fmean(self.tokens):.1f}, min {min(self.tokens)}, "
                f"max {max(self.tokens)} (finish: {stop})")


@dataclass
class Run:
    name: str
    model: str
    note: str
    job_rows: int = 0
    job_s: float = 0.0
    job_out: dict[str, str] = field(default_factory=dict)
    job_lengths: Lengths = field(default_factory=Lengths)
    loop: dict[str, float] = field(default_factory=dict)  # "unmerged"/"merged" -> seconds
    loop_out: dict[str, str] = field(default_factory=dict)
    loop_lengths: Lengths = field(default_factory=Lengths)
    extra: dict[str, Any] = field(default_factory=dict)


def build_untrained(folder: Path) -> str:
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer

    save_pretrained(build_model("tiny"), folder, tokenizer=model_tokenizer("tiny"))
    return str(folder)


def job_tokens(tok: Any, text: str, reason: str | None, max_new_tokens: int) -> int:
    """Tokens a stored output took to generate: ``max_new_tokens`` when it ran to the limit
    (exact); otherwise estimated by re-tokenising its text (+1 for EOS; a stop string's
    tokens, cut from the text, are not counted)."""
    if reason == "length":
        return max_new_tokens
    return len(tok(text, add_special_tokens=False).input_ids) + int(reason == "eos")


def bare_loop(model_dir: str, rows: list[dict[str, Any]], max_new_tokens: int, threads: int,
              device: str, merge: bool, lengths: Lengths | None = None
              ) -> tuple[float, float, dict[str, str]]:
    """The released way: one row at a time, ``threads`` torch threads (``merge``: LoRA
    folded into the weights, as the job's engine does).

    Returns (load seconds, seconds of the rows, id -> output) and counts each row's
    generated tokens into ``lengths``. The rows are timed after the model is loaded and one
    untimed warm-up row: a long run pays its load once, so only the per-row cost scales
    (this favours the loop: the job's time includes its actors' start and loads).
    """
    import torch

    from pf_ray.data.conversation import draft_of, first_turn
    from pf_ray.data.images import ImageLoader
    from pf_ray.engines.flamingo import load_model
    from pf_ray.model.generate import GenerationConfig, generate
    from pf_ray.model.prompts import encode_rewrite, rewrite_stops

    t0 = time.perf_counter()
    model, tok = load_model(model_dir, device=device, num_threads=threads, merge_lora=merge)
    loader = ImageLoader()
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, stop_strings=rewrite_stops("paper"))

    def one(r: dict[str, Any]) -> Any:
        _, instruction, answer = first_turn(r["conversations"])  # type: ignore[misc]
        image = loader.load(r["image"], r["image_bytes"])
        ids = encode_rewrite(tok, instruction, draft_of(answer, r["boxes"], True), None,
                             images=1, mode=model.config.xattn.mask).input_ids
        (g,) = generate(model, tok, [ids], [[image]], cfg)
        return g

    outputs = {}
    with torch.no_grad():
        one(rows[0])  # warm-up
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in rows:
            g = one(r)
            outputs[r["id"]] = g.text.strip()
            if lengths is not None:
                lengths.add(len(g.token_ids) + int(g.finish_reason == "eos"), g.finish_reason)
    return load_s, time.perf_counter() - t0, outputs


def rewrite_spec(syn: str, out: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "kind": "rewrite", "inputs": [syn], "output": {"path": out},
        "select": {"sources": ["synthetic_vl"]}, "ray": {"progress": False},
        "engine": {"kind": "flamingo", "model": model, "batch_size": args.batch_size,
                   "num_cpus": 1, "min_actors": args.actors, "max_actors": args.actors,
                   "num_threads": args.threads, "device": args.device,
                   "num_gpus": 1 if args.device == "cuda" else 0},
        "decoding": {"max_new_tokens": args.max_new_tokens},
        "faults": {"max_reject_fraction": 1.0}}  # an untrained model's outputs are rejects


def run_rewrite_job(run: Run, syn: str, work: Path, args: argparse.Namespace) -> None:
    """Time the rewrite job on ``run.model``; collect every rewritten row's text and length."""
    from pf_ray.config import parse_spec
    from pf_ray.data.io import Dataset
    from pf_ray.jobs.runner import run_job
    from pf_ray.model.checkpoint import load_folder_tokenizer
    from pf_ray.specs import StorageConfig

    spec = parse_spec(rewrite_spec(syn, str(work / f"rewritten_{run.name}"), run.model, args))
    t0 = time.perf_counter()
    (result,) = run_job(spec, connect=False)
    run.job_s = time.perf_counter() - t0
    tok = load_folder_tokenizer(run.model)
    ds = Dataset(result.root, StorageConfig())
    rows = ds.read(columns=["id", "output", "finish_reason"]).to_pylist() \
        if ds.shard_files() else []
    for r in ds.read("rejects").to_pylist():
        if r["reason"] == "not_selected":
            continue
        row = json.loads(r["row"])
        rows.append({"id": r["id"], "output": row.get("output"),
                     "finish_reason": row.get("finish_reason")})
    run.job_rows = len(rows)
    for r in rows:
        if r["output"] is not None:
            run.job_out[r["id"]] = r["output"]
            run.job_lengths.add(job_tokens(tok, r["output"], r["finish_reason"],
                                           args.max_new_tokens), r["finish_reason"])


def train_run(syn: str, work: Path, args: argparse.Namespace) -> Run:
    """Distort the synthetic data as the quickstart does, train the rewriter on the pairs."""
    from trained_rewriter import distort_spec, train_rewriter

    from pf_ray.config import parse_spec
    from pf_ray.data.io import Dataset
    from pf_ray.jobs.runner import run_job
    from pf_ray.specs import StorageConfig

    t0 = time.perf_counter()
    (result,) = run_job(parse_spec(distort_spec(syn, str(work / "distort"))), connect=False)
    pairs = Dataset(result.root, StorageConfig()).read().to_pylist()
    print(f"   distortion: {len(pairs)} pairs in {time.perf_counter() - t0:.0f} s; training "
          f"the tiny rewriter {args.train_steps} steps in this process", flush=True)
    trained = train_rewriter(pairs, work / "trained", steps=args.train_steps)
    print(f"   trained in {trained.seconds:.0f} s ({trained.seconds / trained.steps:.2f} "
          f"s/step); loss {trained.first_loss:.2f} -> {trained.last_loss:.2f}", flush=True)
    return Run("trained", trained.folder,
               f"tiny preset trained {trained.steps} steps on {len(pairs)} distortion pairs",
               extra={"pairs": len(pairs), **asdict(trained)})


def report(run: Run, args: argparse.Namespace, bare_threads: int, bare_rows: int) -> dict:
    job_rate = run.job_rows / run.job_s
    rates = {k: bare_rows / s for k, s in run.loop.items()}
    # generated tokens/s: the rows/s ratio weighs the job's rows and the loop's sample
    # alike; this one does not depend on how long the sample's rows happen to be
    job_tps = sum(run.job_lengths.tokens) / run.job_s
    tps = {k: sum(run.loop_lengths.tokens) / s for k, s in run.loop.items()}
    same = sum(run.job_out.get(k) == v for k, v in run.loop_out.items())
    cores = args.actors * args.threads
    print(f"\n== {run.name}: {run.note}")
    print(f"   generated tokens per row (max {args.max_new_tokens}): job "
          f"{run.job_lengths.summary()} [EOS rows re-tokenised]; loop {run.loop_lengths.summary()}")
    print(f"   job  : {args.actors} actor(s) x {args.threads} torch thread(s) = {cores} "
          f"core(s), batch {args.batch_size}: {run.job_rows} rows in {run.job_s:.1f} s = "
          f"{job_rate:.2f} rows/s ({job_rate / args.actors:.2f} per actor), "
          f"{job_tps:.0f} tokens/s")
    for k, rate in rates.items():
        print(f"   loop : 1 process x {bare_threads} torch thread(s) = {bare_threads} core(s), "
              f"batch 1, LoRA {k}: {bare_rows} rows in {run.loop[k]:.1f} s = {rate:.2f} rows/s, "
              f"{tps[k]:.0f} tokens/s")
    equal = "equal cores" if bare_threads == cores else \
        f"UNEQUAL cores: job {cores}, loop {bare_threads}"
    for k, rate in rates.items():
        print(f"   ratio job / loop (LoRA {k}, {equal}): {job_rate / rate:.1f}x rows/s, "
              f"{job_tps / tps[k]:.1f}x tokens/s")
    print(f"   same text in the job and the loop: {same} of {len(run.loop_out)} rows")
    at_limit = run.job_lengths.reasons["length"]
    if run.name == "trained" and at_limit > len(run.job_lengths.tokens) / 2:
        print(f"   WARNING: {at_limit} of {len(run.job_lengths.tokens)} rows ran to the limit: "
              "this rewriter has not learnt to stop; train longer (--train-steps)")
    return {"name": run.name, "note": run.note, "job_rows": run.job_rows,
            "job_s": run.job_s, "job_rows_per_s": job_rate, "job_cores": cores,
            "loop_cores": bare_threads, "loop_rows": bare_rows, "loop_s": run.loop,
            "loop_rows_per_s": rates,
            "ratio": {k: job_rate / r for k, r in rates.items()},
            "job_tokens_per_s": job_tps, "loop_tokens_per_s": tps,
            "tokens_ratio": {k: job_tps / t for k, t in tps.items()},
            "job_tokens_mean": statistics.fmean(run.job_lengths.tokens)
            if run.job_lengths.tokens else None,
            "loop_tokens_mean": statistics.fmean(run.loop_lengths.tokens)
            if run.loop_lengths.tokens else None,
            "job_finish": dict(run.job_lengths.reasons),
            "loop_finish": dict(run.loop_lengths.reasons),
            "same_text": same, **run.extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=900,
                        help="synthetic rows (5/9 raw annotations: the rows rewritten)")
    parser.add_argument("--bare-rows", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per actor")
    parser.add_argument("--bare-threads", type=int,
                        help="torch threads of the loop (default: actors x threads, the "
                             "job's cores)")
    parser.add_argument("--max-new-tokens", type=int, default=128,
                        help="the rewrite spec's default (the released script's)")
    parser.add_argument("--rows-per-shard", type=int, default=90)
    parser.add_argument("--runs", nargs="+", choices=["untrained", "trained"],
                        default=["untrained", "trained"])
    parser.add_argument("--train-steps", type=int, default=300,
                        help="steps of the trained run's rewriter (batch 8)")
    parser.add_argument("--model", help="the untrained run's model folder (default: the "
                                        "tiny preset's random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    bare_threads = args.bare_threads or args.actors * args.threads
    if args.actors * args.threads > (os.cpu_count() or 1):
        print(f"warning: the job asks for {args.actors * args.threads} cores, this machine "
              f"has {os.cpu_count()}: its actors share cores")

    import ray

    from pf_ray.config import parse_spec
    from pf_ray.data.io import Dataset
    from pf_ray.jobs.runner import run_job
    from pf_ray.specs import StorageConfig

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_rewrite_"))
    syn = str(work / "synthetic")
    ray.init(num_cpus=max(RAY_CPUS, args.actors + 1), include_dashboard=False,
             log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    runs: list[Run] = []
    try:
        run_job(parse_spec({"kind": "synthetic", "n": args.rows,
                            "rows_per_shard": args.rows_per_shard, "output": {"path": syn},
                            "ray": {"progress": False}}), connect=False)
        if "untrained" in args.runs:
            runs.append(Run("untrained", args.model or build_untrained(work / "tiny"),
                            args.model or "tiny preset, seeded random weights (never emits "
                                          "EOS: every row decodes to the limit)"))
        if "trained" in args.runs:
            print("trained run: building the rewriter", flush=True)
            runs.append(train_run(syn, work, args))
        for run in runs:
            print(f"{run.name}: rewrite job", flush=True)
            run_rewrite_job(run, syn, work, args)
    finally:
        ray.shutdown()
    inputs = Dataset(syn, StorageConfig()).read().to_pylist()
    raw = [r for r in inputs if r["source"] == "synthetic_vl"][:args.bare_rows]
    for run in runs:
        print(f"{run.name}: loop, LoRA unmerged then merged", flush=True)
        _, run.loop["unmerged"], run.loop_out = bare_loop(
            run.model, raw, args.max_new_tokens, bare_threads, args.device, merge=False,
            lengths=run.loop_lengths)
        _, run.loop["merged"], _ = bare_loop(run.model, raw, args.max_new_tokens,
                                             bare_threads, args.device, merge=True)

    print(f"\nrewriter on {args.device}, greedy, {args.max_new_tokens} new tokens max; "
          f"machine: {os.cpu_count()} CPU(s)")
    results = [report(run, args, bare_threads, len(raw)) for run in runs]
    print("\nheadline (job rows/s / loop rows/s, "
          + ("equal cores" if bare_threads == args.actors * args.threads else "UNEQUAL cores")
          + f": job {args.actors} x {args.threads}, loop {bare_threads} thread(s)):")
    for r in results:
        print(f"   {r['name']:9s} {r['job_tokens_mean'] or 0:5.1f} tokens/row (loop's rows "
              f"{r['loop_tokens_mean'] or 0:5.1f}): "
              f"{r['ratio']['unmerged']:.1f}x vs the loop as released, "
              f"{r['ratio']['merged']:.1f}x vs the loop with LoRA merged")
    for r in results[:1]:
        per_actor = r["job_rows_per_s"] / args.actors
        for gpus in (8, 32):
            hours = 1.2e6 / (per_actor * gpus) / 3600
            print(f"projection at the {r['name']} run's per-actor rate: 1.2M rows on {gpus} "
                  f"actors = {hours:.1f} h")
    print(f"bench wall time: {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
