"""``kind: eval``, its shard part: eval items x answer sources -> scored answers.

Units are the shard files of each set's dataset (:mod:`pf_ray.eval.items`); each output
shard holds every source's answer to the unit's items, with their scores. Steps: one
answer step per ``model`` / ``http`` source (its own actor pool), then the reward (with
``politeness``) and the understanding metrics (when a set has one). Rejects: items without
a question, missing dataset answers, unreadable images, a 4xx of an endpoint, prompts
over the context; a dead endpoint or a missing model fails the unit (nothing committed).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pf_ray.eval.answers import answer_steps
from pf_ray.eval.items import plan_units as item_units
from pf_ray.eval.items import read_items
from pf_ray.eval.judges import score_steps
from pf_ray.eval.schema import EVAL_OUTPUT
from pf_ray.eval.spec import EvalSpec
from pf_ray.jobs.shard import ShardPlan

# Where and how things run, not what they compute: left out of the shard names, so a job
# resumes on a bigger pool or behind another address.
SCHEDULING = frozenset({"num_cpus", "num_gpus", "min_actors", "max_actors", "batch_size",
                        "base_url", "api_key_env", "timeout_s", "max_concurrency",
                        "num_threads", "device", "pool", "fetch_threads"})


def _drop(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop(v) for k, v in value.items() if k not in SCHEDULING}
    if isinstance(value, list):
        return [_drop(v) for v in value]
    return value


def eval_hash(spec: EvalSpec) -> str:
    """What the job computes (sets, sources, decoding, scorers), not where it runs."""
    payload = _drop(spec.model_dump(mode="json", exclude={"storage", "ray", "faults",
                                                          "output", "name"}))
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def plan_eval(spec: EvalSpec) -> ShardPlan:
    """The shard plan; per set how many rows were eligible and taken is recorded in the
    manifest's spec (``selection``) for the tables."""
    units, selection = item_units(spec)
    recorded = spec.model_dump(mode="json")
    recorded["selection"] = selection
    plan = ShardPlan(kind="eval", spec_hash=eval_hash(spec), spec=recorded, units=units,
                     reader=read_items, output=spec.output, storage=spec.storage,
                     steps=[*answer_steps(spec), *score_steps(spec)], schema=EVAL_OUTPUT,
                     faults=spec.faults)
    return plan
