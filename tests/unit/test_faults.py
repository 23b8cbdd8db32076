"""Row faults become rejects; infrastructure faults are retried, then fail the unit and job."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch

from pf_ray.data.io import Dataset
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, UNIT, Batch
from pf_ray.data.synthetic import generate
from pf_ray.engines.vllm import LLMTask, mark_engine_errors
from pf_ray.faults import (
    EngineUnavailable,
    UnitFailed,
    http_status_fault,
    is_infrastructure_fault,
    is_out_of_memory,
    llm_row_error_fault,
)
from pf_ray.jobs.runner import run_plan
from pf_ray.jobs.shard import JobFailed, ShardPlan, Unit, failure_from
from pf_ray.specs import FaultPolicy, OutputConfig, StorageConfig
from pf_ray.steps.base import Resources, StepDef, run_step


class Flaky:
    """A step whose engine is down for the first ``down`` calls, and rejects id 'bad'."""

    def __init__(self, down: int, exc: Exception):
        self.calls, self.down, self.exc = 0, down, exc

    def __call__(self, batch: Batch) -> Batch:
        self.calls += 1
        if self.calls <= self.down:
            raise self.exc
        if "bad" in batch["id"]:
            raise ValueError("this row is broken")
        return {"y": [f"ok {i}" for i in batch["id"]]}


STEP = StepDef("flaky", Flaky, ("id",), ("y",), Resources(batch_size=8))


def batch_of(n: int, bad: int | None = None) -> Batch:
    ids = [f"r{i}" if i != bad else "bad" for i in range(n)]
    return {"id": ids, UNIT: ["u0"] * n, REJECT_REASON: [None] * n}


class _ClientError(Exception):
    """botocore's ClientError as s3fs raises it: the S3 error code in ``response``."""

    def __init__(self, code: str):
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connection refused"), TimeoutError("timed out"),
    EngineUnavailable("http://x/v1/completions: HTTP 503"), MemoryError(),
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    urllib.error.URLError(ConnectionRefusedError(111, "refused")),
    urllib.error.HTTPError("u", 401, "unauthorized", {}, None),  # wrong key
    urllib.error.HTTPError("u", 404, "not found", {}, None),  # wrong model or URL
    PermissionError(13, "Permission denied"),
    OSError("When reading information for key 'a.png' in bucket 'b': AWS Error "
            "ACCESS_DENIED during HeadObject operation: No response body."),
    _ClientError("SlowDown"), _ClientError("AccessDenied"),
])
def test_infrastructure_faults_are_classified(exc: Exception) -> None:
    assert is_infrastructure_fault(exc)


@pytest.mark.parametrize("exc", [ValueError("bad"), KeyError("x"), RuntimeError("shape"),
                                 urllib.error.HTTPError("u", 400, "bad request", {}, None),
                                 urllib.error.HTTPError("u", 413, "too large", {}, None),
                                 OSError("image file is truncated (3 bytes not processed)"),
                                 _ClientError("NoSuchKey")])
def test_row_faults_are_classified(exc: Exception) -> None:
    assert not is_infrastructure_fault(exc)


def test_dead_engine_fails_the_unit_after_retries_without_bisecting() -> None:
    fn = Flaky(down=10**6, exc=ConnectionRefusedError(111, "Connection refused"))
    with pytest.raises(UnitFailed) as info:
        run_step(STEP, fn, batch_of(8), FaultPolicy(retries=2, backoff_s=0))
    assert fn.calls == 3  # the first call and two retries; never 2n-1 bisection calls
    assert "'flaky'" in str(info.value) and "u0" in str(info.value)
    assert "ConnectionRefusedError" in str(info.value)


def test_transient_fault_is_retried_and_row_faults_still_bisect() -> None:
    fn = Flaky(down=1, exc=TimeoutError("read timed out"))
    out = run_step(STEP, fn, batch_of(8, bad=5), FaultPolicy(retries=2, backoff_s=0))
    assert out[REJECT_REASON] == [None] * 5 + ["exception"] + [None] * 2
    assert out[REJECT_DETAIL][5] == "ValueError: this row is broken"
    assert out["y"][0] == "ok r0" and out["y"][5] is None


def test_failure_is_found_inside_wrapping_exceptions() -> None:
    try:
        try:
            raise UnitFailed("step 'x' failed on unit u1")
        except UnitFailed as inner:
            raise RuntimeError("Ray wrapped it") from inner
    except RuntimeError as outer:
        found = failure_from(outer)
    assert isinstance(found, JobFailed) and "unit u1" in str(found)
    assert failure_from(RuntimeError("something else")) is None


