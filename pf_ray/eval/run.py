"""``kind: eval``'s finalize step: the tables of the paper's evaluation.

The shard part (:mod:`pf_ray.eval.plan`) commits every source's scored answers and resumes
like any dataset job (the runner runs it). Then the committed answers (a few score columns)
are read back and aggregated (:mod:`pf_ray.eval.aggregate`) into the eval's output folder, beside the
dataset's ``shards/`` and ``rejects/``:

* ``results.json``: sets and their selection, answers and rejects per source, the win-rate
  matrix, median rewards, per-set metrics;
* ``tables.md``: the same in the layouts of the paper's Tables 1-2, the win-rate matrix and
  Fig. 6 (:mod:`pf_ray.eval.tables`);
* ``reward_distributions.png``, ``median_reward.png`` (with ``politeness``).

``pf-ray report EVAL_FOLDER`` adds them to the folder's card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pf_ray.data.io import Dataset
from pf_ray.eval.aggregate import medians, rewards_by_source, understanding, win_rates
from pf_ray.eval.spec import EvalSpec
from pf_ray.eval.tables import markdown, plots, write_files
from pf_ray.specs import StorageConfig

RECORD_COLUMNS = ["set", "item", "answerer", "metric", "score", "reward", "rouge_l", "sts"]
RESULTS = "results.json"
TABLES = "tables.md"


def read_records(root: str, storage: StorageConfig) -> list[dict[str, Any]]:
    """The committed answers' score columns, one dict per answer."""
    data = Dataset(root, storage)
    return data.read(columns=RECORD_COLUMNS).to_pylist() if data.shard_files() else []


def summarise(spec: EvalSpec, records: list[dict[str, Any]], manifest: dict[str, Any],
              selection: dict[str, dict[str, int]]) -> dict[str, Any]:
    """``results.json``: everything the tables show, as numbers."""
    names = [s.name for s in spec.sources]
    totals = manifest["totals"]
    results: dict[str, Any] = {
        "name": spec.name, "sources": names, "baseline": spec.baseline or names[0],
        "sets": {s.name: {"metric": s.metric, "path": s.path, **selection.get(s.name, {})}
                 for s in spec.sets},
        "answers": totals.get("counts", {}).get("answerer", {}),
        "rejects_per_reason": totals.get("rejects_per_reason", {}),
        "understanding": understanding(records), "politeness": None}
    if spec.politeness is not None:
        rewards = rewards_by_source(records)
        results["politeness"] = {
            "model": spec.politeness.model, "tie_margin": spec.politeness.tie_margin,
            "ties": "half a win", "win_rates": win_rates(rewards, names,
                                                          spec.politeness.tie_margin),
            "medians": medians(records, names)}
    return results


@dataclass
class EvalResult:
    """The shard job's result, the results and the files written."""

    shards: Any
    results: dict[str, Any]
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        r = self.results
        lines = [self.shards.summary()]
        pol = r.get("politeness")
        if pol:
            base = r["baseline"]
            rates = ", ".join(
                f"{a} {100 * c['win_rate']:.1f}%" for a in r["sources"] if a != base
                and (c := pol["win_rates"][a][base])["win_rate"] is not None)
            lines.append(f"reward win rate vs {base}: {rates or '-'}")
        for s, per in r["understanding"].items():
            lines.append(f"{s} ({r['sets'][s]['metric']}): " + ", ".join(
                f"{a} {v['score']:.3f}" for a, v in per.items() if v["score"] is not None))
        lines.append("tables: " + ", ".join(self.files))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {**self.shards.to_json(), "kind": "eval", "results": self.results,
                "files": self.files}


def finalize_eval(spec: EvalSpec, shards: Any) -> EvalResult:
    """After the shard job: results.json, tables.md and plots from the committed answers."""
    records = read_records(spec.output.path, spec.storage)
    selection = shards.manifest.get("spec", {}).get("selection", {})
    results = summarise(spec, records, shards.manifest, selection)
    files: dict[str, bytes] = {}
    if results["politeness"] is not None:
        per: dict[str, list[float]] = {a: [] for a in results["sources"]}
        for r in records:
            if r["reward"] is not None:
                per[r["answerer"]].append(float(r["reward"]))
        files = plots(per, {a: m["all"]["median"]
                            for a, m in results["politeness"]["medians"].items()})
    results["plots"] = sorted(files)
    files[TABLES] = markdown(results).encode()
    files[RESULTS] = json.dumps(results, indent=1, sort_keys=True).encode()
    return EvalResult(shards, results, write_files(spec.output.path, spec.storage, files))
