"""Unreadable images keep their example (text-only) and are counted in ``images_unreadable``."""

from __future__ import annotations

from typing import Any

import pytest

from pf_ray.data.synthetic import generate
from pf_ray.specs import StorageConfig
from pf_ray.train.data import EXAMPLE_COLUMNS, ExampleBuilder
from pf_ray.train.loop import collate


def chat_batch(n: int, broken: set[int]) -> dict[str, list[Any]]:
    """``n`` synthetic rows with images; rows in ``broken`` get bytes that are no image."""
    rows = generate(0, 0, n)
    batch = {k: list(rows[k]) for k in ("id", "conversations", "image", "image_bytes")}
    assert all(ref is not None for ref in batch["image"])
    for i in broken:
        batch["image"][i], batch["image_bytes"][i] = None, b"not an image"
    return batch


def builder(multiturn: bool, fmt: str = "chat") -> ExampleBuilder:
    return ExampleBuilder("tiny", fmt, max_length=512, max_images=3, multiturn=multiturn,
                          seed=0, storage=StorageConfig())


def test_broken_image_leaves_a_text_only_example_and_is_counted() -> None:
    b = builder(multiturn=False)
    out = b(chat_batch(4, broken={1}))
    assert set(out) == set(EXAMPLE_COLUMNS)
    assert out["images_unreadable"] == [0, 1, 0, 0]
    assert out["n_images"] == [1, 0, 1, 1] and out["pixels"][1] == b""
    media = b.tokenizer.convert_tokens_to_ids("<image>")
    assert media not in out["input_ids"][1] and len(out["input_ids"][1]) > 10  # text kept


def test_merged_rows_bring_their_unreadable_images() -> None:
    # two short rows: augmentation appends each to the other (1 + 1 images fit max_images)
    out = builder(multiturn=True)(chat_batch(2, broken={0}))
    assert out["images_unreadable"] == [1, 1]  # its own image / the merged row's image
    assert out["n_images"] == [1, 1]  # the readable image of row 1, in both examples


@pytest.mark.parametrize("broken", [set(), {0, 1}])
def test_rewrite_examples_count_too(broken: set[int]) -> None:
    batch = chat_batch(2, broken)
    batch = {"id": batch["id"], "image": batch["image"], "image_bytes": batch["image_bytes"],
             "instruction": ["Describe it."] * 2, "distorted": ["a red bal"] * 2,
             "original": ["A red ball."] * 2}
    out = builder(multiturn=False, fmt="rewrite")(batch)
    assert out["images_unreadable"] == [int(i in broken) for i in range(2)]


def test_collate_ignores_the_count_column() -> None:
    import torch

    out = builder(multiturn=False)(chat_batch(3, broken={2}))
    batch = collate(out, pad_id=0, image_size=64, device=torch.device("cpu"))
    assert batch["images"].shape[:2] == (3, 1)
    assert batch["image_mask"].tolist() == [[True], [True], [False]]
