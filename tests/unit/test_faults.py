"""Row faults become rejects; infrastructure faults are retried, then fail the unit and job."""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest

from pf_ray.data.io import Dataset
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, UNIT, Batch
from pf_ray.data.synthetic import generate
from pf_ray.faults import EngineUnavailable, UnitFailed, is_infrastructure_fault
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


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connection refused"), TimeoutError("timed out"),
    EngineUnavailable("http://x/v1/completions: HTTP 503"), MemoryError(),
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    urllib.error.URLError(ConnectionRefusedError(111, "refused")),
    urllib.error.HTTPError("u", 401, "unauthorized", {}, None),  # wrong key
    urllib.error.HTTPError("u", 404, "not found", {}, None),  # wrong model or URL
])
def test_infrastructure_faults_are_classified(exc: Exception) -> None:
    assert is_infrastructure_fault(exc)


@pytest.mark.parametrize("exc", [ValueError("bad"), KeyError("x"), RuntimeError("shape"),
                                 urllib.error.HTTPError("u", 400, "bad request", {}, None),
                                 urllib.error.HTTPError("u", 413, "too large", {}, None)])
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

