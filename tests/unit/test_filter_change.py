"""Change filter: rouge_score is ROUGE-L F vs the original; copies (F >= 1) are dropped."""

from __future__ import annotations

import pytest

from pf_ray.data.schema import REJECT_REASON
from pf_ray.filters.change import change_filter


def test_rouge_score_and_unchanged() -> None:
    batch = {"id": list("abcd"), "task": ["vqa", "vqa", "captions", "captions"],
             "original": ["yes", "A dog runs on the grass", "a cat", "two dogs"],
             "output": ["Yes.", "a DOG runs on the grass!", "The image shows a cat on a mat.",
                        "There are two dogs."]}
    out = change_filter(batch, max_rouge=1.0)
    # hand computation, tokens lower-cased alphanumerics:
    # c: LCS(the image shows a cat on a mat | a cat) = 2 -> P 2/8, R 2/2, F = 2PR/(P+R) = 0.4
    # d: LCS(there are two dogs | two dogs) = 2 -> P 2/4, R 1 -> F = 2/3
    assert out["rouge_score"][:2] == [1.0, 1.0]
    assert out["rouge_score"][2] == pytest.approx(0.4)
    assert out["rouge_score"][3] == pytest.approx(2 / 3)
    assert out[REJECT_REASON] == ["filter_unchanged", "filter_unchanged", None, None]
    # a lower threshold also drops near-copies
    assert change_filter(batch, max_rouge=0.6)[REJECT_REASON][3] == "filter_unchanged"
