"""A change-captioning source through the real ingest job on local Ray: Spot-the-Diff in its
released layout, ``images: {check: true, embed: true}``. Both images of every row are decoded
and embedded in order (before in ``image_bytes``, after in ``extra_images[0]``); a pair
whose after image is missing is a reject naming image 2."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from vl_sources_change import AFTER, BEFORE, CHANGED_BOX, IMAGE_ROOT, SIZE, write_spot_the_diff

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def pixels(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.size == SIZE
    return img.convert("RGB")


def test_spot_the_diff_pairs_are_embedded_in_order(ray_session: str, tmp_path: Path) -> None:
    file = write_spot_the_diff(tmp_path / "spot-the-diff")
    out = tmp_path / "out" / "spot_the_diff"
    spec = parse_spec({
        "kind": "ingest", "ray": {"progress": False}, "rows_per_shard": 2,
        "faults": {"max_reject_fraction": 1.0}, "output": {"path": str(out)},
        "images": {"check": True, "embed": True},
        "source": {"adapter": "spot_the_diff", "path": str(file),
                   "image_root": str(tmp_path / "spot-the-diff" / IMAGE_ROOT["spot_the_diff"])}})
    (result,) = run_job(spec)

    ds = Dataset(str(out), StorageConfig())
    kept = {r["id"]: r for r in ds.read().to_pylist()}
    rejected = {r["id"]: r for r in ds.read("rejects").to_pylist()}
    assert sorted(kept) == ["spot_the_diff:12733", "spot_the_diff:42"]
    assert {k: r["reason"] for k, r in rejected.items()} == {
        "spot_the_diff:5406": "image_missing", "spot_the_diff:3": "empty_text",
        "spot_the_diff:#5": "missing_field", "spot_the_diff:77": "bad_field",
        "spot_the_diff:../../etc/passwd": "image_path_escape"}
    assert rejected["spot_the_diff:5406"]["detail"].startswith("image 2 of 2: ")
    assert "5406_2.png" in rejected["spot_the_diff:5406"]["detail"]
    assert result.manifest["totals"]["rows"] == 2 and result.manifest["totals"]["rejects"] == 5

    inside = (CHANGED_BOX[0] + 2, CHANGED_BOX[1] + 2)
    outside = (SIZE[0] - 2, SIZE[1] - 2)
    for row in kept.values():
        key = row["id"].split(":", 1)[1]
        assert row["task"] == "change_caption"
        assert row["image"].endswith(f"/{key}.png")
        (after,) = row["extra_images"]
        assert after["image"].endswith(f"/{key}_2.png")
        before_img, after_img = pixels(row["image_bytes"]), pixels(after["image_bytes"])
        assert before_img.getpixel(inside) == before_img.getpixel(outside) == BEFORE
        assert after_img.getpixel(outside) == AFTER
        assert after_img.getpixel(inside) == (255, 255, 255)  # what changed

    again = run_job(spec)
    assert all(r.written == 0 for r in again)  # resumed: every shard was committed