def reject_most(batch: Batch) -> Batch:
    """Rejects three rows in four (a broken image root, say)."""
    n = len(batch["id"])
    return {REJECT_REASON: [None if i % 4 == 0 else "image_missing" for i in range(n)],
            REJECT_DETAIL: [None] * n}


def plan(root: Path, fraction: float) -> ShardPlan:
    units = [Unit(f"u{k}", {"seed": 0, "start": 8 * k, "stop": 8 * k + 8, "image_size": 32,
                            "embed_images": False}) for k in range(2)]
    return ShardPlan(kind="toy", spec_hash="h1", spec={}, units=units, reader=generate,
                     output=OutputConfig(path=str(root)), storage=StorageConfig(),
                     steps=[StepDef("reject_most", reject_most, ("id",), ())],
                     faults=FaultPolicy(max_reject_fraction=fraction))


def test_unit_over_max_reject_fraction_is_not_committed(tmp_path: Path) -> None:
    with pytest.raises(JobFailed) as info:
        run_plan(plan(tmp_path / "out", 0.5), executor="local")
    message = str(info.value)
    assert "2 unit(s) not committed" in message
    assert "6 of 8 rows rejected (75% > faults.max_reject_fraction 0.5)" in message
    assert "image_missing: 6" in message
    dataset = Dataset(str(tmp_path / "out"), StorageConfig())
    assert not dataset.committed()
    # the same rejects are accepted when the spec says they are expected
    result = run_plan(plan(tmp_path / "out", 0.8), executor="local")
    assert result.manifest["totals"] == {**result.manifest["totals"], "rows": 4, "rejects": 12}
    assert json.loads(json.dumps(result.to_json()))["run"]["shards_written"] == 2



# ------------------------------------------------------------------ the taxonomy


@pytest.mark.parametrize(("status", "endpoint", "obj"), [
    (500, "infrastructure", "infrastructure"), (503, "infrastructure", "infrastructure"),
    (429, "infrastructure", "infrastructure"), (401, "infrastructure", "infrastructure"),
    (402, "infrastructure", "infrastructure"), (403, "infrastructure", "infrastructure"),
    (407, "infrastructure", "infrastructure"), (408, "infrastructure", "infrastructure"),
    (404, "infrastructure", "row"), (405, "infrastructure", "row"), (410, "row", "row"),
    (301, "infrastructure", "row"), (302, "infrastructure", "row"),
    (400, "row", "row"), (413, "row", "row"), (422, "row", "row"),
])
def test_http_status_fault(status: int, endpoint: str, obj: str) -> None:
    assert http_status_fault(status) == endpoint
    assert http_status_fault(status, target="object") == obj
    assert is_infrastructure_fault(urllib.error.HTTPError("u", status, "x", {}, None)) == (
        endpoint == "infrastructure")


def test_http_status_fault_names_its_targets() -> None:
    with pytest.raises(ValueError, match="target: received 'image'; allowed"):
        http_status_fault(404, target="image")  # type: ignore[arg-type]


@pytest.mark.parametrize(("error", "fault"), [
    # what ray.data.llm stores: f"{type(e).__name__}: {str(e)}" (vllm_engine_stage.py)
    ("EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the "
     "root cause.", "infrastructure"),
    ("AsyncEngineDeadError: Background loop has errored already.", "infrastructure"),
    ("EngineGenerateError: ", "infrastructure"),
    ("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB "
     "total capacity)", "infrastructure"),
    ("RuntimeError: CUDA error: an illegal memory access was encountered", "infrastructure"),
    ("QueueOverflowError: Request queue full.", "infrastructure"),
    ("ValueError: The decoder prompt (length 5000) is longer than the maximum model length "
     "of 2048. Make sure that `max_model_len` is no smaller than the number of text tokens.",
     "row"),
    ("VLLMValidationError: The decoder prompt (length 2048) plus the number of requested "
     "output tokens (at least 1) is longer than the maximum model length of 2048.", "row"),
    ("ValueError: temperature must be non-negative, got -1.0.", "row"),
])
def test_llm_row_errors_are_classified(error: str, fault: str) -> None:
    assert llm_row_error_fault(error) == fault


