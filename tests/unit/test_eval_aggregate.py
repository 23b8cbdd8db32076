"""Win rates (ties as half a win), medians, per-set means and the tables, on hand-made
records whose answers are known."""

from __future__ import annotations

import pytest

from pf_ray.eval.aggregate import (
    medians,
    pair_counts,
    rewards_by_source,
    understanding,
    win_rates,
)
from pf_ray.eval.tables import markdown


def rec(answerer: str, item: str, reward: float | None, *, set_: str = "S",
        metric: str = "none", score: float | None = None, **kw: float) -> dict:
    return {"answerer": answerer, "item": item, "set": set_, "reward": reward,
            "metric": metric, "score": score, **kw}


def test_pair_counts_wins_ties_losses_and_half_a_win_per_tie() -> None:
    a = {"1": 1.0, "2": 0.5, "3": -1.0, "4": 2.0, "only-a": 9.0}
    b = {"1": 0.0, "2": 0.5, "3": 0.0, "4": 2.0, "only-b": -9.0}
    c = pair_counts(a, b)
    # items 1 (win), 2 and 4 (ties), 3 (loss); only-a / only-b are not shared
    assert (c["wins"], c["ties"], c["losses"], c["n"]) == (1, 2, 1, 4)
    assert c["win_rate"] == pytest.approx((1 + 0.5 * 2) / 4)
    back = pair_counts(b, a)
    assert back["win_rate"] == pytest.approx(1 - c["win_rate"])
    # a margin turns near-equal rewards into ties
    near = pair_counts({"1": 1.0, "2": 1.04}, {"1": 1.03, "2": 1.0}, tie_margin=0.05)
    assert (near["ties"], near["win_rate"]) == (2, 0.5)
    assert pair_counts({"x": 1.0}, {"y": 1.0}) == {"wins": 0, "ties": 0, "losses": 0, "n": 0,
                                                    "win_rate": None}


def test_win_rate_matrix_from_records() -> None:
    records = [rec("raw", "q1", -2.0), rec("clever", "q1", 1.0), rec("llava", "q1", 2.0),
               rec("raw", "q2", -1.0), rec("clever", "q2", -1.0), rec("llava", "q2", 0.0),
               rec("raw", "q3", 0.0), rec("clever", "q3", 3.0),  # llava failed q3
               rec("raw", "q3", 5.0, set_="T"), rec("clever", "q3", 4.0, set_="T")]
    rewards = rewards_by_source(records)
    assert rewards["raw"][("T", "q3")] == 5.0  # same item id in another set is another item
    m = win_rates(rewards, ["raw", "clever", "llava"])
    assert set(m) == {"raw", "clever", "llava"} and "raw" not in m["raw"]
    # clever vs raw: S/q1 win, S/q2 tie, S/q3 win, T/q3 loss -> (2 + 0.5) / 4
    assert m["clever"]["raw"]["win_rate"] == pytest.approx(0.625)
    assert m["raw"]["clever"]["win_rate"] == pytest.approx(0.375)
    # llava only on q1, q2: both beat clever
    assert (m["llava"]["clever"]["n"], m["llava"]["clever"]["win_rate"]) == (2, 1.0)


def test_medians_per_source_and_set() -> None:
    records = [rec("raw", str(i), r) for i, r in enumerate([-3.0, -2.0, 5.0])]
    records += [rec("raw", "t", 1.0, set_="T"), rec("pf", "1", 0.5), rec("pf", "2", None)]
    med = medians(records, ["raw", "pf", "nobody"])
    assert med["raw"]["all"] == {"median": -0.5, "n": 4}  # (-2 + 1) / 2
    assert med["raw"]["sets"] == {"S": {"median": -2.0, "n": 3}, "T": {"median": 1.0, "n": 1}}
    assert med["pf"]["all"] == {"median": 0.5, "n": 1}
    assert med["nobody"]["all"] == {"median": None, "n": 0}


def test_understanding_means_and_tables_in_the_papers_layouts() -> None:
    records = [rec("a", "1", None, set_="COCO", metric="rouge_l", score=0.2, rouge_l=0.2),
               rec("a", "2", None, set_="COCO", metric="rouge_l", score=0.3, rouge_l=0.3),
               rec("a", "1", None, set_="OK-VQA", metric="nli", score=1.0),
               rec("a", "2", None, set_="OK-VQA", metric="nli", score=0.0),
               rec("a", "3", None, set_="OK-VQA", metric="nli", score=1.0),
               rec("a", "1", None, set_="Spot", metric="sts", score=0.461, rouge_l=0.185,
                   sts=0.461),
               rec("a", "1", None, set_="GT", metric="answer_match", score=None)]
    u = understanding(records)
    assert u["COCO"]["a"]["score"] == pytest.approx(0.25) and u["COCO"]["a"]["n"] == 2
    assert u["OK-VQA"]["a"]["score"] == pytest.approx(2 / 3)
    assert u["Spot"]["a"] == {"metric": "sts", "n": 1, "score": pytest.approx(0.461),
                              "rouge_l": pytest.approx(0.185), "sts": pytest.approx(0.461)}
    assert "GT" not in u  # no checkable answer: no score
    results = {"name": "t", "sources": ["a", "b"], "baseline": "a",
               "sets": {s: {"metric": m, "taken": 1, "eligible": 1} for s, m in
                        (("COCO", "rouge_l"), ("OK-VQA", "nli"), ("Spot", "sts"))},
               "answers": {"a": 6}, "understanding": u, "politeness": {
                   "model": "rm", "tie_margin": 0.0,
                   "win_rates": {"a": {"b": {"win_rate": 0.796, "n": 10}},
                                 "b": {"a": {"win_rate": 0.204, "n": 10}}},
                   "medians": {"a": {"all": {"median": 1.27, "n": 10}, "sets": {}},
                               "b": {"all": {"median": -2.42, "n": 10}, "sets": {}}}}}
    md = markdown(results)
    assert "| source | COCO (rouge_l) | OK-VQA (nli) |" in md
    assert "| a | 25.0 | 66.7 |" in md and "| b | - | - |" in md
    assert "| source | Spot |" in md and "| a | 46.1 / .185 |" in md  # Table 2's cells
    assert "| a |  | 79.6 (n=10) |" in md and "| b | 20.4 (n=10) |  |" in md
    assert md.index("| b | -2.42 |") < md.index("| a | 1.27 |")  # sorted by median
