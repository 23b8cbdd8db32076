"""The built-in filters, registered in the paper's order (one line per filter).

Adding a filter: a module that declares its :class:`~pf_ray.filters.registry.FilterDef`,
and one ``register`` line here (its place in the chain). The ``filter`` spec and its output
schema are built from what is registered (:func:`pf_ray.filters.kind.filter_kind`).
"""

from __future__ import annotations

from pf_ray.filters import change, clipscore, length, nli, reward, sts
from pf_ray.filters.registry import register

register(length.FILTER)
register(change.FILTER)
register(sts.FILTER)
register(clipscore.FILTER)
register(nli.FILTER)
register(reward.FILTER)
