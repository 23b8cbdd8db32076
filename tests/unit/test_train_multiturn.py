"""Multi-turn augmentation as the paper's code does it, and the pad-to-square augmentation.

Candidates: 32 random rows (seeded per row) from a pool of the last rows of the mixed stream,
not only the current batch; the candidate that crosses ``max_length`` is cut, not dropped.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pf_ray.model.prompts import IGNORE_INDEX
from pf_ray.specs import StorageConfig
from pf_ray.train.data import CANDIDATES, ExampleBuilder

TAG = re.compile(r"\[([A-Z])(\d+)\]")


def chat_rows(source: str, start: int, n: int, words: int = 6) -> dict[str, list[Any]]:
    """``n`` text rows of ``source``; each human message starts with its tag ``[A12]``."""
    ids = [f"{source}:{i}" for i in range(start, start + n)]
    filler = " ".join(["word"] * words)
    return {"id": ids, "image": [None] * n, "image_bytes": [None] * n,
            "conversations": [[{"role": "user", "content": f"[{source}{i}] {filler}?"},
                               {"role": "assistant", "content": f"{filler}."}]
                              for i in range(start, start + n)]}


def interleave(*batches: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Rows of the batches taken in turn (a b c a b c ...), as the mixed stream has them."""
    n = max(len(b["id"]) for b in batches)
    return {k: [b[k][i] for i in range(n) for b in batches if i < len(b["id"])]
            for k in batches[0]}


def builder(max_length: int = 1024, pool_size: int = 2048, seed: int = 0,
            pad_square: float = 0.0) -> ExampleBuilder:
    return ExampleBuilder("tiny", "chat", max_length=max_length, max_images=3, multiturn=True,
                          seed=seed, storage=StorageConfig(), pool_size=pool_size,
                          pad_square=pad_square)


def turn_tags(b: ExampleBuilder, ids: list[int]) -> list[str]:
    """The tags of an example's turns, in order: its own row first, then the merged rows."""
    return ["".join(m) for m in TAG.findall(b.tokenizer.decode(ids))]


def test_candidates_come_from_every_source_at_production_batch_size() -> None:
    b = builder()
    batch = interleave(chat_rows("A", 0, 32), chat_rows("B", 0, 32), chat_rows("C", 0, 32))
    out = b(batch)
    assert len(out["input_ids"]) == 96
    tags = [turn_tags(b, ids) for ids in out["input_ids"]]
    assert [t[0] for t in tags] == [f"{s}{i}" for i in range(32) for s in "ABC"]
    merged = [t[1:] for t in tags]
    assert all(len(m) >= 10 for m in merged)  # short rows: many turns each (up to 32)
    assert all(len({tag[0] for tag in m}) == 3 for m in merged)  # from all three sources
    assert all(len(m) <= CANDIDATES and len(set(m)) == len(m) for m in merged)
    assert all(t[0] not in t[1:] for t in tags)  # never itself
    assert len({tuple(m) for m in merged}) == 96  # each example draws its own candidates


def test_the_pool_outlives_the_batch() -> None:
    """A batch of one source still gets turns of the sources that came before it."""
    b = builder(pool_size=256)
    b(chat_rows("A", 0, 64))
    b(chat_rows("B", 0, 64))
    out = b(chat_rows("C", 0, 64))
    sources = Counter(tag[0] for ids in out["input_ids"] for tag in turn_tags(b, ids)[1:])
    assert set(sources) == {"A", "B", "C"}, sources
    assert sources["C"] < sources["A"] + sources["B"]  # 64 of the 192 rows in the pool
    small = builder(pool_size=64)  # the pool keeps the last rows only
    small(chat_rows("A", 0, 64))
    out = small(chat_rows("B", 0, 64))
    assert {tag[0] for ids in out["input_ids"] for tag in turn_tags(small, ids)[1:]} == {"B"}


