"""The ``train`` job kind (runs itself on Ray Train)."""

from __future__ import annotations

from pf_ray.jobs.registry import JobKind
from pf_ray.train.launch import run_train
from pf_ray.train.spec import TrainSpec

TRAIN = JobKind("train", TrainSpec, run=run_train,
                description="rewriter SFT or one Clever Flamingo stage on Ray Train")
