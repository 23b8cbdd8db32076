"""Outside failures fail the job, never become rejects (issue 20): an HTTP image host that
answers 503 or 401 or hangs, and an S3 server stopped mid-job, make an ingest job fail
with no marker for the unit and nothing of it in ``rejects/``; after recovery the rerun
holds every id exactly once. A 404 is a row reject (``image_missing``), and so is a
redirect (``image_redirect``). A step that runs out of memory on one row rejects that row
(``oom_row``) and commits the rest of its unit, on Ray."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from s3server import ACCESS_KEY, SECRET_KEY, S3Server, start_s3_server

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.jobs.runner import run_job, run_plan
from pf_ray.jobs.shard import JobFailed, ShardPlan, Unit
from pf_ray.specs import FaultPolicy, OutputConfig, StorageConfig
from pf_ray.steps.base import Resources, StepDef

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), color).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ an HTTP image host

MODE = {"flaky": "ok"}  # how the host answers for flaky.png: ok | 503 | 401 | hang
ON_FETCH: dict[str, Callable[[], None]] = {}  # name -> run once before serving it


class _Host(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        name = self.path.lstrip("/")
        if name in ON_FETCH:
            ON_FETCH.pop(name)()
        if name == "missing.png":
            return self._send(404, b"not here")
        if name == "moved.png":
            self.send_response(302)
            self.send_header("Location", "/ok0.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if name == "flaky.png" and MODE["flaky"] != "ok":
            if MODE["flaky"] == "hang":
                time.sleep(3)  # beyond images.timeout_s
                return None
            return self._send(int(MODE["flaky"]), b"down")
        return self._send(200, png((len(name) * 20 % 256, 90, 30)))

    def _send(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except ConnectionError:  # the loader gave up (timeout): nothing to answer
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def llava_file(path: Path, images: list[str]) -> Path:
    records = [{"id": f"r{k}", "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is it?"},
        {"from": "gpt", "value": f"It is colour number {k}."}]} for k, image in enumerate(images)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


def ingest(records: Path, out: Path, **extra: Any) -> Any:
    return parse_spec({
        "kind": "ingest", "ray": {"progress": False}, "output": {"path": str(out)},
        "rows_per_shard": 3, "faults": {"retries": 1, "backoff_s": 0,
                                        "max_reject_fraction": 1.0},
        "source": {"adapter": "llava_instruct", "path": str(records), "name": "px"},
        **extra})


def contents(out: Path) -> tuple[list[str], dict[str, str], int]:
    """(kept ids, rejected id -> reason, committed units) of a dataset."""
    ds = Dataset(str(out), StorageConfig())
    kept = [r["id"] for r in ds.read().to_pylist()] if ds.committed() else []
    try:
        rejects = ds.read("rejects").to_pylist()
    except FileNotFoundError:
        rejects = []
    rejected = {r["id"]: r["reason"] for r in rejects}
    assert len(rejected) == len(rejects)  # no id rejected twice
    return kept, rejected, len(ds.committed())


def assert_unit0_absent(out: Path) -> None:
    """Unit 0 (ids r0-r2) has no marker and nothing in rows or rejects/: not the outage,
    not even its genuinely missing image. Unit 1 may have been committed before the job
    stopped (Ray stops the other units in flight); if so, with its own rows only."""
    kept, rejected, units = contents(out)
    assert units <= 1
    assert not {"px:r0", "px:r1", "px:r2"} & (set(kept) | set(rejected))
    if units:
        assert sorted(kept) == ["px:r3", "px:r5"] and rejected == {"px:r4": "image_redirect"}


@pytest.mark.parametrize("mode", ["503", "401", "hang"])
def test_image_host_outage_fails_the_unit_and_the_rerun_recovers(
        ray_session: str, host: str, tmp_path: Path, mode: str) -> None:
    # unit 0: ok0, flaky, missing (404); unit 1: ok1, moved (302), ok2
    names = ["ok0", "flaky", "missing", "ok1", "moved", "ok2"]
    records = llava_file(tmp_path / "llava_instruct_150k.json",
                         [f"{host}/{n}.png" for n in names])
    out = tmp_path / "out"
    spec = ingest(records, out, images={"allowed_hosts": ["127.0.0.1"], "timeout_s": 1})
    MODE["flaky"] = mode
    try:
        with pytest.raises(JobFailed) as info:
            run_job(spec)
    finally:
        MODE["flaky"] = "ok"
    assert "1 unit(s) not committed" in str(info.value) and "flaky.png" in str(info.value)
    assert_unit0_absent(out)

    (again,) = run_job(spec)  # the host recovered
    assert again.written + again.skipped == 2 and again.written >= 1
    kept, rejected, units = contents(out)
    assert units == 2 and len(kept) == len(set(kept))
    assert sorted(kept) == ["px:r0", "px:r1", "px:r3", "px:r5"]
    assert rejected == {"px:r2": "image_missing", "px:r4": "image_redirect"}
    assert sorted(kept + list(rejected)) == [f"px:r{k}" for k in range(6)]  # each id once


# ------------------------------------------------------------------ an S3 server stopped


def _kill(server: S3Server) -> None:
    """Stop the server, keeping its data (S3Server.stop would delete it)."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


