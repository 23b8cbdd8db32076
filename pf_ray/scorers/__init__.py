"""The models that score rows: STS, CLIPScore, NLI, reward (and the offline stand-ins).

Filters (a threshold on a score) and eval (the judges, the reward) both call these; none
of them owns one. Each loads once per actor, on first use, and raises
:class:`~pf_ray.faults.ModelUnavailable` when its model is missing or wrong.
"""
