"""The step protocol.

A step maps a batch of rows to the same rows with new or changed columns. It is either

* a pure function ``fn(batch) -> batch`` decorated with :func:`batch_step`, or
* a class whose ``__init__`` loads what it needs once (a model, a tokenizer) and whose
  ``__call__(batch) -> batch`` maps a batch; it declares ``name``, ``inputs``, ``outputs``
  and ``resources`` as class attributes.

A batch is a dict from column name to a Python list, one entry per row (nested columns such
as ``conversations`` are lists of dicts, which numpy cannot hold without object arrays).

Steps never import Ray: :mod:`pf_ray.steps.ray_adapter` runs them with ``map_batches`` and
:mod:`pf_ray.steps.local` runs them in-process. Both go through :func:`run_step`, which
isolates row faults: a row that makes the step raise is rejected with the stage, exception
type and message, and its batch-mates are kept. Infrastructure faults (a dead endpoint, a
CUDA error, see :mod:`pf_ray.faults`) are retried and then fail the unit instead. An
out-of-memory is retried like any infrastructure fault and then isolated: one row that
runs out of memory alone is rejected ``oom_row`` (see :func:`run_step`). A step may also
reject rows itself by returning ``_reject_reason`` (and ``_reject_detail``).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pf_ray.data.schema import (  # noqa: F401 - re-exported: steps speak in these names
    ADDED_COLUMNS,
    BOOKKEEPING,
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    UNIT,
    UNIT_ROWS,
    UNIT_T0,
    Batch,
)
from pf_ray.faults import UnitFailed, is_infrastructure_fault, is_out_of_memory
from pf_ray.specs import FaultPolicy


@dataclass(frozen=True)
class Resources:
    """What one copy of a step needs, and how many copies may run."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 256  # rows per call of the step
    min_actors: int = 1  # actor pool bounds (class steps and GPU steps)
    max_actors: int = 1
    memory: int | None = None  # bytes, for Ray's scheduler


@dataclass(frozen=True)
class StepDef:
    """A step bound to its constructor arguments, ready to run anywhere."""

    name: str
    target: Callable[..., Any]  # the function, or the class
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    resources: Resources = field(default_factory=Resources)
    init_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_class(self) -> bool:
        return isinstance(self.target, type)

    @property
    def uses_actors(self) -> bool:
        """Classes (load once) and GPU steps run in an actor pool; functions as tasks."""
        return self.is_class or self.resources.num_gpus > 0

    def build(self) -> Callable[[Batch], Batch]:
        """The callable that maps a batch (instantiates a class step once)."""
        if self.is_class:
            return self.target(**self.init_kwargs)
        if self.init_kwargs:
            kwargs = self.init_kwargs
            return lambda batch: self.target(batch, **kwargs)
        return self.target


def batch_step(*, name: str, inputs: tuple[str, ...], outputs: tuple[str, ...],
               resources: Resources | None = None) -> Callable[[Callable[..., Batch]], Any]:
    """Declare a function as a step (its columns and resources ride on the function)."""

    def wrap(fn: Callable[..., Batch]) -> Callable[..., Batch]:
        fn.step_info = (name, tuple(inputs), tuple(outputs), resources or Resources())  # type: ignore[attr-defined]
        return fn

    return wrap


def as_step(obj: Any, *, resources: Resources | None = None, **init_kwargs: Any) -> StepDef:
    """Turn a decorated function or a step class into a :class:`StepDef`."""
    if isinstance(obj, StepDef):
        return obj
    if isinstance(obj, type):
        for attr in ("name", "inputs", "outputs"):
            if not hasattr(obj, attr):
                raise TypeError(f"step class {obj.__name__} must declare {attr!r}")
        return StepDef(obj.name, obj, tuple(obj.inputs), tuple(obj.outputs),
                       resources or getattr(obj, "resources", Resources()), init_kwargs)
    info = getattr(obj, "step_info", None)
    if info is None:
        raise TypeError(f"{obj!r} is not a step: decorate it with @batch_step or use a class "
                        "with name/inputs/outputs attributes")
    name, inputs, outputs, res = info
    return StepDef(name, obj, inputs, outputs, resources or res, init_kwargs)


class StepContractError(RuntimeError):
    """A step returned the wrong columns or row count: a bug in the step, not in a row."""


