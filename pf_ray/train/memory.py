"""Measured peak memory of a training worker: host RSS growth and CUDA allocations.

Host: Linux keeps a process's peak resident set (``VmHWM`` in ``/proc/self/status``), and
writing ``5`` to ``/proc/self/clear_refs`` resets it to the current RSS. :class:`PeakMemory`
notes the RSS when it is made (the worker before the model exists) and, at each
:meth:`~PeakMemory.read`, reads the peak since the previous read, then resets it: the
step's own peak and, as a running maximum, the peak since the start. Without ``/proc`` (not
Linux) the lifetime peak of ``getrusage`` stands in, and the step peak is not reported.

CUDA: ``torch.cuda.max_memory_allocated`` of the rank's device, reset after each read the
same way (tensors only: the caching allocator's reserve and the CUDA context are not in it).

Construction (:func:`peak_private_memory`): the peak growth of private memory (``RssAnon``,
sampled), which leaves out the memory-mapped weights file that the node's ranks share.
"""

from __future__ import annotations

import resource
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"


def status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ``RssAnon``...) in bytes
    (None without /proc)."""
    try:
        with open(STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        return None
    return None


def _reset_host_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS; False where the kernel does not allow it."""
    try:
        with open(CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rusage_peak() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kB elsewhere


class PeakMemory:
    """Peak memory of this process since it was made; see the module docstring."""

    def __init__(self) -> None:
        rss = status_bytes("VmRSS")
        self.proc = rss is not None
        self.baseline = rss if rss is not None else _rusage_peak()
        self.resettable = self.proc and _reset_host_peak()
        self.peak_host = 0
        self.peak_gpu = 0

    def read(self, device: Any = None) -> dict[str, int]:
        """``peak_host_bytes`` (peak RSS since this object was made, less the RSS then),
        ``step_peak_host_bytes`` (the same since the previous read; needs a resettable
        peak) and, on a CUDA ``device``, ``peak_gpu_bytes`` / ``step_peak_gpu_bytes``."""
        out: dict[str, int] = {}
        hwm = status_bytes("VmHWM") if self.proc else _rusage_peak()
        if hwm is not None:
            step = max(0, hwm - self.baseline)
            self.peak_host = max(self.peak_host, step)
            out["peak_host_bytes"] = self.peak_host
            if self.resettable and _reset_host_peak():
                out["step_peak_host_bytes"] = step
        if device is not None and getattr(device, "type", str(device)) == "cuda":
            import torch

            step = int(torch.cuda.max_memory_allocated(device))
            self.peak_gpu = max(self.peak_gpu, step)
            out["peak_gpu_bytes"] = self.peak_gpu
            out["step_peak_gpu_bytes"] = step
            torch.cuda.reset_peak_memory_stats(device)
        return out


@contextmanager
def peak_private_memory(interval_s: float = 0.005) -> Iterator[dict[str, int | None]]:
    """The peak growth of this process's private memory (``RssAnon``) inside the block,
    sampled every ``interval_s`` (``out["bytes"]``; None off Linux).

    Private memory, not the resident set: the pages of a memory-mapped ``model.safetensors``
    are the node's page cache, shared by its ranks, and the kernel's high-water mark
    (``VmHWM``) would count them once per rank.
    """
    out: dict[str, int | None] = {"bytes": None}
    before = status_bytes("RssAnon")
    if before is None:
        yield out
        return
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval_s):
            now = status_bytes("RssAnon") or 0
            peak[0] = max(peak[0], now)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()
        peak[0] = max(peak[0], status_bytes("RssAnon") or 0)
        out["bytes"] = peak[0] - before
