"""Synthetic generation + shard write: Ray Data vs the same functions in one bare process.

    python bench/bench_synthetic.py [--rows 100000] [--rows-per-shard 5000] [--cpus 2]

Both runs execute the same ShardPlan (generate rows -> cast to the sample schema -> commit
Parquet shards + markers) into fresh folders; prints rows/s of each and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pf_ray.ingest.plan import plan_synthetic  # noqa: E402
from pf_ray.ingest.spec import SyntheticSpec
from pf_ray.jobs.runner import run_plan  # noqa: E402
from pf_ray.specs import OutputConfig  # noqa: E402


def timed(executor: str, rows: int, per: int, root: str) -> float:
    spec = SyntheticSpec(kind="synthetic", n=rows, rows_per_shard=per,
                        output=OutputConfig(path=os.path.join(root, executor)))
    t0 = time.perf_counter()
    result = run_plan(plan_synthetic(spec), executor=executor)
    seconds = time.perf_counter() - t0
    assert result.manifest["totals"]["rows"] == rows
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rows-per-shard", type=int, default=5000)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    import ray
    from ray.data import DataContext

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as root:
        timed("ray", 2 * args.rows_per_shard, args.rows_per_shard, root + "/warm")  # workers up
        bare = timed("local", args.rows, args.rows_per_shard, root)
        on_ray = timed("ray", args.rows, args.rows_per_shard, root)
    print(f"rows={args.rows} rows_per_shard={args.rows_per_shard} cpus={args.cpus}")
    print(f"bare process : {args.rows / bare:10.0f} rows/s  ({bare:.1f} s)")
    print(f"ray data     : {args.rows / on_ray:10.0f} rows/s  ({on_ray:.1f} s)")
    print(f"ratio ray/bare: {bare / on_ray:.2f}x")


if __name__ == "__main__":
    main()
