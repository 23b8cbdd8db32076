"""Dataset jobs on a real local Ray instance and a real S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray.cloudpickle
from PIL import Image

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.data.synthetic import generate
from pf_ray.ingest.plan import plan_synthetic
from pf_ray.ingest.spec import IngestSpec, SyntheticSpec
from pf_ray.jobs.runner import run_job, run_plan
from pf_ray.jobs.shard import OutputExistsError
from pf_ray.specs import OutputConfig, StorageConfig
from pf_ray.steps.base import Resources, as_step, batch_step
from pf_ray.storage import resolve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests/


def synthetic(path: str, n: int = 450, per: int = 100, **storage: object) -> SyntheticSpec:
    return SyntheticSpec(kind="synthetic", n=n, rows_per_shard=per, output=OutputConfig(path=path),
                        storage=StorageConfig(**storage))


def shard_bytes(ds: Dataset) -> dict[str, bytes]:
    return {p.rsplit("/", 1)[1]: ds.fs.open_input_stream(p).read() for p in ds.shard_files()}


@pytest.mark.parametrize("client", ["pyarrow", "s3fs"])
def test_same_job_writes_identical_shards_to_folder_and_s3(
        ray_session: str, s3_server, s3_bucket: str, tmp_path: Path, client: str) -> None:
    local = synthetic(str(tmp_path / "out"))
    remote = synthetic(f"{s3_bucket}/pf/synthetic", endpoint_url=s3_server.endpoint,
                       client=client)
    (a,) = run_job(local)
    (b,) = run_job(remote)
    assert a.written == b.written == 5
    da, db = Dataset(local.output.path, local.storage), Dataset(remote.output.path, remote.storage)
    files_a, files_b = shard_bytes(da), shard_bytes(db)
    assert sorted(files_a) == sorted(files_b) and len(files_a) == 5
    assert files_a == files_b  # byte-identical Parquet
    assert a.manifest["totals"] == b.manifest["totals"]
    assert a.manifest["totals"]["rows"] == 450
    ids = db.read(columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(generate(0, 0, 450)["id"])


def test_rerun_skips_committed_shards_and_refuses_other_specs(ray_session: str,
                                                              tmp_path: Path) -> None:
    spec = synthetic(str(tmp_path / "out"), n=300)
    (first,) = run_job(spec)
    (second,) = run_job(spec)
    assert (first.written, second.written, second.skipped) == (3, 0, 3)
    assert len(second.manifest["runs"]) == 2
    with pytest.raises(OutputExistsError, match="another spec"):
        run_job(synthetic(str(tmp_path / "out"), n=301))
    over = synthetic(str(tmp_path / "out"), n=301).model_copy(
        update={"output": OutputConfig(path=str(tmp_path / "out"), mode="overwrite")})
    (third,) = run_job(over)
    assert third.manifest["totals"]["rows"] == 301 and third.written == 4


def test_sigkilled_job_resumes_with_each_id_once(ray_session: str, tmp_path: Path) -> None:
    root = tmp_path / "killed"
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(f"kind: synthetic\nn: 12000\nrows_per_shard: 500\nimage_size: 96\n"
                         f"output: {{path: {root}}}\n")
    env = {**os.environ, "RAY_ADDRESS": ray_session, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "pf_ray.cli", "run", str(spec_file),
                             "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    markers = root / "_markers"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(markers.glob("*.json"))) < 3:
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = {p.stem for p in markers.glob("*.json")}
    assert 3 <= len(committed) < 24, committed
    # What a kill in the middle of a write leaves behind: a temp file and a data file with
    # no marker (a partial shard). Neither may be read or duplicated.
    spec = load(spec_file)
    job = plan_synthetic(spec)
    pending = next(job.shard_name(u) for u in job.units if job.shard_name(u) not in committed)
    (root / "shards" / f".{pending}.parquet.tmp-dead").write_bytes(b"PAR1partial")
    pq.write_table(pq.read_table(root / "shards" / f"{sorted(committed)[0]}.parquet").slice(0, 7),
                   root / "shards" / f"{pending}.parquet")
    (result,) = run_job(spec)
    assert result.skipped == len(committed) and result.written == 24 - len(committed)
    ids = Dataset(str(root), spec.storage).read(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 12000
    assert result.manifest["totals"]["rows"] == 12000


def load(path: Path) -> SyntheticSpec:
    from pf_ray.config import load_spec

    return load_spec(path)


@batch_step(name="flaky", inputs=("id", "task"), outputs=("task",),
            resources=Resources(batch_size=16))
def flaky(batch: dict) -> dict:
    if any(i.endswith("7") for i in batch["id"]):
        raise RuntimeError("ids ending in 7 break this step")
    return {"task": [t.upper() for t in batch["task"]]}


class MarkLong:
    name = "mark_long"
    inputs = ("conversations",)
    outputs = ("meta",)
    resources = Resources(num_cpus=0.5, batch_size=32, min_actors=1, max_actors=2)

    def __call__(self, batch: dict) -> dict:
        lengths = [sum(len(t["content"]) for t in c) for c in batch["conversations"]]
        return {"meta": [json.dumps({"chars": n}) for n in lengths],
                "_reject_reason": ["too_long" if n > 400 else None for n in lengths]}


def test_raising_rows_go_to_rejects_and_counts_balance(ray_session: str, tmp_path: Path) -> None:
    spec = synthetic(str(tmp_path / "rej"), n=400, per=100)
    job = plan_synthetic(spec)
    job.steps = [as_step(flaky), as_step(MarkLong)]
    result = run_plan(job)
    ds = Dataset(spec.output.path, spec.storage)
    rows, rejects = ds.read(), ds.read("rejects")
    assert rows.num_rows + rejects.num_rows == 400  # rows in = rows out + rejects
    by_reason = {}
    for r in rejects.to_pylist():
        by_reason.setdefault(r["reason"], []).append(r)
    raised = by_reason["exception"]
    assert sorted(r["id"] for r in raised) == sorted(
        i for i in generate(0, 0, 400)["id"] if i.endswith("7"))
    assert all(r["stage"] == "flaky" and r["detail"] == "RuntimeError: ids ending in 7 break "
               "this step" for r in raised)
    assert json.loads(raised[0]["row"])["id"] == raised[0]["id"]  # the original row
    assert all(r["stage"] == "mark_long" for r in by_reason["too_long"])
    kept = rows.to_pylist()
    assert all(r["task"].isupper() for r in kept)  # batch-mates of raising rows were mapped
    assert result.manifest["totals"]["rejects_per_reason"] == {
        k: len(v) for k, v in by_reason.items()}


def _write_images(root: Path) -> None:
    root.mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "good.jpg")
    Image.new("CMYK", (16, 16)).save(root / "cmyk.jpg")
    data = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is not an image")
    Image.new("L", (300, 300)).save(root / "huge.png")


def _llava_records() -> list[dict]:
    def rec(i: int, image: str | None) -> dict:
        r = {"id": f"{i:012d}", "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the image?"},
            {"from": "gpt", "value": "There is a red square. It fills the whole picture."}]}
        if image is not None:
            r["image"] = image
        return r

    names = ["good.jpg", "cmyk.jpg", "truncated.jpg", "empty.jpg", "notes.jpg", "huge.png",
             "missing.jpg", "../../etc/passwd", None]
    return [rec(i, n) for i, n in enumerate(names)] + [{"id": "x", "conversations": []}]


EXPECTED_REASONS = {"image_corrupt": 1, "image_empty": 1, "image_not_image": 1,
                    "image_too_large": 1, "image_missing": 1, "image_path_escape": 1,
                    "empty_conversation": 1}


def test_ingest_llava_with_broken_images(ray_session: str, tmp_path: Path) -> None:
    _write_images(tmp_path / "coco")
    src = tmp_path / "llava_instruct_150k.json"
    src.write_text(json.dumps(_llava_records()))
    spec = parse_spec({"kind": "ingest", "output": {"path": str(tmp_path / "out")},
                       "source": {"adapter": "llava_instruct", "path": str(src),
                                  "image_root": str(tmp_path / "coco")},
                       "rows_per_shard": 4, "images": {"max_pixels": 50000},
                       # most rows here are broken on purpose
                       "faults": {"max_reject_fraction": 1.0}})
    assert isinstance(spec, IngestSpec)
    (result,) = run_job(spec)
    totals = result.manifest["totals"]
    assert totals["rows"] + totals["rejects"] == 10
    assert totals["rejects_per_reason"] == EXPECTED_REASONS
    rows = Dataset(spec.output.path, spec.storage).read().to_pylist()
    assert sorted(r["id"] for r in rows) == [
        "llava_instruct:000000000000", "llava_instruct:000000000001",
        "llava_instruct:000000000008"]
    assert {r["task"] for r in rows} == {"reasoning", "text_instruction"}


def test_ingest_from_s3_glob_with_s3_images(ray_session: str, s3_server, s3_bucket: str,
                                            tmp_path: Path) -> None:
    storage = StorageConfig(endpoint_url=s3_server.endpoint)
    fs, base = resolve(s3_bucket, storage)
    _write_images(tmp_path / "coco")
    for p in (tmp_path / "coco").iterdir():
        with fs.open_output_stream(f"{base}/coco/{p.name}") as f:
            f.write(p.read_bytes())
    records = _llava_records()
    for part in (0, 1):
        with fs.open_output_stream(f"{base}/raw/llava_part{part}.json") as f:
            f.write(json.dumps(records[part * 5:(part + 1) * 5]).encode())
    spec = parse_spec({"kind": "ingest", "output": {"path": f"{s3_bucket}/out"},
                       "source": {"adapter": "llava_instruct",
                                  "path": f"{s3_bucket}/raw/llava_part*.json",
                                  "image_root": f"{s3_bucket}/coco"},
                       "storage": {"endpoint_url": s3_server.endpoint},
                       "images": {"max_pixels": 50000, "embed": True},
                       "faults": {"max_reject_fraction": 1.0}})  # broken on purpose
    (result,) = run_job(spec)
    assert result.written == 2
    assert result.manifest["totals"]["rejects_per_reason"] == EXPECTED_REASONS
    rows = Dataset(spec.output.path, spec.storage).read().to_pylist()
    assert len(rows) == 3
    assert all(r["image_bytes"] for r in rows if r["image"])  # embedded, re-encoded
