"""From scored answers to the paper's numbers: win rates, median rewards, per-set metrics.

Pure functions over records (one dict per committed answer: ``set``, ``item``,
``answerer``, ``reward``, ``metric``, ``score``, ``rouge_l``, ``sts``).

**Win rate** of source A over source B (paper.md §7, "Clever Flamingo beats raw annotations
79.6%"): over the items both answered (same set, same item), the share where A's reward is
higher, a tie (|difference| <= ``tie_margin``, 0: equal rewards, e.g. identical answers)
counting as half a win. The paper does not say how it counts ties; half a win keeps
``rate(A, B) + rate(B, A) = 1``. Items one source failed to answer (a reject) are left out
of that pair only.

**Median reward** per source, over all its answers and per set (Fig. 6 reports one median
per dataset). **Understanding**: per set and source, the mean of ``score`` (ROUGE-L F,
judged-correct share, STS cosine, answer match), with ROUGE-L beside STS for Table 2.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

Record = dict[str, Any]


def rewards_by_source(records: Iterable[Record]) -> dict[str, dict[tuple[str, str], float]]:
    """``{answerer: {(set, item): reward}}`` for records that have a reward."""
    out: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for r in records:
        if r.get("reward") is not None:
            out[r["answerer"]][(r["set"], r["item"])] = float(r["reward"])
    return dict(out)


def pair_counts(a: dict[Any, float], b: dict[Any, float], tie_margin: float = 0.0
                ) -> dict[str, Any]:
    """Wins, ties and losses of ``a`` against ``b`` on their common items, and the win rate
    (ties as half a win; None when they share no item)."""
    wins = ties = losses = 0
    for key in a.keys() & b.keys():
        diff = a[key] - b[key]
        if abs(diff) <= tie_margin:
            ties += 1
        elif diff > 0:
            wins += 1
        else:
            losses += 1
    n = wins + ties + losses
    return {"wins": wins, "ties": ties, "losses": losses, "n": n,
            "win_rate": (wins + 0.5 * ties) / n if n else None}


def win_rates(rewards: dict[str, dict[Any, float]], names: Sequence[str],
              tie_margin: float = 0.0) -> dict[str, dict[str, dict[str, Any]]]:
    """The win-rate matrix: ``matrix[a][b]`` is ``a`` against ``b`` (``a != b``)."""
    return {a: {b: pair_counts(rewards.get(a, {}), rewards.get(b, {}), tie_margin)
                for b in names if b != a} for a in names}


def medians(records: Iterable[Record], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{answerer: {"all": {median, n}, "sets": {set: {median, n}}}}`` of the rewards."""
    every: dict[str, list[float]] = defaultdict(list)
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("reward") is not None:
            every[r["answerer"]].append(float(r["reward"]))
            per[r["answerer"]][r["set"]].append(float(r["reward"]))

    def stat(values: list[float]) -> dict[str, Any]:
        return {"median": statistics.median(values) if values else None, "n": len(values)}

    return {a: {"all": stat(every.get(a, [])),
                "sets": {s: stat(v) for s, v in sorted(per.get(a, {}).items())}}
            for a in names}


def understanding(records: Iterable[Record]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{set: {answerer: {metric, score, n, rouge_l, sts}}}``: means over the answers
    that have the score (answer_match leaves rows without a checkable answer out)."""
    acc: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    metric: dict[str, str] = {}
    for r in records:
        if r.get("metric") in (None, "none"):
            continue
        metric[r["set"]] = r["metric"]
        for key in ("score", "rouge_l", "sts"):
            if r.get(key) is not None:
                acc[(r["set"], r["answerer"])][key].append(float(r[key]))
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (s, a), values in sorted(acc.items()):
        scores = values.get("score", [])
        entry: dict[str, Any] = {"metric": metric[s], "n": len(scores),
                                 "score": statistics.fmean(scores) if scores else None}
        for key in ("rouge_l", "sts"):
            if values.get(key):
                entry[key] = statistics.fmean(values[key])
        out[s][a] = entry
    return dict(out)
