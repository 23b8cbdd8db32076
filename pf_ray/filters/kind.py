"""The ``filter`` job kind: its spec and output follow the registered filters."""

from __future__ import annotations

from pf_ray.filters.plan import plan_filter
from pf_ray.filters.schema import pf1m_output
from pf_ray.filters.spec import build_filter_spec
from pf_ray.jobs.registry import JobKind


def filter_kind() -> JobKind:
    """The kind for the filters registered now (a filter added later: build it again)."""
    return JobKind("filter", build_filter_spec(), plan=plan_filter, output=pf1m_output(),
                   description="rewrite datasets -> PF-1M: length, change, STS, CLIPScore, "
                               "NLI, reward filters; every score kept, drops as rejects")


FILTER = filter_kind()
