"""``pf-ray quickstart``: the whole pipeline that exists, offline, on local Ray.

Stages so far: synthetic data -> shards. Later stages (distort, train, rewrite, filter,
serve, eval) append themselves here, so this one command always exercises everything.
"""

from __future__ import annotations

import json
from pathlib import Path

from pf_ray.config import OutputConfig, RayConfig, SyntheticJob
from pf_ray.data.io import Dataset


def quickstart(workdir: Path, *, n: int = 1800, executor: str = "ray",
               progress: bool = True) -> int:
    from pf_ray.run import run_job

    workdir = workdir.resolve()
    spec = SyntheticJob(kind="synthetic", name="quickstart", seed=0, n=n, rows_per_shard=300,
                        output=OutputConfig(path=str(workdir / "synthetic")),
                        ray=RayConfig(progress=progress))
    print(f"[1/1] synthetic data -> {spec.output.path}")
    (result,) = run_job(spec, executor=executor)
    print("      " + result.summary())
    table = Dataset(spec.output.path, spec.storage).read(columns=["source", "task"])
    tasks: dict[str, int] = {}
    for t in table.column("task").to_pylist():
        tasks[t] = tasks.get(t, 0) + 1
    totals = result.manifest["totals"]
    print("      rows per source: " + json.dumps(totals["rows_per_source"], sort_keys=True))
    print("      rows per task:   " + json.dumps(tasks, sort_keys=True))
    print(f"quickstart done: outputs under {workdir}")
    return 0
