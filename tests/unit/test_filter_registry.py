"""A new filter is one file and one registration: the spec, the chain, the reasons and the
PF-1M columns follow from the registry (no other file edited)."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_filter_models import case_rows, write_rewrite_dataset

from pf_ray.config import SpecError, parse_spec
from pf_ray.data.io import Dataset
from pf_ray.filters import registry as filter_registry
from pf_ray.filters.kind import filter_kind
from pf_ray.filters.plan import plan_filter
from pf_ray.jobs import registry as kind_registry
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

# The whole toy filter: its spec block, its step, its record (one file).
TOY = '''
from typing import Any

import pyarrow as pa
from pydantic import Field

from pf_ray.data.schema import Batch
from pf_ray.filters.common import applies, drop, new_out, text
from pf_ray.filters.registry import FilterDef
from pf_ray.filters.spec import FilterBase
from pf_ray.steps.base import Resources, StepDef


class ShoutFilter(FilterBase):
    """Outputs written in capitals: drop above ``max_caps``."""

    max_caps: float = Field(0.5, ge=0, le=1, description="largest share of capital letters")


def shout(batch: Batch, *, max_caps: float, tasks: Any = None) -> Batch:
    n = len(batch["id"])
    out = new_out(n, "caps")
    for i in range(n):
        if not applies(batch["task"][i], tasks):
            continue
        letters = [c for c in text(batch["output"][i]) if c.isalpha()]
        out["caps"][i] = share = sum(c.isupper() for c in letters) / max(1, len(letters))
        if share > max_caps:
            drop(out, i, "filter_shout", f"caps {share:.2f} > max_caps {max_caps}")
    return out


def _step(c: ShoutFilter, spec: Any) -> StepDef:
    return StepDef("shout", shout, ("id", "task", "output"), ("caps",), Resources(),
                   {"max_caps": c.max_caps, "tasks": c.tasks})


FILTER = FilterDef("shout", ShoutFilter, _step, ("filter_shout",),
                   columns=(pa.field("caps", pa.float64()),))
'''


@pytest.fixture()
def toy(tmp_path: Path) -> Iterator[None]:
    path = tmp_path / "toy_shout.py"
    path.write_text(textwrap.dedent(TOY))
    spec = importlib.util.spec_from_file_location("toy_shout", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_shout"] = module
    spec.loader.exec_module(module)
    old = kind_registry.get("filter")
    filter_registry.register(module.FILTER)  # the one registration
    kind_registry.register(filter_kind(), replace=True)
    try:
        yield
    finally:
        filter_registry.unregister("shout")
        kind_registry.register(old, replace=True)
        sys.modules.pop("toy_shout", None)


def test_a_toy_filter_is_one_file_and_one_registration(toy: None, tmp_path: Path) -> None:
    rows = case_rows(1)
    rows[0]["output"] = "THE CAR IN THE PICTURE IS RED."
    src = str(tmp_path / "rewrite")
    write_rewrite_dataset(src, rows, rows_per_shard=5)
    models_off = {f: {"enabled": False} for f in ("sts", "clip", "nli", "reward")}
    job = parse_spec({"kind": "filter", "inputs": [src], "output": {"path": str(tmp_path / "o")},
                      "ray": {"progress": False}, "shout": {"max_caps": 0.6}, **models_off})
    assert [s.name for s in plan_filter(job).steps] == ["length", "change", "shout"]
    assert "filter_shout" in filter_registry.reasons()
    run_job(job, executor="local")
    ds = Dataset(str(tmp_path / "o"), StorageConfig())
    rejects = {r["id"]: r["reason"] for r in ds.read("rejects").to_pylist()}
    assert rejects[rows[0]["id"]] == "filter_shout"
    kept = ds.read().to_pylist()
    assert kept and all(r["caps"] is not None and r["caps"] <= 0.6 for r in kept)
    # an intended drop: outside faults.max_reject_fraction, like the built-in filters'
    assert ds.read_manifest()["totals"]["rejects_per_reason"]["filter_shout"] == 1
    with pytest.raises(SpecError, match="shout.max_caps"):
        parse_spec({"kind": "filter", "inputs": [src], "output": {"path": "x"},
                    "shout": {"max_caps": 2}, **models_off})


def test_the_built_in_chain_is_the_papers_order() -> None:
    names = [f.name for f in filter_registry.filters()]
    assert names == ["length", "change", "sts", "clip", "nli", "reward"]
    with pytest.raises(ValueError, match="registered already"):
        filter_registry.register(filter_registry.FilterDef(
            "sts", filter_registry.filters()[0].config, lambda c, s: None,  # type: ignore[arg-type, return-value]
            ("filter_other",)))
    with pytest.raises(ValueError, match="reasons must be 'filter_"):
        filter_registry.FilterDef("x", filter_registry.filters()[0].config,
                                  lambda c, s: None, ("bad",))  # type: ignore[arg-type, return-value]
