"""The one actor-pool config: how many copies of a model step run, and their resources.

Engines (rewrite, eval, distort) and scorers (filters, eval) put their models in actor
pools; each spec block that configures one extends :class:`ActorPool` (changing a default
where its stage needs another) and turns it into the steps' :class:`Resources` with
:meth:`ActorPool.resources`.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from pf_ray.specs import Strict
from pf_ray.steps.base import Resources


class ActorPool(Strict):
    """An autoscaling actor pool: one model copy per actor, loaded once."""

    batch_size: int = Field(16, ge=1, description="rows per model call")
    num_cpus: float = Field(1.0, ge=0, description="CPUs per actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (fractions share a GPU)")
    min_actors: int = Field(1, ge=1, description="autoscaling actor pool lower bound (Ray "
                            "2.60 refuses 0; GPU nodes still scale from 0)")
    max_actors: int = Field(1, ge=1, description="autoscaling actor pool upper bound")

    @model_validator(mode="after")
    def _bounds(self) -> ActorPool:
        if self.max_actors < self.min_actors:
            raise ValueError(f"max_actors: received {self.max_actors}; allowed: >= "
                             f"min_actors ({self.min_actors})")
        return self

    def resources(self, batch_size: int | None = None) -> Resources:
        """The pool as step resources (``batch_size`` overrides the rows per call)."""
        return Resources(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                         batch_size=batch_size or self.batch_size,
                         min_actors=self.min_actors, max_actors=self.max_actors)
