"""Examples without a label token never reach the loss; a batch without one gives zero loss."""

from __future__ import annotations

import math
from typing import Any

import torch

from pf_ray.model.prompts import IGNORE_INDEX
from pf_ray.specs import StorageConfig
from pf_ray.train.data import EXAMPLE_COLUMNS, ExampleBuilder
from pf_ray.train.loop import collate, guarded_loss, step_line


def rows(lengths: list[int]) -> dict[str, list[Any]]:
    """Text rows whose human message has ``lengths[i]`` words."""
    n = len(lengths)
    return {"id": [f"t:{i}" for i in range(n)], "image": [None] * n, "image_bytes": [None] * n,
            "conversations": [[{"role": "user", "content": " ".join(["word"] * k)},
                               {"role": "assistant", "content": "Fine."}] for k in lengths]}


def builder(fmt: str = "chat", multiturn: bool = False) -> ExampleBuilder:
    return ExampleBuilder("tiny", fmt, max_length=96, max_images=3, multiturn=multiturn,
                          seed=0, storage=StorageConfig())


def test_truncated_away_labels_skip_the_example_and_count() -> None:
    b = builder()
    out = b(rows([3, 400, 4, 400, 400, 5]))  # 400 words: the response is cut away
    assert set(out) == set(EXAMPLE_COLUMNS)
    assert len(out["input_ids"]) == 3
    assert out["examples_skipped"] == [0, 1, 2]  # the ones dropped just before each
    assert all(any(lab != IGNORE_INDEX for lab in labels) for labels in out["labels"])
    assert b(rows([400, 400]))["input_ids"] == []  # a batch with nothing left...
    assert b(rows([2]))["examples_skipped"] == [2]  # ...passes its count on
    assert builder(multiturn=True)(rows([400, 3]))["examples_skipped"] == [1]


def test_rewrite_examples_whose_revision_is_cut_away_are_skipped() -> None:
    batch = {"id": ["p:0", "p:1"], "image": [None] * 2, "image_bytes": [None] * 2,
             "instruction": ["Describe it."] * 2, "distorted": ["a red bal " * 80, "a red bal"],
             "original": ["A red ball."] * 2}
    out = builder("rewrite")(batch)
    assert len(out["input_ids"]) == 1 and out["examples_skipped"] == [1]


def test_a_batch_without_label_tokens_gives_zero_loss_and_zero_gradients() -> None:
    from pf_ray.model.loading import build_model

    model = build_model("tiny", seed=0)
    b = builder()
    batch = collate(b(rows([3, 4])), pad_id=0, image_size=64, device=torch.device("cpu"))
    out = model(batch["input_ids"], labels=batch["labels"])
    loss, empty = guarded_loss(out, batch["labels"])
    assert not empty and loss is out.loss and math.isfinite(float(loss.detach()))
    labels = torch.full_like(batch["labels"], IGNORE_INDEX)
    labels[:, 0] = 5  # position 0 is never predicted: still no label token
    out = model(batch["input_ids"], labels=labels)
    assert math.isnan(float(out.loss.detach()))  # what FSDP would spread to every rank
    loss, empty = guarded_loss(out, labels)
    assert empty and float(loss.detach()) == 0.0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool((g == 0).all()) for g in grads)


def test_the_step_line_reports_the_counts() -> None:
    metrics = {"step": 3, "epoch": 0, "loss": 1.0, "lr": 1e-4, "grad_norm": 0.5,
               "tokens_per_s": 10.0, "images_unreadable": 0, "examples_skipped": 4,
               "empty_batches": 1}
    assert step_line("run", 9, metrics).endswith(" skipped examples 4 empty batches 1")
