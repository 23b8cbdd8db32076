"""Adding a job kind is one spec class + one registration; validate/run/--json follow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pytest
from pydantic import Field

from pf_ray.cli import main
from pf_ray.config import SpecError, parse_spec
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON, Batch, OutputSchema
from pf_ray.data.synthetic import generate
from pf_ray.jobs import registry
from pf_ray.jobs.registry import JobKind
from pf_ray.jobs.shard import ShardPlan, Unit
from pf_ray.specs import OutputConfig, SpecBase, spec_hash
from pf_ray.steps.base import StepDef


class ShoutSpec(SpecBase):
    """A toy kind: synthetic rows whose odd rows are rejected."""

    kind: Literal["shout"]
    output: OutputConfig
    n: int = Field(10, ge=1)


def reject_odd(batch: Batch) -> Batch:
    return {REJECT_REASON: [None if i % 2 == 0 else "odd" for i in range(len(batch["id"]))],
            REJECT_DETAIL: [None] * len(batch["id"])}


# The toy kind's own output: rows of its own schema, declared in its registration (no edit
# of pf_ray/data/schema.py).
SHOUT_OUTPUT = OutputSchema("shout", pa.schema([pa.field("id", pa.string(), nullable=False),
                                               pa.field("source", pa.string()),
                                               pa.field("task", pa.string())]), ("task",))


def plan_shout(spec: ShoutSpec) -> ShardPlan:
    unit = Unit("all", {"seed": 0, "start": 0, "stop": spec.n, "image_size": 32,
                        "embed_images": False})
    return ShardPlan(kind="shout", spec_hash=spec_hash(spec), spec=spec.model_dump(),
                     units=[unit], reader=generate, output=spec.output, storage=spec.storage,
                     steps=[StepDef("reject_odd", reject_odd, ("id",), ())],
                     faults=spec.faults, expected_reasons=("odd",), schema=SHOUT_OUTPUT)


class EchoSpec(SpecBase):
    kind: Literal["echo"]
    text: str


class EchoResult:
    def __init__(self, text: str):
        self.text = text

    def summary(self) -> str:
        return f"echo: {self.text}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "echo", "text": self.text}


def run_echo(spec: EchoSpec, *, executor: str = "ray") -> EchoResult:
    return EchoResult(spec.text.upper())


@pytest.fixture()
def toy_kinds() -> Iterator[None]:
    registry.register(JobKind("shout", ShoutSpec, plan=plan_shout, output=SHOUT_OUTPUT))
    registry.register(JobKind("echo", EchoSpec, run=run_echo))
    yield
    registry.unregister("shout")
    registry.unregister("echo")


def test_toy_kinds_validate_run_and_print_json(toy_kinds: None, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "shout.yaml"
    spec.write_text(f"kind: shout\nn: 6\noutput: {{path: {tmp_path / 'out'}}}\n")
    assert main(["validate", str(spec)]) == 0
    assert "ok (kind: shout)" in capsys.readouterr().out
    assert main(["run", str(spec), "--executor", "local", "--no-progress", "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("["):])
    assert result[0]["kind"] == "shout"
    assert result[0]["totals"]["rows"] == 3 and result[0]["totals"]["rejects"] == 3
    from pf_ray.data.io import Dataset
    from pf_ray.specs import StorageConfig

    written = Dataset(str(tmp_path / "out"), StorageConfig())
    assert written.read().schema.names == ["id", "source", "task"]  # the kind's own schema
    assert set(written.read_manifest()["totals"]["counts"]) == {"task"}

    pipeline = tmp_path / "pipe.yaml"
    pipeline.write_text(f"kind: pipeline\njobs:\n  - {spec.name}\n  - {{kind: echo, text: hi}}\n")
    assert main(["run", str(pipeline), "--executor", "local", "--no-progress", "--json"]) == 0
    out = capsys.readouterr().out
    assert "echo: HI" in out
    results = json.loads(out[out.index("["):])
    assert [r["kind"] for r in results] == ["shout", "echo"]
    assert results[0]["run"]["shards_skipped"] == 1  # committed by the first run


def test_toy_kind_errors_name_its_fields(toy_kinds: None) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"kind": "echo", "text": 3, "colour": "red"})
    problems = "\n".join(info.value.problems)
    assert "colour: unknown key (received 'red'); allowed keys:" in problems
    assert "text" in problems.split("allowed keys:")[1]
    with pytest.raises(SpecError) as info:
        parse_spec({"kind": "nope"})
    assert "'echo'" in info.value.problems[0] and "'shout'" in info.value.problems[0]


def test_unknown_kind_lists_registered_kinds() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"kind": "unregistered"})
    for kind in ("synthetic", "ingest", "distort", "rewrite", "train", "pipeline"):
        assert kind in info.value.problems[0]
    assert "shout" not in info.value.problems[0]


def test_a_kind_finalizes_its_shards(tmp_path: Path) -> None:
    """``finalize`` turns the committed shards into the job's result (as eval's tables)."""
    from pf_ray.jobs.runner import run_job

    seen: list[Any] = []

    def tables(spec: ShoutSpec, shards: Any) -> EchoResult:
        seen.append(shards.manifest["totals"]["rows"])
        return EchoResult(f"{seen[0]} rows")

    registry.register(JobKind("shout", ShoutSpec, plan=plan_shout, output=SHOUT_OUTPUT,
                              finalize=tables))
    try:
        spec = parse_spec({"kind": "shout", "n": 4, "output": {"path": str(tmp_path)}})
        [result] = run_job(spec, executor="local")
        assert result.summary() == "echo: 2 rows" and seen == [2]
    finally:
        registry.unregister("shout")
    with pytest.raises(ValueError, match="declares its output schema"):
        JobKind("shout", ShoutSpec, plan=plan_shout)
    with pytest.raises(ValueError, match="belong to shard kinds"):
        JobKind("echo", EchoSpec, run=run_echo, finalize=tables)


def test_a_kind_must_match_its_spec() -> None:
    with pytest.raises(ValueError, match="must declare kind: Literal"):
        JobKind("other", EchoSpec, run=run_echo)
    with pytest.raises(ValueError, match="exactly one of plan= or run="):
        JobKind("echo", EchoSpec)
    registry.register(JobKind("echo", EchoSpec, run=run_echo))
    try:
        with pytest.raises(ValueError, match="registered already"):
            registry.register(JobKind("echo", EchoSpec,
                                      run=lambda s, **_: EchoResult("x")))
    finally:
        registry.unregister("echo")