def num_rows(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def take(batch: Batch, idx: list[int]) -> Batch:
    return {k: [v[i] for i in idx] for k, v in batch.items()}


def _check(step: StepDef, out: Batch, n: int) -> None:
    missing = [c for c in step.outputs if c not in out]
    if missing:
        raise StepContractError(f"step {step.name!r} did not return declared column(s) {missing}")
    for col, values in out.items():
        if len(values) != n:
            raise StepContractError(
                f"step {step.name!r} returned {len(values)} value(s) in column {col!r} "
                f"for {n} row(s); steps map rows one to one (reject rows instead of dropping)")


OOM_REASON = "oom_row"


class _OutOfMemory(Exception):
    """Internal: a micro-batch still ran out of memory after its retries (bisect it)."""

    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc


def run_step(step: StepDef, fn: Callable[[Batch], Batch], batch: Batch,
             faults: FaultPolicy | None = None) -> Batch:
    """Apply ``fn`` (built from ``step``) to the live rows of ``batch`` in micro-batches.

    Rows already rejected pass through untouched. If a micro-batch raises a row fault, it
    is bisected until the failing rows are alone; each is rejected with reason
    ``exception`` and the exception type and message as detail. If it raises an
    infrastructure fault (see :mod:`pf_ray.faults`), the same micro-batch is retried with
    backoff, then :class:`~pf_ray.faults.UnitFailed` is raised: the unit is not committed.

    An out-of-memory (``torch.OutOfMemoryError``, ``MemoryError``, "CUDA out of memory")
    is retried the same way (cached device memory is released before each retry). If it
    persists, the micro-batch is bisected once down to single rows; a row that runs out of
    memory alone is rejected ``oom_row`` and its batch-mates go on. If every live row of
    the batch runs out of memory alone, the device is at fault, not a row: the unit fails.
    Bounds: ``faults.retries + 1`` calls with backoff for the micro-batch, then at most
    ``2 n - 1`` calls for its ``n`` rows during the bisection, each tried once and without
    sleeping (an OOM of a given sub-batch repeats; waiting would only multiply the sleeps).

    Returns a new batch with the step's columns.
    """
    n = num_rows(batch)
    # a column added to the shared formats later reads as nulls in older datasets
    batch = {**{c: [None] * n for c in step.inputs if c in ADDED_COLUMNS}, **batch}
    out: Batch = {k: list(v) for k, v in batch.items()}
    for col in (*step.outputs, REJECT_STAGE, REJECT_REASON, REJECT_DETAIL):
        out.setdefault(col, [None] * n)
    missing = [c for c in step.inputs if c not in batch]
    if missing:
        raise StepContractError(f"step {step.name!r} needs column(s) {missing}; the batch has "
                                f"{sorted(batch)}")
    live = [i for i in range(n) if out[REJECT_REASON][i] is None]
    size = max(1, step.resources.batch_size)
    policy = faults or FaultPolicy()
    oom: list[int] = []
    for start in range(0, len(live), size):
        _apply(step, fn, batch, out, live[start:start + size], policy, oom, bisecting=False)
    if oom and len(oom) == len(live):
        raise UnitFailed(
            f"step {step.name!r} ran out of memory on each of the {len(live)} row(s) of "
            f"unit(s) {', '.join(_units(batch, live)) or '?'} alone, after "
            f"{policy.retries} retries: the device is short of memory, not a row at fault "
            f"(lower the step's batch size or give it a larger device): "
            f"{out[REJECT_DETAIL][oom[0]]}"[:4000])
    return out


def _units(batch: Batch, idx: list[int]) -> list[str]:
    return sorted({str(batch[UNIT][i]) for i in idx}) if UNIT in batch else []


def _release_memory() -> None:
    """Give cached memory back before a retry after an OOM (torch only if already loaded:
    steps never make this module import it)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _call(step: StepDef, fn: Callable[[Batch], Batch], batch: Batch, sub: Batch,
          idx: list[int], faults: FaultPolicy, bisecting: bool) -> Batch:
    """``fn(sub)``, retrying infrastructure faults with exponential backoff.

    An OOM that outlasts the retries (or any OOM while ``bisecting``) raises
    :class:`_OutOfMemory` for the caller to bisect; other infrastructure faults raise
    :class:`UnitFailed` after the retries.
    """
    for attempt in range(faults.retries + 1):
        try:
            result = fn(sub)
            _check(step, result, len(idx))
            return result
        except (StepContractError, UnitFailed):
            raise
        except Exception as exc:
            if not is_infrastructure_fault(exc):
                raise
            if is_out_of_memory(exc):
                _release_memory()
                if bisecting or attempt == faults.retries:
                    raise _OutOfMemory(exc) from exc
            elif attempt == faults.retries:
                raise UnitFailed(
                    f"step {step.name!r} failed with an infrastructure fault on "
                    f"{len(idx)} row(s) of unit(s) {', '.join(_units(batch, idx)) or '?'} "
                    f"after {faults.retries} retries: {type(exc).__name__}: {exc}"[:4000]
                ) from exc
            time.sleep(faults.backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def _apply(step: StepDef, fn: Callable[[Batch], Batch], batch: Batch, out: Batch,
           idx: list[int], faults: FaultPolicy, oom: list[int], bisecting: bool) -> None:
    # A step that reads nothing still gets the ids, so it knows how many rows it maps.
    sub = take({k: batch[k] for k in (step.inputs or ("id",)) if k in batch}, idx)
    try:
        result = _call(step, fn, batch, sub, idx, faults, bisecting)
    except (StepContractError, UnitFailed):
        raise
    except _OutOfMemory as exc:
        if len(idx) > 1:
            mid = len(idx) // 2
            _apply(step, fn, batch, out, idx[:mid], faults, oom, bisecting=True)
            _apply(step, fn, batch, out, idx[mid:], faults, oom, bisecting=True)
            return
        i = idx[0]
        oom.append(i)
        out[REJECT_STAGE][i] = step.name
        out[REJECT_REASON][i] = OOM_REASON
        out[REJECT_DETAIL][i] = f"{type(exc.exc).__name__}: {exc.exc}"[:2000]
        return
    except Exception as exc:  # noqa: BLE001 - any other failure is a row fault
        if len(idx) > 1:
            mid = len(idx) // 2
            _apply(step, fn, batch, out, idx[:mid], faults, oom, bisecting)
            _apply(step, fn, batch, out, idx[mid:], faults, oom, bisecting)
            return
        i = idx[0]
        out[REJECT_STAGE][i] = step.name
        out[REJECT_REASON][i] = "exception"
        out[REJECT_DETAIL][i] = f"{type(exc).__name__}: {exc}"[:2000]
        return
    for col, values in result.items():
        if col == REJECT_REASON:
            for j, i in enumerate(idx):
                if values[j] is not None:
                    out[REJECT_STAGE][i] = step.name
                    out[REJECT_REASON][i] = values[j]
            continue
        column = out.setdefault(col, [None] * num_rows(out))
        for j, i in enumerate(idx):
            column[i] = values[j]
