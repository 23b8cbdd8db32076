"""pf-ray sample datasets written directly (no Ray): synthetic rows, some with a second
image (``extra_images``, as a change caption has) and some with broken image bytes."""

from __future__ import annotations

from pathlib import Path

BROKEN = b"these bytes are no image"


def write_inputs(root: Path, *, shards: int, rows: int, seed: int = 0, two_every: int = 3,
                 broken: tuple[int, ...] = ()) -> list[str]:
    """A pf-ray sample dataset of ``shards`` committed shards of ``rows`` synthetic rows
    each (:func:`pf_ray.data.synthetic.generate`): every ``two_every``-th image row gets a
    second image (``extra_images``, as a change caption has), the rows at the indices
    ``broken`` get image bytes that are no image. Returns every id, in order."""
    import pyarrow as pa

    from pf_ray.data.io import Dataset
    from pf_ray.data.schema import REJECT_SCHEMA, SAMPLE_SCHEMA, to_table
    from pf_ray.data.synthetic import generate, image_png
    from pf_ray.specs import StorageConfig

    ds = Dataset(str(root), StorageConfig())
    ids: list[str] = []
    for s in range(shards):
        start = s * rows
        batch = generate(seed, start, start + rows)
        for k in range(rows):
            index = start + k
            if batch["image_bytes"][k] is not None and index % two_every == 0:
                batch["extra_images"][k] = [{"image": None,
                                             "image_bytes": image_png(seed + 1, index, 64)}]
            if index in broken:
                batch["image"][k], batch["image_bytes"][k] = None, BROKEN
        name = f"s{s:03d}"
        ds.write_data(f"{name}.parquet", to_table(batch, SAMPLE_SCHEMA),
                      pa.Table.from_pylist([], schema=REJECT_SCHEMA))
        ds.commit(name, {"files": [f"{name}.parquet"], "reject_files": [], "rows": rows,
                         "rejects": 0})
        ids += batch["id"]
    return ids
