"""Steps: units of work over a columnar batch that never import Ray (see base.py)."""

from pf_ray.steps.base import Batch, Resources, StepDef, as_step, batch_step

__all__ = ["Batch", "Resources", "StepDef", "as_step", "batch_step"]
