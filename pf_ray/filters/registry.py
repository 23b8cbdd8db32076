"""The registry of filters: each filter is one record, the chain is their registration order.

A filter is a file that declares a :class:`FilterDef` (its spec block, how its step is
built from that block, its drop reasons) and one :func:`register` line in
:mod:`pf_ray.filters.catalogue`. Everything that depends on the set of filters comes from
here: the ``filter`` spec's fields (:func:`pf_ray.filters.spec.build_filter_spec`), the
steps in order (:func:`pf_ray.filters.plan.filter_steps`), the reasons of intended drops
(outside ``faults.max_reject_fraction``) and the fields a filter needs while enabled.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pf_ray.filters.spec import FilterBase
from pf_ray.steps.base import StepDef


@dataclass(frozen=True)
class FilterDef:
    """One filter: ``filters.<name>`` in a spec, a step, the reasons its drops carry."""

    name: str
    config: type[FilterBase]
    step: Callable[[Any, Any], StepDef]  # (its spec block, the whole filter spec) -> step
    reasons: tuple[str, ...]
    columns: tuple[pa.Field, ...] = ()  # the score columns it adds to PF-1M rows
    required: tuple[str, ...] = ()  # fields of its block that must be set while enabled
    description: str = ""

    def __post_init__(self) -> None:
        bad = [r for r in self.reasons if not r.startswith("filter_")]
        if bad or not self.reasons:
            raise ValueError(f"filter {self.name!r}: reasons must be 'filter_...' names, "
                             f"received {list(self.reasons)}")


_FILTERS: dict[str, FilterDef] = {}
TOP_K_REASON = "filter_top_k"  # the top-k pass (a second pass, not a registered filter)


def register(f: FilterDef, *, replace: bool = False) -> FilterDef:
    """Add a filter at the end of the chain (another filter under its name is an error)."""
    if f.name in _FILTERS and _FILTERS[f.name] != f and not replace:
        raise ValueError(f"filter {f.name!r} is registered already")
    _FILTERS[f.name] = f
    return f


def unregister(name: str) -> None:
    _FILTERS.pop(name, None)


# The built-in filters register themselves in this module, loaded by name on first use (as
# the jobs registry loads the catalogue of kinds), so this module imports no filter.
CATALOGUE = "pf_ray.filters.catalogue"
_loaded = False


def filters() -> list[FilterDef]:
    """The registered filters in chain order (the built-ins are loaded on first use)."""
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module(CATALOGUE)
    return list(_FILTERS.values())


def reasons() -> tuple[str, ...]:
    """Every reason of an intended drop: the filters' and the top-k pass's."""
    return (*dict.fromkeys(r for f in filters() for r in f.reasons), TOP_K_REASON)
