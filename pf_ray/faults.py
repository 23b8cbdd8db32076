"""Row faults vs infrastructure faults (the ground floor: standard library only).

A *row fault* is something wrong with one row: a corrupt image, a text the tokenizer
cannot take, an HTTP 400 for one prompt. It becomes a reject and the job goes on.

An *infrastructure fault* is something wrong with what the job runs on: a dead endpoint,
a timeout, an HTTP 5xx, a CUDA error, an out-of-memory, a missing model file. Every row of
the micro-batch would fail the same way, so turning them into rejects would commit the
outage as data. Such a fault is retried with backoff and then fails the unit and the job
(:class:`UnitFailed`); nothing of the unit is committed and a rerun resumes it.
"""

from __future__ import annotations

import urllib.error

# Substrings of RuntimeError messages raised by torch / CUDA / NCCL for device faults.
_DEVICE_MESSAGES = ("CUDA error", "CUDA out of memory", "out of memory", "NCCL error",
                    "CUBLAS_STATUS", "cuDNN error", "device-side assert")
# Exception class names of device faults, matched by name so this module needs no torch.
_DEVICE_TYPES = ("OutOfMemoryError", "AcceleratorError", "CudaError")


class InfrastructureError(RuntimeError):
    """Raised by engines and loaders for faults of the infrastructure, not of a row."""


class EngineUnavailable(InfrastructureError):
    """An inference endpoint or engine cannot serve requests (refused, timed out, 5xx)."""


class ModelUnavailable(InfrastructureError):
    """A model's weights or files cannot be found or loaded."""


class UnitFailed(RuntimeError):
    """A unit cannot be committed; the job must fail (its message says which and why)."""


def is_infrastructure_fault(exc: BaseException) -> bool:
    """True when ``exc`` says the infrastructure failed rather than the row."""
    if isinstance(exc, InfrastructureError | MemoryError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, urllib.error.HTTPError):
        # 5xx and 429: the server; 401/403/404/405: a wrong key, model or URL (every row
        # would fail the same way). Other 4xx are about the request, hence the row.
        return exc.code >= 500 or exc.code in (401, 403, 404, 405, 429)
    if isinstance(exc, urllib.error.URLError):  # no HTTP status: the connection failed
        return True
    if type(exc).__name__ in _DEVICE_TYPES:
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return any(m in text for m in _DEVICE_MESSAGES)
    return False
