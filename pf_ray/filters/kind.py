"""The ``filter`` job kind."""

from __future__ import annotations

from pf_ray.filters.catalogue import FilterSpec
from pf_ray.filters.plan import plan_filter
from pf_ray.jobs.registry import JobKind

FILTER = JobKind("filter", FilterSpec, plan=plan_filter,
                 description="rewrite datasets -> PF-1M: length, change, STS, CLIPScore, NLI, "
                             "reward filters; every score kept, drops as rejects")
