"""The ``distort`` job kind."""

from __future__ import annotations

from pf_ray.distort.plan import plan_distort
from pf_ray.distort.schema import PAIR_OUTPUT
from pf_ray.distort.spec import DistortSpec
from pf_ray.jobs.registry import JobKind

DISTORT = JobKind("distort", DistortSpec, plan=plan_distort, output=PAIR_OUTPUT,
                  description="clean instruction data -> (distorted, original) rewriter pairs")
