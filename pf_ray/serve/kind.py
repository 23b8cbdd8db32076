"""The ``serve`` job kind (runs itself on Ray Serve)."""

from __future__ import annotations

from pf_ray.jobs.registry import JobKind
from pf_ray.serve.launch import run_serve
from pf_ray.serve.spec import ServeSpec

SERVE = JobKind("serve", ServeSpec, run=run_serve,
                description="Clever Flamingo behind an OpenAI-compatible API on Ray Serve")
