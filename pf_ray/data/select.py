"""Which input rows a stage takes: by source and task (the rest are ``not_selected``)."""

from __future__ import annotations

from pydantic import Field

from pf_ray.specs import Strict


class SelectConfig(Strict):
    """Which input rows the stage takes (others are rejects with reason ``not_selected``)."""

    sources: list[str] | None = Field(None, description="None: every source")
    tasks: list[str] | None = Field(None, description="None: every task")


def selected(select: SelectConfig, source: str, task: str) -> bool:
    """True when ``select`` takes a row of this source and task."""
    return ((select.sources is None or source in select.sources)
            and (select.tasks is None or task in select.tasks))
