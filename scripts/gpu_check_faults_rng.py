"""GPU check (run on a CUDA machine): device faults are infrastructure faults, and
checkpointed RNG states restore the CUDA generators.

1. A real CUDA out-of-memory and a real device-side failure are classified as
   infrastructure faults; a step that hits one is retried, then fails its unit
   (``UnitFailed``) instead of rejecting the rows.
2. ``train.loop.rng_state`` / ``set_rng_state`` round-trip through ``torch.save`` /
   ``torch.load(weights_only=True)`` and give the same CUDA random numbers again.

    python scripts/gpu_check_faults_rng.py      # prints one line per check, exits 1 on failure
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pf_ray.data.schema import REJECT_REASON, UNIT  # noqa: E402
from pf_ray.faults import UnitFailed, is_infrastructure_fault  # noqa: E402
from pf_ray.specs import FaultPolicy  # noqa: E402
from pf_ray.steps.base import Resources, StepDef, run_step  # noqa: E402
from pf_ray.train.loop import rng_state, set_rng_state  # noqa: E402


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def main() -> int:
    assert torch.cuda.is_available(), "needs a CUDA device"
    results = []
    # 1a. a real out-of-memory
    try:
        torch.empty(1 << 50, dtype=torch.uint8, device="cuda")
        oom: BaseException | None = None
    except Exception as exc:  # noqa: BLE001
        oom = exc
    results.append(check("cuda OOM is an infrastructure fault", oom is not None
                         and is_infrastructure_fault(oom), f"{type(oom).__name__}"))
    torch.cuda.empty_cache()

    # 1b. a step whose model runs out of memory fails its unit after the retries
    calls = []

    def greedy(batch: dict) -> dict:
        calls.append(1)
        torch.empty(1 << 50, dtype=torch.uint8, device="cuda")
        return {"y": batch["id"]}

    step = StepDef("greedy", greedy, ("id",), ("y",), Resources(batch_size=4))
    batch = {"id": [f"r{i}" for i in range(8)], UNIT: ["u0"] * 8, REJECT_REASON: [None] * 8}
    try:
        out = run_step(step, greedy, batch, FaultPolicy(retries=1, backoff_s=0))
        failed = f"no failure, rejects {out[REJECT_REASON]}"
    except UnitFailed as exc:
        failed = str(exc)
    results.append(check("OOM in a step fails the unit (no rejects)", failed.startswith(
        "step 'greedy' failed with an infrastructure fault") and len(calls) == 2, failed[:160]))

    # 2. CUDA RNG states survive a checkpoint round trip
    torch.manual_seed(1)
    torch.cuda.manual_seed_all(1)
    torch.randn(3, device="cuda")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rng_0.pt")
        torch.save(rng_state(), path)
        first = torch.randn(5, device="cuda").cpu()
        torch.randn(7, device="cuda")
        set_rng_state(torch.load(path, weights_only=True))
        again = torch.randn(5, device="cuda").cpu()
    results.append(check("CUDA RNG restored from a checkpoint", torch.equal(first, again),
                         f"{first.tolist()[:2]} vs {again.tolist()[:2]}"))
    print(f"{sum(results)}/{len(results)} checks passed on {torch.cuda.get_device_name(0)}, "
          f"torch {torch.__version__}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
