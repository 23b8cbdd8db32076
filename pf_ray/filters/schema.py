"""What ``kind: filter`` writes: PF-1M rows, the rewrite columns then every filter's scores.

A filtered rewrite (the PF-1M release fields, docs/paper.md §4, and the §5 filters' scores):
the rewrite stage's columns (``finish_reason`` may be null: PF-1M rows from elsewhere lack
it), then the score columns of each registered filter in chain order (null where the filter
does not apply to the row); a filter declares its own in its record
(:class:`pf_ray.filters.registry.FilterDef`).
"""

from __future__ import annotations

import pyarrow as pa

from pf_ray.data.schema import REWRITE_SCHEMA, OutputSchema
from pf_ray.filters.registry import filters

# The rewrite columns every PF-1M row starts with.
REWRITE_FIELDS = [f.with_nullable(True) if f.name == "finish_reason" else f
                  for f in REWRITE_SCHEMA]


def pf1m_output() -> OutputSchema:
    """The output of the filters registered now."""
    fields = list(REWRITE_FIELDS)
    for f in filters():
        fields += [c for c in f.columns if c.name not in {x.name for x in fields}]
    return OutputSchema("pf1m", pa.schema(fields), ("source", "task"))


def score_columns() -> tuple[str, ...]:
    """The registered filters' score columns (what a pf1m input may already carry)."""
    return tuple(f.name for f in pf1m_output().schema if f.name not in REWRITE_SCHEMA.names)
