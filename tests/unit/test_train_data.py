"""Training data: mixture counts, multi-turn augmentation, stage trainability.

The epoch plan (exact counts per source, interleaving) is in test_train_mixture.py; the
candidate pool, truncation and image padding in test_train_multiturn.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from pf_ray.data.synthetic import generate
from pf_ray.model.prompts import IGNORE_INDEX
from pf_ray.model.trainability import apply_trainability, trainable_names
from pf_ray.specs import StorageConfig
from pf_ray.train.data import ExampleBuilder, largest_remainder, mixture_counts
from pf_ray.train.stages import STAGE_TRAINABILITY


def test_mixture_counts_ratio_and_sqrt() -> None:
    assert mixture_counts([100, 400], [1, 1], "ratio", 1000) == [500, 500]
    assert mixture_counts([100, 400], [1, 1], "sqrt", 300) == [100, 200]  # sqrt 10 : 20
    assert mixture_counts([100, 400], [1, 3], "ratio", None) == [125, 375]


def test_largest_remainder_adds_up_exactly() -> None:
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(largest_remainder(772_000, [3.0, 1.7, 0.2, 9.9])) == 772_000
    assert largest_remainder(5, [0, 0]) == [0, 0] and largest_remainder(0, [1]) == [0]
    assert mixture_counts([0, 10], [1, 1], "ratio", 6) == [0, 6]  # empty: no share


def test_chat_examples_with_multiturn_augmentation() -> None:
    rows = generate(0, 0, 36)
    batch = {k: rows[k] for k in ("id", "conversations", "image", "image_bytes")}
    builder = ExampleBuilder("tiny", "chat", max_length=512, max_images=3, multiturn=True,
                             seed=0, storage=StorageConfig())
    out = builder(batch)
    assert len(out["input_ids"]) == 36
    assert max(out["n_images"]) <= 3 and max(len(x) for x in out["input_ids"]) <= 512
    eos = builder.tokenizer.eos_token_id
    media = builder.tokenizer.convert_tokens_to_ids("<image>")
    multi = 0
    for ids, labels, n, pixels in zip(out["input_ids"], out["labels"], out["n_images"],
                                      out["pixels"], strict=True):
        assert ids.count(media) == n  # every <image> token has its image
        assert len(pixels) == n * 3 * 64 * 64 * 4
        trained = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
        assert media not in trained and trained.count(eos) >= 1
        multi += ids.count(builder.tokenizer.convert_tokens_to_ids("</s>")) > 1
    assert multi > 18  # most examples got later turns appended
    single = ExampleBuilder("tiny", "chat", max_length=512, max_images=3, multiturn=False,
                            seed=0, storage=StorageConfig())(batch)
    assert sum(len(x) for x in single["input_ids"]) < sum(len(x) for x in out["input_ids"])
    assert np.frombuffer(out["pixels"][0], dtype=np.float32).size > 0


@pytest.mark.parametrize("stage", sorted(STAGE_TRAINABILITY))
def test_each_stage_trains_exactly_its_parts(stage: str) -> None:
    from pf_ray.model.loading import build_model

    model = build_model("tiny")
    apply_trainability(model, STAGE_TRAINABILITY[stage])
    by_part = trainable_names(model)
    declared = set(STAGE_TRAINABILITY[stage].trainable_parts)
    assert {p for p, names in by_part.items() if names} == declared
    expected = {"rewriter": {"lm_lora", "lm_embeddings"}, "clever_s1": {"lm_lora", "lm_embeddings"},
                "clever_s2": {"perceiver", "xattn_attn"}, "clever_s3": {"lm_lora", "lm_embeddings"},
                "flamingo_pretrain": {"perceiver", "xattn_attn", "xattn_ffn", "lm_embeddings"}}
    assert declared == expected[stage]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for names in by_part.values() for n in names}
