"""Length filter: words counted on whitespace, drops at both ends, tasks respected."""

from __future__ import annotations

from pf_ray.data.schema import REJECT_REASON
from pf_ray.filters.length import length_filter, word_count


def test_word_count_and_decisions() -> None:
    assert word_count("  A red  square.\n\nIt is\tbright. ") == 6
    batch = {"id": ["a", "b", "c", "d", "e"],
             "task": ["vqa", "vqa", "captions", "captions", "boxes"],
             "output": ["Yes.", "Yes, the cat is black.", "one two three four five six",
                        "", "x"]}
    out = length_filter(batch, min_words=3, max_words=5, tasks=["vqa", "captions"])
    assert out["length"] == [1, 5, 6, 0, None]  # boxes: not applied, no score
    assert out[REJECT_REASON] == ["filter_length_short", None, "filter_length_long",
                                  "filter_length_short", None]
    assert "1 words < min_words 3" in out["_reject_detail"][0]