def _llm_task() -> LLMTask:
    return LLMTask(stage="rewrite", carried=("id",), select=bool,
                   messages=lambda r: [], on_output=lambda r, t: ({}, None))


def _llm_batch(errors: list[str]) -> Batch:
    n = len(errors)
    return {"id": [f"r{i}" for i in range(n)], UNIT: ["u7"] * n, "__inference_error__": errors,
            REJECT_STAGE: [None] * n, REJECT_REASON: [None] * n, REJECT_DETAIL: [None] * n}


def test_llm_row_errors_of_the_row_become_rejects() -> None:
    out = mark_engine_errors(_llm_batch(
        ["", "ValueError: The decoder prompt (length 5000) is longer than the maximum model "
             "length of 2048."]), task=_llm_task())
    assert out[REJECT_REASON] == [None, "llm_error"] and "decoder prompt" in out[REJECT_DETAIL][1]


def test_llm_engine_errors_fail_the_unit() -> None:
    with pytest.raises(UnitFailed, match="unit.s. u7 .*EngineDeadError"):
        mark_engine_errors(_llm_batch(
            ["", "EngineDeadError: EngineCore encountered an issue."]), task=_llm_task())


# ------------------------------------------------------------------ out of memory


class OOMOn:
    """A step that runs out of memory on any sub-batch holding one of ``ids`` (``"*"``:
    on every call), in one of the ways torch reports it."""

    def __init__(self, ids: set[str], kind: str = "torch"):
        self.ids, self.kind, self.calls = ids, kind, 0

    def __call__(self, batch: Batch) -> Batch:
        self.calls += 1
        if "*" in self.ids or self.ids & set(batch["id"]):
            if self.kind == "torch":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            if self.kind == "runtime":
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
            raise MemoryError()
        return {"y": [f"ok {i}" for i in batch["id"]]}


OOM_STEP = StepDef("oomy", OOMOn, ("id",), ("y",), Resources(batch_size=8))


@pytest.mark.parametrize("kind", ["torch", "runtime", "memory"])
def test_a_row_that_runs_out_of_memory_alone_is_rejected(kind: str) -> None:
    fn = OOMOn({"r5"}, kind)
    assert is_out_of_memory(torch.OutOfMemoryError("x")) and is_out_of_memory(MemoryError())
    out = run_step(OOM_STEP, fn, batch_of(8), FaultPolicy(retries=2, backoff_s=0))
    assert out[REJECT_REASON] == [None] * 5 + ["oom_row"] + [None] * 2
    assert "out of memory" in out[REJECT_DETAIL][5].lower() or kind == "memory"
    assert out["y"][0] == "ok r0" and out["y"][7] == "ok r7" and out["y"][5] is None
    # 3 calls on the micro-batch (first + 2 retries), then one bisection: 8 -> 4+4 -> ...
    assert fn.calls == 3 + 2 + 2 + 2


def test_a_batch_that_runs_out_of_memory_at_any_size_fails_the_unit() -> None:
    fn = OOMOn({"*"})
    with pytest.raises(UnitFailed, match="ran out of memory on each of the 8 row.s. of unit.s. "
                                         "u0 alone"):
        run_step(OOM_STEP, fn, batch_of(8), FaultPolicy(retries=2, backoff_s=0))
    assert fn.calls == 3 + 2 * 8 - 2  # the retries, then each sub-batch of the bisection once


def test_oom_row_is_rejected_and_the_rest_of_the_unit_committed(tmp_path: Path) -> None:
    def add_y(batch: Batch) -> Batch:
        return OOMOn({"synthetic:0-000000003"})(batch)

    units = [Unit("u0", {"seed": 0, "start": 0, "stop": 8, "image_size": 32,
                         "embed_images": False})]
    plan = ShardPlan(kind="toy", spec_hash="h1", spec={}, units=units, reader=generate,
                     output=OutputConfig(path=str(tmp_path / "out")), storage=StorageConfig(),
                     steps=[StepDef("oomy", add_y, ("id",), ("y",), Resources(batch_size=4))],
                     faults=FaultPolicy(retries=1, backoff_s=0))
    result = run_plan(plan, executor="local")
    dataset = Dataset(str(tmp_path / "out"), StorageConfig())
    rejects = dataset.read("rejects").to_pylist()
    assert [(r["id"], r["reason"], r["stage"]) for r in rejects] == [
        ("synthetic:0-000000003", "oom_row", "oomy")]
    assert result.manifest["totals"]["rows"] == 7 and len(dataset.committed()) == 1
