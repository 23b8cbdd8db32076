"""The ``eval`` job kind (a shard job, then its tables)."""

from __future__ import annotations

from pf_ray.eval.run import run_eval
from pf_ray.eval.spec import EvalSpec
from pf_ray.jobs.registry import JobKind

EVAL = JobKind("eval", EvalSpec, run=run_eval,
               description="answer sources (models, endpoints, datasets) on the same eval "
                           "items: reward win rates, ROUGE-L, NLI judge, STS; the paper's "
                           "tables")
