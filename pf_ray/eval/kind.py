"""The ``eval`` job kind (a shard job, then its tables)."""

from __future__ import annotations

from pf_ray.eval.plan import plan_eval
from pf_ray.eval.run import finalize_eval
from pf_ray.eval.schema import EVAL_OUTPUT
from pf_ray.eval.spec import EvalSpec
from pf_ray.jobs.registry import JobKind

EVAL = JobKind("eval", EvalSpec, plan=plan_eval, output=EVAL_OUTPUT, finalize=finalize_eval,
               description="answer sources (models, endpoints, datasets) on the same eval "
                           "items: reward win rates, ROUGE-L, NLI judge, STS; the paper's "
                           "tables")
