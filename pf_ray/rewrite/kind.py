"""The ``rewrite`` job kind."""

from __future__ import annotations

from pf_ray.data.schema import REWRITE_OUTPUT
from pf_ray.jobs.registry import JobKind
from pf_ray.rewrite.plan import plan_rewrite
from pf_ray.rewrite.spec import RewriteSpec

REWRITE = JobKind("rewrite", RewriteSpec, plan=plan_rewrite, output=REWRITE_OUTPUT,
                  description="raw vision-language annotations -> rewrites by the rewriter "
                              "(flamingo actor pool or an OpenAI-compatible server)")
