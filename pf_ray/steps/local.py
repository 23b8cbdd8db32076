"""Run steps over an in-memory batch without Ray (unit tests, debugging, benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

from pf_ray.specs import FaultPolicy
from pf_ray.steps.base import Batch, StepDef, run_step


class LocalRunner:
    """Builds each step once (class steps load their model once) and maps batches."""

    def __init__(self, steps: Sequence[StepDef], faults: FaultPolicy | None = None):
        self.steps, self.faults = list(steps), faults
        self._fns = [s.build() for s in self.steps]

    def __call__(self, batch: Batch) -> Batch:
        for step, fn in zip(self.steps, self._fns, strict=True):
            batch = run_step(step, fn, batch, self.faults)
        return batch


def run_local(steps: Sequence[StepDef], batch: Batch) -> Batch:
    """Apply ``steps`` in order to ``batch``; rejected rows are marked, never dropped."""
    return LocalRunner(steps)(batch)