def test_the_last_turn_is_cut_at_max_length() -> None:
    b = builder(max_length=400)
    batch = interleave(chat_rows("A", 0, 40, words=12), chat_rows("B", 0, 40, words=12))
    out = b(batch)
    lengths = [len(ids) for ids in out["input_ids"]]
    assert lengths == [400] * 80  # filled to the brim: the crossing turn is cut, not dropped
    for ids, labels in zip(out["input_ids"], out["labels"], strict=True):
        assert len(turn_tags(b, ids)) >= 4  # about 121 + 3 x 91 tokens, then a cut one
        assert len(labels) == len(ids) and any(lab != IGNORE_INDEX for lab in labels)
    roomy = builder(max_length=8192)(batch)  # room for all 32 candidates (less itself)
    assert {len(turn_tags(b, ids)) for ids in roomy["input_ids"]} <= {CANDIDATES,
                                                                      CANDIDATES + 1}


def test_seeded_by_the_stream() -> None:
    batches = [interleave(chat_rows("A", k * 32, 32), chat_rows("B", k * 32, 32))
               for k in range(3)]
    first, again, other = builder(), builder(), builder(seed=1)
    outs = [[bld(batch)["input_ids"] for batch in batches] for bld in (first, again, other)]
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def image_rows(n: int) -> dict[str, list[Any]]:
    rows = chat_rows("I", 0, n)
    rows["image_bytes"] = [png(128, 64, (255, 0, 0))] * n  # wide and red
    return rows


def top_centre(pixels: bytes) -> np.ndarray:
    return np.frombuffer(pixels, dtype=np.float32).reshape(-1, 3, 64, 64)[0, :, 0, 32]


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_half_the_images_are_padded_to_a_square_of_a_random_colour(p: float) -> None:
    b = ExampleBuilder("tiny", "chat", max_length=512, max_images=3, multiturn=False, seed=0,
                       storage=StorageConfig(), pad_square=p)
    out = b(image_rows(60))
    red = top_centre(builder()(image_rows(1))["pixels"][0])  # never padded: the crop is red
    tops = [top_centre(px) for px in out["pixels"]]
    padded = [not np.allclose(t, red, atol=1e-5) for t in tops]
    assert abs(sum(padded) / 60 - p) <= 0.15
    colours = {tuple(np.round(t, 4)) for t, pad in zip(tops, padded, strict=True) if pad}
    assert len(colours) == sum(padded)  # a colour of its own per row
    again = b(image_rows(60))["pixels"]
    assert again == out["pixels"]  # seeded by the row


def solid_png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_rows_with_two_images_count_both_against_max_images() -> None:
    """A change caption (before, after) brings both images to its example, in order; a
    later turn joins only while the example's images stay within max_images (3 here), and
    a row with more images than max_images is a skipped example, never truncated."""
    red, blue, green = (220, 20, 20), (20, 20, 220), (20, 200, 20)
    pair = {"image": None, "image_bytes": solid_png(red),
            "extra_images": [{"image": None, "image_bytes": solid_png(blue)}]}
    one = {"image": None, "image_bytes": solid_png(green), "extra_images": None}
    rows = chat_rows("A", 0, 4)
    for k, images in enumerate((pair, one, pair, one)):
        for key, value in images.items():
            rows.setdefault(key, [None] * 4)[k] = value
    b = builder()
    out = b(rows)
    n_images = out["n_images"]
    assert all(n >= own for n, own in zip(n_images, (2, 1, 2, 1), strict=True))
    assert max(n_images) == 3  # a pair and a one-image row merged: the cap is reached
    for ids, n, raw in zip(out["input_ids"], n_images, out["pixels"], strict=True):
        tags = turn_tags(b, ids)
        own = {"A0": 2, "A1": 1, "A2": 2, "A3": 1}
        assert n == sum(own[t] for t in tags)  # every merged turn brought all its images
        pixels = np.frombuffer(raw, dtype=np.float32).reshape(n, 3, -1)
        if tags[0] in ("A0", "A2"):  # the pair first: red, then blue
            assert pixels[0, 0].mean() > pixels[0, 2].mean()
            assert pixels[1, 2].mean() > pixels[1, 0].mean()
    media = b.tokenizer.convert_tokens_to_ids("<image>")
    assert [ids.count(media) for ids in out["input_ids"]] == n_images
    # max_images 1: the pair cannot be trained on (a skipped, zero-loss example)
    small = ExampleBuilder("tiny", "chat", max_length=1024, max_images=1, multiturn=True,
                           seed=0, storage=StorageConfig())
    out = small(rows)
    assert out["examples_skipped"][0] == 1 and out["examples_skipped"][2] == 1
    assert out["examples_skipped"][1] == 0 and out["n_images"][1] == 1
