"""The only module that calls Ray Data's ``map_batches``.

Unit-preserving execution: a dataset job reads each input *unit* (an input shard) into
exactly one block, and every map here uses ``batch_size=None`` (one block = one batch), so
a unit's rows stay together from read to write and a shard can be committed atomically.
Steps still see their own batch size: :func:`pf_ray.steps.base.run_step` cuts the unit into
micro-batches of ``Resources.batch_size``. Class steps and GPU steps run in an actor pool
(``ActorPoolStrategy``), functions as tasks (``TaskPoolStrategy``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import ray.data
from ray.data import ActorPoolStrategy, TaskPoolStrategy

from pf_ray.data.schema import (
    BOOKKEEPING,
    REJECT_SCHEMA,
    REWRITE_SCHEMA,
    SAMPLE_SCHEMA,
    UNIT_ROWS,
    UNIT_T0,
    Batch,
    OutputSchema,
)
from pf_ray.specs import FaultPolicy
from pf_ray.steps.base import StepDef, run_step

# Known column types, so that an all-null column in one block keeps its real type: the
# formats stages share, the bookkeeping columns, and (per job) the kind's output schema.
_TYPES: dict[str, pa.DataType] = {f.name: f.type for s in (SAMPLE_SCHEMA, REWRITE_SCHEMA,
                                                            REJECT_SCHEMA) for f in s}
_TYPES.update({c: pa.string() for c in BOOKKEEPING})
_TYPES[UNIT_ROWS] = pa.int64()
_TYPES[UNIT_T0] = pa.float64()


def column_types(output: OutputSchema | None = None) -> dict[str, pa.DataType]:
    """The known column types, with those of a kind's ``output``."""
    return {**_TYPES, **({f.name: f.type for f in output.schema} if output else {})}


def table_to_batch(table: pa.Table) -> Batch:
    return table.to_pydict()


def batch_to_table(batch: Batch, types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """Columns of known name (``types``, default :func:`column_types`) get their declared
    type; others are inferred."""
    types = _TYPES if types is None else types
    arrays, names = [], []
    for name, values in batch.items():
        typ = types.get(name)
        try:
            arrays.append(pa.array(values, type=typ))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise TypeError(f"column {name!r}: values do not fit {typ}: {exc}") from exc
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


class _StepActor:
    """Actor wrapper: builds a class/GPU step once, then maps unit blocks."""

    def __init__(self, step: StepDef, faults: FaultPolicy,
                 types: dict[str, pa.DataType] | None = None):
        self.step, self.faults, self.types = step, faults, types
        self.fn = step.build()

    def __call__(self, table: pa.Table) -> pa.Table:
        return batch_to_table(run_step(self.step, self.fn, table_to_batch(table), self.faults),
                              self.types)


def _step_task(table: pa.Table, step: StepDef, faults: FaultPolicy,
               types: dict[str, pa.DataType] | None = None) -> pa.Table:
    return batch_to_table(run_step(step, step.build(), table_to_batch(table), faults), types)


def _function_task(table: pa.Table, fn: Callable[..., Batch], kwargs: dict[str, Any]) -> pa.Table:
    return batch_to_table(fn(table_to_batch(table), **kwargs))


def map_step(ds: ray.data.Dataset, step: StepDef, faults: FaultPolicy | None = None,
             output: OutputSchema | None = None) -> ray.data.Dataset:
    """Apply one step to every unit block of ``ds`` (``faults``: infrastructure faults;
    ``output``: the kind's output schema, whose column types the blocks keep)."""
    faults = faults or FaultPolicy()
    types = column_types(output)
    res = step.resources
    common: dict[str, Any] = {"batch_size": None, "batch_format": "pyarrow",
                              "num_cpus": res.num_cpus}
    if res.num_gpus:
        common["num_gpus"] = res.num_gpus
    if res.memory:
        common["memory"] = res.memory
    if step.uses_actors:
        return ds.map_batches(
            _StepActor, fn_constructor_kwargs={"step": step, "faults": faults,
                                               "types": types},
            compute=ActorPoolStrategy(min_size=res.min_actors,
                                      max_size=max(res.min_actors, res.max_actors)),
            **common)
    return ds.map_batches(_step_task, fn_kwargs={"step": step, "faults": faults,
                                                 "types": types},
                          compute=TaskPoolStrategy(),
                          **common)


def map_steps(ds: ray.data.Dataset, steps: Sequence[StepDef], faults: FaultPolicy | None = None,
              output: OutputSchema | None = None) -> ray.data.Dataset:
    for step in steps:
        ds = map_step(ds, step, faults, output)
    return ds


def map_units(ds: ray.data.Dataset, fn: Callable[..., Batch], *, num_cpus: float = 1.0,
              **kwargs: Any) -> ray.data.Dataset:
    """Apply a whole-unit function (read a unit, write a unit) as tasks, block by block."""
    return ds.map_batches(_function_task, fn_kwargs={"fn": fn, "kwargs": kwargs},
                          batch_size=None, batch_format="pyarrow", num_cpus=num_cpus,
                          compute=TaskPoolStrategy())


class _BatchActor:
    """Actor wrapper for a batch class that may change the row count."""

    def __init__(self, cls: type, kwargs: dict[str, Any]):
        self.obj = cls(**kwargs)

    def __call__(self, table: pa.Table) -> pa.Table:
        return batch_to_table(self.obj(table_to_batch(table)))


def map_batches_any(ds: ray.data.Dataset, fn: Any, *, batch_size: int | None,
                    num_cpus: float = 1.0, actors: tuple[int, int] | None = None,
                    fn_constructor_kwargs: dict[str, Any] | None = None,
                    **fn_kwargs: Any) -> ray.data.Dataset:
    """A batch function or class that may add or drop rows (sampling, example building).

    Not a step: no row-level reject bookkeeping. Classes run in an actor pool of
    ``actors = (min, max)``, functions as tasks.
    """
    if isinstance(fn, type):
        lo, hi = actors or (1, 1)
        return ds.map_batches(_BatchActor, fn_constructor_kwargs={
            "cls": fn, "kwargs": fn_constructor_kwargs or {}}, batch_size=batch_size,
            batch_format="pyarrow", num_cpus=num_cpus,
            compute=ActorPoolStrategy(min_size=lo, max_size=max(lo, hi)))
    return ds.map_batches(_function_task, fn_kwargs={"fn": fn, "kwargs": fn_kwargs},
                          batch_size=batch_size, batch_format="pyarrow", num_cpus=num_cpus,
                          compute=TaskPoolStrategy())
