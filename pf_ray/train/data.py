"""Training examples in Ray Data: mixture sampling, multi-turn augmentation, tokenisation.

The functions and the example builder here run inside the Ray Data pipeline that
``train.launch.build_dataset`` assembles (this module never imports Ray); image decoding
and tokenisation run there (actor pool), never in the training loop. Columns:

    input_ids (list<int32>)  labels (list<int32>, -100 = no loss)
    pixels (binary: float32 (n_images, 3, H, W))  n_images (int32)
    images_unreadable (int32: the example's images that failed to load, rows merged in by
    multi-turn augmentation included; the example keeps their text)

Mixture: dataset ``d`` with ``n_d`` rows and weight ``w_d`` (``ratio``, or ``ratio *
sqrt(n_d)`` with ``sampling: sqrt``) gets ``round(total * w_d / sum(w))`` examples per
epoch; each row is repeated ``k // n_d`` times plus once more with probability
``(k mod n_d) / n_d``, decided by a hash of (seed, id), so the epoch is reproducible.

Multi-turn augmentation (Clever stages, spec §6): each example is followed by other
examples of the same batch (drawn with a per-row seed) as later turns, while the images stay
within ``max_images`` and the tokens within ``max_length``; only the first turn carries the
system message; the loss covers every response + EOS.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

import numpy as np

from pf_ray.data.images import ImageError, ImageLoader
from pf_ray.data.io import Dataset
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import Batch
from pf_ray.storage import is_uri
from pf_ray.train.spec import TrainSpec

EXAMPLE_COLUMNS = ("input_ids", "labels", "pixels", "n_images", "images_unreadable")


def mixture_counts(sizes: list[int], ratios: list[float], sampling: str,
                   total: int | None) -> list[int]:
    """Examples per dataset for one epoch."""
    weights = [r * (math.sqrt(n) if sampling == "sqrt" else 1.0) for n, r in
               zip(sizes, ratios, strict=True)]
    total = sum(sizes) if total is None else total
    return [round(total * w / sum(weights)) for w in weights]


def _unit_float(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def sample_rows(batch: Batch, *, size: int, target: int, seed: int) -> Batch:
    """Repeat / drop rows so that a dataset of ``size`` rows yields about ``target``."""
    whole, frac = divmod(target, size)
    copies = [whole + (1 if _unit_float(seed, sid) < frac / size else 0) for sid in batch["id"]]
    # round-robin over the repeats (a b c a b c, not a a b b c c), so a repeated dataset
    # yields the same batches again, as an epoch over it would
    keep = [i for c in range(max(copies, default=0)) for i, n in enumerate(copies) if n > c]
    return {k: [v[i] for i in keep] for k, v in batch.items()}


def _turns_of(row: dict[str, Any], fmt: str) -> list[tuple[str, str]]:
    if fmt == "rewrite":
        return []
    convs = [t for t in row["conversations"] if t["role"] != "system"]
    turns, pending = [], None
    for t in convs:
        if t["role"] == "user":
            pending = t["content"]
        elif pending is not None:
            turns.append((pending, t["content"]))
            pending = None
    return turns


class ExampleBuilder:
    """Rows (pairs or samples) -> tokenised examples with preprocessed images."""

    def __init__(self, model: str, fmt: str, max_length: int, max_images: int,
                 multiturn: bool, seed: int, storage: StorageConfig):
        import open_clip

        from pf_ray.model.loading import model_config, model_tokenizer

        config = model_config(model)
        self.mode = config.xattn.mask
        self.tokenizer = model_tokenizer(model, config)
        self.transform = open_clip.image_transform(config.vision.image_size, is_train=False)
        self.loader = ImageLoader(storage=storage)
        self.fmt, self.max_length, self.max_images = fmt, max_length, max_images
        self.multiturn, self.seed = multiturn, seed

    def _images(self, row: dict[str, Any]) -> tuple[list[np.ndarray], int]:
        """The row's preprocessed image (none or one) and how many failed to load (0 or 1).

        Ingest/distort already rejected broken images; one that still fails here leaves the
        example text-only, and is counted (``images_unreadable``) rather than dropped silently.
        """
        ref, data = row.get("image"), row.get("image_bytes")
        if ref is None and data is None:
            return [], 0
        try:
            img = self.loader.load(ref, data)
        except ImageError:
            return [], 1
        return [self.transform(img).numpy().astype(np.float32)], 0

    def __call__(self, batch: Batch) -> Batch:
        from pf_ray.model.prompts import Turn, encode_chat, encode_rewrite

        n = len(batch["id"])
        rows = [{k: batch[k][i] for k in batch} for i in range(n)]
        out: Batch = {c: [] for c in EXAMPLE_COLUMNS}
        for i, row in enumerate(rows):
            images, unreadable = self._images(row)
            if self.fmt == "rewrite":
                enc = encode_rewrite(self.tokenizer, row["instruction"], row["distorted"],
                                     row["original"], images=len(images), mode=self.mode,
                                     max_length=self.max_length)
            else:
                turns = [Turn(h, a, images=len(images) if k == 0 else 0)
                         for k, (h, a) in enumerate(_turns_of(row, self.fmt))]
                if self.multiturn and n > 1:
                    turns, images, merged_unreadable = self._augment(i, rows, turns, images)
                    unreadable += merged_unreadable
                enc = encode_chat(self.tokenizer, turns, self.mode, max_length=self.max_length)
            images = images[:enc.num_images]  # truncation may cut trailing images
            out["input_ids"].append(enc.input_ids)
            out["labels"].append(enc.labels)
            out["pixels"].append(np.stack(images).tobytes() if images else b"")
            out["n_images"].append(len(images))
            out["images_unreadable"].append(unreadable)
        return out

    def _augment(self, i: int, rows: list[dict[str, Any]], turns: list[Any],
                 images: list[np.ndarray]) -> tuple[list[Any], list[np.ndarray], int]:
        """Append other rows' turns; also returns the unreadable images of the rows added."""
        from pf_ray.model.prompts import Turn, encode_chat

        rng = random.Random(f"{self.seed}:{rows[i]['id']}")
        others = [j for j in range(len(rows)) if j != i]
        rng.shuffle(others)
        unreadable = 0
        for j in others[:32]:  # N = 32 candidates, as in the paper's scripts
            extra = _turns_of(rows[j], self.fmt)
            if not extra:
                continue
            add, bad = self._images(rows[j])
            if len(images) + len(add) > self.max_images:
                break
            candidate = turns + [Turn(h, a, images=len(add) if k == 0 else 0)
                                 for k, (h, a) in enumerate(extra)]
            length = len(encode_chat(self.tokenizer, candidate, self.mode).input_ids)
            if length > self.max_length:
                break
            turns, images, unreadable = candidate, images + add, unreadable + bad
        return turns, images, unreadable


def dataset_files(root: str, storage: StorageConfig) -> list[str]:
    ds = Dataset(root, storage)
    files = ds.shard_files()
    if not files:
        raise FileNotFoundError(f"data: {root} holds no committed shards")
    scheme = root.split("://", 1)[0] + "://" if is_uri(root) else ""
    return [scheme + f if scheme and not f.startswith(scheme) else f for f in files]


def dataset_sizes(spec: TrainSpec) -> list[int]:
    """Committed rows of each training dataset (from their manifests)."""
    return [(Dataset(d.path, spec.storage).read_manifest() or {}).get("totals", {})
            .get("rows", 0) for d in spec.data]
