"""Random augmentation (the 4-step chain) rows/s: a bare loop on one core vs Ray Data.

    python bench/bench_augment.py [--rows 400000] [--cpus 2]

Both sides run the same step function (``cpu_families`` on ``augment`` rows, seeds derived
per row as in the distort job) over the same texts: LLaVA-style clean answers of the
synthetic dataset. Ray Data runs it through pf-ray's step adapter on ``--cpus`` CPUs.
Goals: bare >= 20,000 rows/s; Ray >= 0.7 x cpus x bare.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pf_ray.data.synthetic import generate  # noqa: E402
from pf_ray.distort.pairs import cpu_families, row_seed  # noqa: E402
from pf_ray.steps.base import Resources, StepDef, run_step  # noqa: E402

_POOL: list[str] = []


def pool() -> list[str]:
    if not _POOL:  # built once per process (driver, and each Ray worker)
        _POOL.extend(c[-1]["content"] for c in generate(0, 0, 900)["conversations"])
    return _POOL


def texts(start: int, stop: int) -> list[str]:
    p = pool()
    return [p[i % len(p)] for i in range(start, stop)]


def batch_of(xs: list[str], offset: int) -> dict:
    n = len(xs)
    return {"id": [f"b:{offset + i}" for i in range(n)], "family": ["augment"] * n,
            "style": [None] * n, "seed": [row_seed(0, f"b:{offset + i}") for i in range(n)],
            "original": xs}


STEP = StepDef("augment", cpu_families, ("id", "family", "style", "seed", "original"),
               ("distorted", "style"), Resources(batch_size=4096))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--block-rows", type=int, default=50_000)
    args = parser.parse_args()
    pool()
    t0 = time.perf_counter()
    for start in range(0, args.rows, args.block_rows):
        stop = min(args.rows, start + args.block_rows)
        run_step(STEP, cpu_families, batch_of(texts(start, stop), start))
    bare = args.rows / (time.perf_counter() - t0)

    import ray
    import ray.data
    from ray.data import DataContext

    from pf_ray.steps.ray_adapter import map_step

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False
    from pf_ray.steps.ray_adapter import map_units

    starts = list(range(0, args.rows, args.block_rows))
    ds_in = ray.data.from_items([{"start": s} for s in starts], override_num_blocks=len(starts))

    def load(batch: dict) -> dict:
        s = batch["start"][0]
        return batch_of(texts(s, min(args.rows, s + args.block_rows)), s)

    warm = map_step(map_units(ds_in.limit(2), load), STEP)
    warm.count()
    t0 = time.perf_counter()
    n = map_step(map_units(ds_in, load), STEP).count()
    on_ray = n / (time.perf_counter() - t0)
    print(f"rows={args.rows} cpus={args.cpus}")
    print(f"bare loop, 1 core : {bare:10.0f} rows/s   (goal >= 20,000)")
    print(f"ray data, {args.cpus} cpus : {on_ray:10.0f} rows/s")
    print(f"ratio ray / ({args.cpus} x bare): {on_ray / (args.cpus * bare):.2f}   (goal >= 0.7)")


if __name__ == "__main__":
    main()
