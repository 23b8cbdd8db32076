"""ROUGE-L under both conventions, on cases worked out by hand."""

from __future__ import annotations

import pytest

from pf_ray.metrics.rouge import rouge_l


def test_single_reference_f1_and_coco_beta() -> None:
    # LCS("cat sat", "the cat sat on the mat") = 2: precision 1, recall 1/3
    assert rouge_l("cat sat", "the cat sat on the mat") == pytest.approx(0.5)
    coco = (1 + 1.44) * (1 / 3) / (1 / 3 + 1.44)
    assert rouge_l("cat sat", "the cat sat on the mat", "coco") == pytest.approx(coco)


def test_multiple_references_differ_by_convention() -> None:
    refs = ["a b", "a b c d e f g h"]
    # rouge_score: best F over references (each 2/3); coco: best P (1, from the long
    # reference) and best R (1, from the short one) combined, so 1.0
    assert rouge_l("a b c d", refs) == pytest.approx(2 / 3)
    assert rouge_l("a b c d", refs, "coco") == pytest.approx(1.0)


def test_edge_cases() -> None:
    assert rouge_l("", "a b") == 0.0
    assert rouge_l("Same Words.", "same words") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one reference"):
        rouge_l("a", [])
    with pytest.raises(ValueError, match="convention"):
        rouge_l("a", "a", "bleu")  # type: ignore[arg-type]
