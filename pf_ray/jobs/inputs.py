"""A job's inputs: the committed shard files of pf-ray sample datasets, one unit each.

Stages that map sample datasets (distort, rewrite) make one unit per committed input shard,
so a rerun of a killed job skips the units already committed and every id comes out
exactly once.
"""

from __future__ import annotations

import posixpath

from pf_ray.data.io import Dataset
from pf_ray.jobs.shard import Unit, safe_key
from pf_ray.specs import StorageConfig


def input_units(inputs: list[str], storage: StorageConfig,
                pairs: str = "one_turn") -> list[Unit]:
    """One unit per committed shard file of each input root (``inputs.K`` in errors)."""
    units = []
    for k, root in enumerate(inputs):
        ds = Dataset(root, storage)
        if not ds.shard_files():
            raise FileNotFoundError(f"inputs.{k}: {root} holds no committed shards")
        for f in ds.unit_files():
            stem = posixpath.basename(f).removesuffix(".parquet")
            uri = f if not root.startswith(("s3://", "s3a://")) else \
                f"{root.split('://', 1)[0]}://{f}"
            units.append(Unit(safe_key(f"i{k}-{stem}"),
                              {"file": uri, "storage": storage.model_dump(), "pairs": pairs}))
    return units
