"""A unit is committed only when the ids that reach the writer are the ids read: parts of a
re-batched unit whose counts add up but whose ids do not (a duplicate, a lost row) are not
committed, and neither is a whole-sized block with other ids."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pf_ray.data.io import Dataset
from pf_ray.data.schema import SAMPLE_OUTPUT, UNIT, Batch
from pf_ray.data.synthetic import generate
from pf_ray.jobs.shard import combine_digests, ids_digest, read_unit, write_unit
from pf_ray.specs import StorageConfig


def unit_rows(n: int = 6) -> Batch:
    """The rows of unit ``u0`` as read_unit gives them (with its ids digest)."""
    params = {"seed": 0, "start": 0, "stop": n, "image_size": 16, "embed_images": False}
    return read_unit({UNIT: ["u0"], "_params": [json.dumps(params)]}, generate)


def part(batch: Batch, idx: list[int]) -> Batch:
    return {k: [v[i] for i in idx] for k, v in batch.items()}


def write(batch: Batch, dataset: Dataset) -> dict[str, list]:
    return write_unit(batch, dataset, "h1", SAMPLE_OUTPUT)


@pytest.fixture()
def dataset(tmp_path: Path) -> Dataset:
    return Dataset(str(tmp_path / "out"), StorageConfig())


def test_digest_is_a_multiset_hash() -> None:
    ids = ["a", "b", "c", "d"]
    assert ids_digest(ids) == ids_digest(reversed(ids))
    assert combine_digests([ids_digest(ids[:1]), ids_digest(ids[1:])]) == ids_digest(ids)
    # same count (4), "a" twice and "d" lost: another digest
    assert combine_digests([ids_digest(["a", "b"]), ids_digest(["a", "c"])]) != ids_digest(ids)
    assert ids_digest(["a", "a", "c", "d"]) != ids_digest(ids)  # a duplicate for a loss
    assert ids_digest(ids).startswith("4:")


def test_parts_with_the_unit_ids_commit(dataset: Dataset) -> None:
    rows = unit_rows()
    assert write(part(rows, [0, 1, 2]), dataset) == {"name": [], "rows": [], "rejects": [],
                                                    "failed": []}  # waits for the rest
    out = write(part(rows, [3, 4, 5]), dataset)
    assert out["failed"] == [None] and out["rows"] == [6]
    assert set(dataset.committed()) == {"u0-h1"}
    assert sorted(r["id"] for r in dataset.read().to_pylist()) == sorted(rows["id"])


def test_a_duplicate_and_a_lost_row_do_not_commit(dataset: Dataset) -> None:
    rows = unit_rows()
    write(part(rows, [0, 1, 2]), dataset)
    out = write(part(rows, [2, 3, 4]), dataset)  # id 2 twice, id 5 lost: 6 rows all the same
    assert out["failed"][0] is not None and "ids are not the 6 id(s) read" in out["failed"][0]
    assert not dataset.committed()
    out = write(part(rows, [5]), dataset)  # the lost row arrives late: 7 rows, still not
    assert out["failed"][0] is not None and not dataset.committed()


def test_a_whole_sized_block_with_other_ids_does_not_commit(dataset: Dataset) -> None:
    rows = unit_rows()
    out = write(part(rows, [0, 1, 2, 3, 4, 4]), dataset)
    assert out["failed"][0] is not None and "duplicated or lost" in out["failed"][0]
    assert not dataset.committed()
    out = write(rows, dataset)  # the unit as read: committed whole
    assert out["failed"] == [None] and set(dataset.committed()) == {"u0-h1"}


def test_hand_built_batches_without_a_digest_still_count_rows(dataset: Dataset) -> None:
    rows = unit_rows(4)
    rows.pop("_unit_ids")
    rows["_unit_t0"] = [time.time()] * 4
    assert write(rows, dataset)["failed"] == [None]
