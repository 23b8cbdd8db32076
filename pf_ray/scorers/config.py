"""The actor pool of a scorer model (filters and eval judges)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pf_ray.steps.pool import ActorPool


class ScorerPool(ActorPool):
    """An actor pool for a scorer: one model copy per actor, loaded once."""

    batch_size: int = Field(64, ge=1, description="rows per model call")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda if present")
