"""The catalogue of built-in job kinds: one registration line per kind.

A stage declares its :class:`~pf_ray.jobs.registry.JobKind` in its own folder
(``pf_ray/<stage>/kind.py``: spec class, plan or run function); adding a kind is that
folder plus one line here. The registry imports this module on first use.
"""

from __future__ import annotations

from pf_ray.distort.kind import DISTORT
from pf_ray.eval.kind import EVAL
from pf_ray.filters.kind import FILTER
from pf_ray.ingest.kind import INGEST, SYNTHETIC
from pf_ray.jobs.registry import register
from pf_ray.rewrite.kind import REWRITE
from pf_ray.serve.kind import SERVE
from pf_ray.train.kind import TRAIN

register(SYNTHETIC)
register(INGEST)
register(DISTORT)
register(REWRITE)
register(FILTER)
register(TRAIN)
register(SERVE)
register(EVAL)
