"""``pf-ray quickstart``: the whole offline pipeline, each stage beside its baseline."""

from pf_ray.quickstart.flow import quickstart

__all__ = ["quickstart"]
