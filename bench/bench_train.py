"""FSDP memory and throughput: per-rank parameter + optimizer bytes and tokens/s per worker,
training the same job (tiny preset, rewriter stage, synthetic pairs) on 1 and on 2 workers.

    python bench/bench_train.py [--steps 12] [--stage rewriter|clever_s2]

Goal: bytes per rank at 2 workers <= 0.6 x at 1 worker.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--stage", default="rewriter")
    args = parser.parse_args()

    import ray
    from ray.data import DataContext

    from pf_ray.config import parse_spec
    from pf_ray.jobs.runner import run_job

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    quiet = {"progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        run_job(parse_spec({"kind": "synthetic", "n": 900, "rows_per_shard": 300,
                            "output": {"path": f"{tmp}/syn"}, "ray": quiet}), connect=False)
        run_job(parse_spec({"kind": "distort", "inputs": [f"{tmp}/syn"],
                            "boxes_from": f"{tmp}/syn", "output": {"path": f"{tmp}/pairs"},
                            "select": {"sources": ["synthetic_llava", "synthetic_text"]},
                            "mixture": {"text": {"augment": 1.0}}, "ray": quiet}),
                connect=False)
        data = f"{tmp}/pairs" if args.stage == "rewriter" else f"{tmp}/syn"
        rows = {}
        for workers in (1, 2):
            (res,) = run_job(parse_spec({
                "kind": "train", "stage": args.stage, "model": "tiny", "data": [{"path": data}],
                "batch_size": 4, "max_length": 320, "max_steps": args.steps,
                "checkpoint_every": 1000, "scaling": {"num_workers": workers},
                "storage_path": f"{tmp}/runs", "run_name": f"w{workers}", "ray": quiet}),
                connect=False)
            first, later = res.history[0], res.history[2:]
            rows[workers] = (first["param_bytes"] + first["optim_bytes"],
                             sum(r["tokens_per_s"] for r in later) / len(later))
    (b1, t1), (b2, t2) = rows[1], rows[2]
    print(f"stage={args.stage} steps={args.steps} (tiny preset, gloo, 2 CPU cores)")
    print(f"1 worker : {b1 / 2**20:8.2f} MiB params+optimizer per rank, {t1:8.1f} tokens/s per worker")
    print(f"2 workers: {b2 / 2**20:8.2f} MiB params+optimizer per rank, {t2:8.1f} tokens/s per worker")
    print(f"per-rank bytes ratio 2 vs 1 workers: {b2 / b1:.2f}x   (goal <= 0.6x)")


if __name__ == "__main__":
    main()
