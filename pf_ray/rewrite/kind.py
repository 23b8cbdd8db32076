"""The ``rewrite`` job kind: its spec follows the registered engines."""

from __future__ import annotations

from pf_ray.data.schema import REWRITE_OUTPUT
from pf_ray.jobs.registry import JobKind
from pf_ray.rewrite.plan import plan_rewrite
from pf_ray.rewrite.spec import build_rewrite_spec


def rewrite_kind() -> JobKind:
    """The kind for the engines registered now (an engine added later: build it again)."""
    return JobKind("rewrite", build_rewrite_spec(), plan=plan_rewrite, output=REWRITE_OUTPUT,
                   description="raw vision-language annotations -> rewrites by the rewriter "
                               "(pf-ray's model, an OpenAI-compatible server, or any "
                               "registered engine)")


REWRITE = rewrite_kind()
