"""Global top-k by a score, in a streaming sharded job: a threshold found at plan time.

A sharded job cannot rank rows it has not seen, so top-k is a second pass over a dataset
that already carries the score (the output of the filter chain): at plan time the score
and id columns of every input shard are read (a few bytes per row), sorted by (score
descending, id ascending) and the k-th pair becomes the threshold; the step then keeps a
row iff its (score, id) ranks at or above it. The result is exactly min(k, scored rows)
rows whatever the sharding, and a rerun selects the same ones. Rows without the score are
dropped (they cannot be ranked).
"""

from __future__ import annotations

import pyarrow.parquet as pq

from pf_ray.data.schema import Batch
from pf_ray.filters.common import drop, new_out
from pf_ray.specs import StorageConfig
from pf_ray.storage import resolve

Threshold = tuple[float, str] | None  # (score, id) of the k-th row; None: keep every row


def find_threshold(files: list[str], score: str, k: int,
                   storage: StorageConfig | None = None) -> Threshold:
    """The (score, id) of the k-th best row over ``files``, or None when fewer rows."""
    pairs: list[tuple[float, str]] = []
    for f in files:
        fs, path = resolve(f, storage)
        names = pq.read_schema(path, filesystem=fs).names
        if score not in names:
            raise ValueError(f"top_k.score: the input shard {f} has no {score!r} column; "
                             "top_k is a second pass over a dataset that carries it (run "
                             "the filter chain first)")
        table = pq.read_table(path, filesystem=fs, columns=["id", score])
        pairs += [(float(s), i) for i, s in zip(table.column("id").to_pylist(),
                                                 table.column(score).to_pylist(), strict=True)
                  if s is not None]
    if len(pairs) <= k:
        return None
    pairs.sort(key=lambda p: (-p[0], p[1]))
    return pairs[k - 1]


def ranks_in(score: float, row_id: str, threshold: Threshold) -> bool:
    if threshold is None:
        return True
    ts, tid = threshold
    return score > ts or (score == ts and row_id <= tid)


def top_k_filter(batch: Batch, *, score: str, k: int, threshold: Threshold) -> Batch:
    n = len(batch["id"])
    out = new_out(n)
    for i in range(n):
        s, rid = batch[score][i], batch["id"][i]
        if s is None:
            drop(out, i, "filter_top_k", f"no {score}: cannot be ranked")
        elif not ranks_in(float(s), rid, threshold):
            assert threshold is not None
            drop(out, i, "filter_top_k", f"{score} {float(s):.4f} ranks below the top {k} "
                 f"(threshold {threshold[0]:.4f})")
    return out
