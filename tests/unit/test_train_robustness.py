"""Examples without a label token stay in the stream but add no loss; a batch without any
label token gives zero loss."""

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


def unlabelled(out: dict[str, list[Any]]) -> list[int]:
    """The positions of the examples without a label token."""
    return [i for i, labels in enumerate(out["labels"])
            if all(lab == IGNORE_INDEX for lab in labels)]


def test_truncated_away_labels_give_a_counted_example_without_loss() -> None:
    b = builder()
    out = b(rows([3, 400, 4, 400, 400, 5]))  # 400 words: the response is cut away
    assert set(out) == set(EXAMPLE_COLUMNS)
    assert len(out["input_ids"]) == 6  # every row keeps its place in the stream
    assert out["examples_skipped"] == [0, 1, 0, 1, 1, 0]
    assert unlabelled(out) == [1, 3, 4]
    bos = b.tokenizer.bos_token_id
    assert all(out["input_ids"][i] == [bos] and out["n_images"][i] == 0 for i in (1, 3, 4))
    assert builder(multiturn=True)(rows([400, 3]))["examples_skipped"] == [1, 0]


def test_a_row_without_a_complete_turn_gives_an_example_without_loss() -> None:
    batch = rows([3, 3])
    batch["conversations"][1] = [{"role": "user", "content": "no answer"}]
    out = builder(multiturn=True)(batch)
    assert out["examples_skipped"] == [0, 1] and unlabelled(out) == [1]


def test_rewrite_examples_whose_revision_is_cut_away_are_kept_without_loss() -> None:
    batch = {"id": ["p:0", "p:1"], "image": [None] * 2, "image_bytes": [None] * 2,
             "instruction": ["Describe it."] * 2, "distorted": ["a red bal " * 80, "a red bal"],
             "original": ["A red ball."] * 2}
    out = builder("rewrite")(batch)
    assert out["examples_skipped"] == [1, 0] and unlabelled(out) == [0]


def test_an_unlabelled_example_leaves_the_batch_loss_as_it_is() -> None:
    from pf_ray.model.loading import build_model

    model = build_model("tiny", seed=0)
    b = builder()
    with_it = b(rows([3, 400, 4]))  # the middle one: one token, label -100
    without = {k: [v[0], v[2]] for k, v in with_it.items()}
    losses = []
    for out in (with_it, without):
        batch = collate(out, pad_id=b.tokenizer.pad_token_id, image_size=64,
                        device=torch.device("cpu"))
        with torch.no_grad():
            losses.append(model(batch["input_ids"], labels=batch["labels"],
                                attention_mask=batch["attention_mask"]).loss)
    assert torch.allclose(losses[0], losses[1], atol=1e-5), losses


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