def _restart(server: S3Server, probe: str) -> S3Server:
    """The same server again: same command, ports and data folder. Ready means `probe` (an
    object written before the stop) reads back: the S3 gateway answers before its volume
    server has registered, and a GetObject in that window fails with INTERNAL_FAILURE."""
    log = open(server.workdir / "weed-restart.log", "wb")  # noqa: SIM115 - lives with it
    proc = subprocess.Popen(server.process.args, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    again = S3Server(server.endpoint, proc, server.workdir)
    deadline = time.time() + 90
    while True:
        try:
            with _fs(again).open_input_stream(probe) as f:
                f.read()
            return again
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.5)


def _fs(server: S3Server) -> Any:
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                             endpoint_override=server.endpoint.removeprefix("http://"),
                             scheme="http", region="us-east-1", allow_bucket_creation=True)


def test_s3_server_stopped_mid_job_fails_the_unit_and_the_rerun_recovers(
        ray_session: str, s3_server: S3Server, host: str, tmp_path: Path) -> None:
    """Unit 0 reads its images from local files; unit 1 reads one from the HTTP host, whose
    answer stops a private S3 server (so the job is demonstrably running, half-way through
    unit 1), then two from that server. Unit 1 fails (no marker, no rejects); once the
    server is back (same port, same data) the rerun commits it, and every id is there once."""
    server = start_s3_server(tmp_path / "weed")  # private: the session's server stays up
    try:
        fs = _fs(server)
        fs.create_dir("imgs")
        with fs.open_output_stream("imgs/3.png") as f:
            f.write(png((120, 10, 10)))
        for k in (0, 1):
            (tmp_path / "local").mkdir(exist_ok=True)
            (tmp_path / "local" / f"{k}.png").write_bytes(png((10, k * 90, 10)))
        images = [str(tmp_path / "local" / "0.png"), str(tmp_path / "local" / "1.png"),
                  str(tmp_path / "local" / "2.png"),  # absent: image_missing
                  f"{host}/stop-s3.png", "s3://imgs/3.png", "s3://imgs/4.png"]  # 4: NoSuchKey
        records = llava_file(tmp_path / "llava_instruct_150k.json", images)
        out = tmp_path / "out"
        spec = ingest(records, out, storage={"endpoint_url": server.endpoint},
                      images={"allowed_hosts": ["127.0.0.1"], "timeout_s": 5})
        stopped: list[bool] = []

        def stop() -> None:
            stopped.append(server.process.poll() is None)  # it was up until now
            _kill(server)

        ON_FETCH["stop-s3.png"] = stop
        try:
            with pytest.raises(JobFailed) as info:
                run_job(spec)
        finally:
            ON_FETCH.pop("stop-s3.png", None)
        assert stopped == [True]
        assert "1 unit(s) not committed" in str(info.value)
        assert "s3://imgs/" in str(info.value)
        kept, rejected, units = contents(out)
        assert units <= 1  # unit 1 (the S3 images) has no marker, nothing in rejects/
        assert not {"px:r3", "px:r4", "px:r5"} & (set(kept) | set(rejected))
        if units:
            assert sorted(kept) == ["px:r0", "px:r1"] and rejected == {"px:r2": "image_missing"}

        server = _restart(server, "imgs/3.png")
        (again,) = run_job(spec)
        assert again.written + again.skipped == 2 and again.written >= 1
        kept, rejected, units = contents(out)
        assert units == 2 and sorted(kept) == ["px:r0", "px:r1", "px:r3", "px:r4"]
        assert rejected == {"px:r2": "image_missing", "px:r5": "image_missing"}
    finally:
        if server.process.poll() is None:
            server.stop()


