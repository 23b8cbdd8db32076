"""Per-unit filter statistics (in each shard's marker) and their merge (the manifest).

Each unit's marker gets, for every filter, how many rows it scored, dropped and kept,
rows in and kept per source and task, and a sketch of every score over the rows that
received it (``scored``: before filtering) and over the rows kept (``kept``; for
``paragraph_clip_scores`` the paragraphs kept). A sketch is
count, sum, min, max and 21 quantiles (every 5%). Merged summaries give count, mean, min,
max exactly and p50 as the weighted median of the units' quantile points: exact for one
unit, within a few percent in rank across units (the markers stay small at any scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pf_ray.data.schema import REJECT_REASON, REJECT_STAGE, Batch

# filter step name -> the score column it writes
FILTER_SCORES = {"length": "length", "change": "rouge_score", "sts": "sts_similarity",
                 "clip": "paragraph_clip_scores", "nli": "nli_similarity", "reward": "reward"}
QUANTILES = 21


def _values(name: str, value: Any, labels: Sequence[str]) -> dict[str, list[float]]:
    """Summarised values of one score cell: lists are flattened (CLIP paragraphs) or split
    per label (NLI logits: nli_contradiction, nli_entailment, nli_neutral)."""
    if value is None:
        return {}
    if name == "nli_similarity":
        return {f"nli_{lab}": [float(v)] for lab, v in zip(labels, value, strict=False)}
    if isinstance(value, list):
        return {name: [float(v) for v in value]} if value else {}
    return {name: [float(value)]}


def sketch(values: list[float]) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    q = np.quantile(a, np.linspace(0, 1, QUANTILES)) if len(a) else []
    return {"count": int(len(a)), "sum": float(a.sum()) if len(a) else 0.0,
            "min": float(a.min()) if len(a) else None, "max": float(a.max()) if len(a) else None,
            "q": [round(float(x), 6) for x in q]}


class FilterStats:
    """``unit_stats`` hook of the filter plan (picklable: travels to the writer tasks)."""

    def __init__(self, labels: Sequence[str] = ("contradiction", "entailment", "neutral"),
                 extra_scores: Sequence[str] = ()):
        self.labels = list(labels)
        self.scores = list(dict.fromkeys([*FILTER_SCORES.values(), *extra_scores]))

    def __call__(self, batch: Batch, idx: list[int]) -> dict[str, Any]:
        filters: dict[str, dict[str, int]] = {}
        for step, col in FILTER_SCORES.items():
            scored = sum(1 for i in idx if col in batch and batch[col][i] is not None)
            dropped = sum(1 for i in idx if batch[REJECT_STAGE][i] == step
                          and str(batch[REJECT_REASON][i]).startswith("filter_"))
            filters[step] = {"scored": scored, "dropped": dropped, "kept": scored - dropped}
        filters["top_k"] = {"dropped": sum(1 for i in idx
                                           if batch[REJECT_REASON][i] == "filter_top_k")}
        rows: dict[str, dict[str, dict[str, int]]] = {"in": {}, "kept": {}}
        for col in ("source", "task"):
            for group in rows.values():
                group[col] = {}
            for i in idx:
                key = str(batch[col][i])
                rows["in"][col][key] = rows["in"][col].get(key, 0) + 1
                if batch[REJECT_REASON][i] is None:
                    rows["kept"][col][key] = rows["kept"][col].get(key, 0) + 1
        values: dict[str, dict[str, list[float]]] = {"scored": {}, "kept": {}}
        for col in self.scores:
            if col not in batch:
                continue
            for i in idx:
                for name, vs in _values(col, batch[col][i], self.labels).items():
                    values["scored"].setdefault(name, []).extend(vs)
                if batch[REJECT_REASON][i] is None:
                    cell = batch[col][i]
                    if col == "paragraph_clip_scores" and cell:  # the paragraphs kept
                        dropped = [p["score"] for p in batch["filtered_paragraphs"][i] or []]
                        cell = [v for v in cell if v not in dropped]
                    for name, vs in _values(col, cell, self.labels).items():
                        values["kept"].setdefault(name, []).extend(vs)
        return {"filters": filters, "rows": rows,
                "scores": {g: {k: sketch(v) for k, v in d.items()} for g, d in values.items()}}


def _weighted_median(sketches: list[dict[str, Any]]) -> float | None:
    points = [(x, s["count"] / len(s["q"])) for s in sketches if s["count"] for x in s["q"]]
    if not points:
        return None
    points.sort()
    half, acc = sum(w for _, w in points) / 2, 0.0
    for x, w in points:
        acc += w
        if acc >= half - 1e-12:
            return x
    return points[-1][0]


def merge_sketches(sketches: list[dict[str, Any]]) -> dict[str, Any]:
    live = [s for s in sketches if s["count"]]
    count = sum(s["count"] for s in live)
    return {"count": count,
            "mean": sum(s["sum"] for s in live) / count if count else None,
            "p50": _weighted_median(live),
            "min": min((s["min"] for s in live), default=None),
            "max": max((s["max"] for s in live), default=None)}


def summarize(markers: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``summary``: the committed units' stats merged."""
    stats = [s for m in markers for s in m.get("stats", [])]
    filters: dict[str, dict[str, int]] = {}
    rows: dict[str, dict[str, dict[str, int]]] = {"in": {}, "kept": {}}
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {"scored": {}, "kept": {}}
    for s in stats:
        for f, counts in s["filters"].items():
            target = filters.setdefault(f, {})
            for k, v in counts.items():
                target[k] = target.get(k, 0) + v
        for g, by_col in s["rows"].items():
            for col, values in by_col.items():
                target = rows[g].setdefault(col, {})
                for k, v in values.items():
                    target[k] = target.get(k, 0) + v
        for g, by_name in s["scores"].items():
            for name, sk in by_name.items():
                groups[g].setdefault(name, []).append(sk)
    scores = {g: {name: merge_sketches(sks) for name, sks in sorted(d.items())}
              for g, d in groups.items()}
    return {"filters": filters, "rows": rows, "scores": scores}
