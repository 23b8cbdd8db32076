"""A job's input units: one per committed shard file that holds rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pf_ray.data.io import Dataset
from pf_ray.jobs.inputs import input_units
from pf_ray.specs import StorageConfig


def test_an_empty_part_of_a_unit_is_no_unit(tmp_path: Path) -> None:
    """vLLM re-batches rows, so a unit is committed in parts; a part whose rows were all
    rejects is an empty shard file, and a unit made of it would never reach the next job's
    writer (the filter job then failed on every such part)."""
    ds = Dataset(str(tmp_path / "rewritten"), StorageConfig())
    rows = pa.table({"id": ["a", "b"]})
    none = rows.slice(0, 0)
    ds.write_data("u0.part-1.parquet", rows, none)
    ds.write_data("u0.part-2.parquet", none, rows)
    ds.commit("u0", {"name": "u0", "files": ["u0.part-1.parquet", "u0.part-2.parquet"],
                     "reject_files": ["u0.part-1.parquet", "u0.part-2.parquet"],
                     "rows": 2, "rejects": 2})
    assert len(ds.shard_files()) == 2
    assert ds.unit_files() == [ds.path("shards", "u0.part-1.parquet")]
    units = input_units([str(tmp_path / "rewritten")], StorageConfig())
    assert [u.params["file"] for u in units] == ds.unit_files()