# ------------------------------------------------------------------ out of memory on Ray


def test_oom_row_is_rejected_and_the_rest_committed_on_ray(ray_session: str,
                                                           tmp_path: Path) -> None:
    from pf_ray.data.synthetic import generate

    def tag(batch: dict[str, list]) -> dict[str, list]:  # pickled by value (a closure)
        if "synthetic:0-000000002" in batch["id"]:
            raise MemoryError("the activations of this row do not fit")
        return {"y": [f"ok {i}" for i in batch["id"]]}

    units = [Unit(f"u{k}", {"seed": 0, "start": 4 * k, "stop": 4 * k + 4, "image_size": 16,
                            "embed_images": False}) for k in range(2)]
    plan = ShardPlan(kind="toy", spec_hash="h1", spec={}, units=units, reader=generate,
                     output=OutputConfig(path=str(tmp_path / "out")), storage=StorageConfig(),
                     steps=[StepDef("tag", tag, ("id",), ("y",), Resources(batch_size=4))],
                     faults=FaultPolicy(retries=1, backoff_s=0))
    result = run_plan(plan, executor="ray")
    kept, rejected, committed = contents(tmp_path / "out")
    assert committed == 2 and rejected == {"synthetic:0-000000002": "oom_row"}
    assert len(kept) == 7 and result.manifest["totals"]["rejects"] == 1


# ------------------------------------------------------------------ re-batched units on Ray


def _rebatch_plan(root: Path, stage: Any) -> ShardPlan:
    from pf_ray.data.synthetic import generate

    units = [Unit(f"u{k}", {"seed": 1, "start": 5 * k, "stop": 5 * k + 5, "image_size": 16,
                            "embed_images": False}) for k in range(3)]
    return ShardPlan(kind="toy", spec_hash="h2", spec={}, units=units, reader=generate,
                     output=OutputConfig(path=str(root)), storage=StorageConfig(),
                     ray_stage=stage, faults=FaultPolicy(retries=0, backoff_s=0))


def test_rebatched_units_commit_by_ids_on_ray(ray_session: str, tmp_path: Path) -> None:
    """A stage that re-batches rows across units (parts) commits every unit; one that
    duplicates a row of u1 in place of another (same counts, other ids) fails u1 only
    after the others, and the rerun without it commits u1 with each id once."""
    root = tmp_path / "out"

    def duplicate_one(ds: Any) -> Any:
        one = ds.filter(lambda r: r["id"] == "synthetic:1-000000006")
        rest = ds.filter(lambda r: r["id"] != "synthetic:1-000000007")
        return rest.union(one).repartition(4)

    with pytest.raises(JobFailed, match="u1: .* ids are not the 5 id.s. read"):
        run_plan(_rebatch_plan(root, duplicate_one), executor="ray")
    ds = Dataset(str(root), StorageConfig())
    assert sorted(ds.committed()) == ["u0-h2", "u2-h2"]
    result = run_plan(_rebatch_plan(root, lambda ds: ds.repartition(4)), executor="ray")
    assert result.written == 1 and result.skipped == 2
    ids = [r["id"] for r in ds.read().to_pylist()]
    assert len(ids) == 15 and len(set(ids)) == 15
