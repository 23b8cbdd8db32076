"""Jobs: the kind registry, shard plans and the runner (the only module here that imports Ray).

Stages build on this layer (they declare a :class:`~pf_ray.jobs.registry.JobKind` and build
:class:`~pf_ray.jobs.shard.ShardPlan` objects); it never imports a stage.
"""
