"""Training examples of an ``hf_vlm`` model, and their batches.

The same rows as the Flamingo family's :class:`~pf_ray.train.data.ExampleBuilder` reads
(rewriter pairs, PF-1M rewrites, instruction samples), the same multi-turn augmentation,
pad-to-square, ``max_images`` and unlabelled-example rules, and the same candidate pool;
the text goes through the model's own chat template (:mod:`pf_ray.model.hf_vlm.prompts`)
and the images through its processor:

- rewriter: :func:`~pf_ray.model.hf_vlm.prompts.rewrite_messages` with the revised response;
  the loss is on the revised response and the turn end after the ``(Revised Response) ``
  prefill (the prefill is prompt);
- clever stages: :func:`~pf_ray.model.hf_vlm.prompts.chat_messages` of the row's turns and
  the candidates appended as later turns; the loss is on every response and its turn end.

An example (:data:`HF_EXAMPLE_COLUMNS`): ``input_ids`` / ``labels`` (lists, -100: no loss),
``images`` (the processor's image tensors of the example, each a numpy array whose first
axis is the example's images, or tiles: see :data:`IMAGE_LAYOUTS`), ``n_images`` (the
row's images it carries), ``images_unreadable`` and ``examples_skipped`` as the Flamingo
family's. ``max_length`` truncates, but never through an image: a conversation whose cut
would split an image's tokens loses its later turns instead (a rewriter example with such
an image is skipped: one token, no loss).

Multi-turn augmentation appends candidates while an estimate of the length stays under
``max_length`` (text tokens of the rendered turns, plus each image as the token count of
one image of the processor's size, :attr:`HFExampleBuilder.image_tokens`); the exact
encoding then trims as above. A processor that splits large images into tiles (real
SmolVLM) gives more tokens than the estimate: the trim keeps the example within
``max_length`` all the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pf_ray.data.images import row_images
from pf_ray.model.hf_vlm.prompts import IGNORE_INDEX
from pf_ray.specs import StorageConfig
from pf_ray.train.data import Candidate, ExampleBuilder, _turns_of

HF_EXAMPLE_COLUMNS = ("input_ids", "labels", "images", "n_images", "images_unreadable",
                      "examples_skipped")

# How a processor lays out the image tensors of one text (``model_type`` -> layout):
#   per_sample  (1, n, ...) per text, a batch of texts padded to (B, N_max, ...)
#               (Idefics3 / SmolVLM: pixel_values (1, n, 3, H, W) and
#               pixel_attention_mask (1, n, H, W); n counts tiles, zero tiles are padding)
#   flat        (n, ...) per text, a batch concatenated to (n_1 + ... + n_B, ...)
#               (LLaVA: pixel_values (n, 3, H, W), in the order of the texts' image tokens)
IMAGE_LAYOUTS = {"idefics3": "per_sample", "smolvlm": "per_sample", "llava": "flat"}


def image_layout(model_type: str) -> str:
    """The image-tensor layout of a ``model_type`` (:data:`IMAGE_LAYOUTS`)."""
    try:
        return IMAGE_LAYOUTS[model_type]
    except KeyError:
        raise ValueError(f"model_type {model_type!r}: pf-ray does not know how its processor "
                         f"lays out image tensors for training; known: "
                         f"{', '.join(sorted(IMAGE_LAYOUTS))}") from None


def example_images(layout: str, pieces: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One example's image tensors from the processor outputs of its pieces (in order),
    each as ``(n, ...)``: the example's images (tiles) first. ``{}`` without images."""
    parts: dict[str, list[np.ndarray]] = {}
    for out in pieces:
        for key, value in out.items():
            arr = np.asarray(value.numpy() if isinstance(value, torch.Tensor) else value)
            if layout == "per_sample":
                arr = arr[0]  # (1, n, ...) -> (n, ...)
            parts.setdefault(key, []).append(arr)
    out = {k: np.concatenate(v, axis=0) for k, v in parts.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].astype(np.float32)
    return out


def collate_images(layout: str, examples: Sequence[dict[str, np.ndarray]]
                   ) -> dict[str, torch.Tensor]:
    """A batch's image tensors, as the model's forward takes them.

    ``per_sample``: each key ``(B, N_max, *max(rest))``, zero-padded (False for masks): for
    Idefics3 pixel_values ``(B, N, 3, H, W)`` and pixel_attention_mask ``(B, N, H, W)``; an
    all-zero image is padding to the model. ``flat``: each key concatenated over the
    examples that have images, ``(total_images, ...)``: LLaVA pixel_values
    ``(total_images, 3, H, W)``. ``{}`` when no example has an image.
    """
    present = [e for e in examples if e]
    if not present:
        return {}
    out: dict[str, torch.Tensor] = {}
    for key in present[0]:
        arrays = [e[key] for e in present]
        if layout == "flat":
            out[key] = torch.from_numpy(np.concatenate(arrays, axis=0))
            continue
        rest = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
        n_max = max(a.shape[0] for a in arrays)
        batch = np.zeros((len(examples), n_max, *rest), dtype=arrays[0].dtype)
        for i, e in enumerate(examples):
            if e:
                a = e[key]
                batch[(i, slice(0, a.shape[0]), *(slice(0, s) for s in a.shape[1:]))] = a
        out[key] = torch.from_numpy(batch)
    return out


class HFExampleBuilder(ExampleBuilder):
    """Rows -> examples of an ``hf_vlm`` model (module doc). The pool, :meth:`remember` and
    batching are the Flamingo builder's; images stay PIL images until the processor."""

    columns = HF_EXAMPLE_COLUMNS

    def __init__(self, model: str, fmt: str, max_length: int, max_images: int,
                 multiturn: bool, seed: int, storage: StorageConfig, pool_size: int = 2048,
                 pad_square: float = 0.0, rewrite_prompt: str = "paper"):
        from transformers import AutoProcessor

        from pf_ray.data.images import ImageLoader
        from pf_ray.model.hf_vlm.load import vlm_folder
        from pf_ray.train.data import CandidatePool

        folder = vlm_folder(model, storage)
        with open(os.path.join(folder, "config.json")) as f:
            self.layout = image_layout(json.load(f)["model_type"])
        self.processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
        self.tokenizer = self.processor.tokenizer
        self.image_token = getattr(self.processor, "image_token", "<image>")
        self.loader = ImageLoader(storage=storage)
        self.fmt, self.max_length, self.max_images = fmt, max_length, max_images
        self.multiturn, self.seed, self.pad_square = multiturn, seed, pad_square
        self.rewrite_prompt, self.pool_size = rewrite_prompt, pool_size
        self.pool = CandidatePool(pool_size)
        self.placeholder = self._placeholder()
        self.image_tokens = len(self.placeholder["input_ids"])

    def _placeholder(self) -> dict[str, Any]:
        """One grey image's tokens and tensors: what :func:`collate_hf` appends to a batch
        without images, so that every rank runs the vision tower (FSDP's collectives)."""
        from PIL import Image

        from pf_ray.model.hf_vlm.prompts import encode_segments

        enc = encode_segments(self.processor, [(self.image_token, False)],
                              [Image.new("RGB", (32, 32), (128, 128, 128))])
        return {"input_ids": enc["input_ids"],
                "images": example_images(self.layout, enc["image_inputs"])}

    def _images(self, row: dict[str, Any]) -> tuple[list[Any], int]:  # type: ignore[override]
        """The row's images as PIL images (the processor preprocesses them)."""
        return self._loaded_images(row)

    def _unlabelled(self, unreadable: int) -> dict[str, Any]:
        tok = self.tokenizer
        first = next(i for i in (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, 0)
                     if i is not None)
        return {"input_ids": [first], "labels": [IGNORE_INDEX], "images": {}, "n_images": 0,
                "images_unreadable": unreadable, "examples_skipped": 1}

    def _fits(self, ids: Sequence[int]) -> bool:
        """Whether cutting ``ids`` at ``max_length`` keeps every image token."""
        if len(ids) <= self.max_length:
            return True
        image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        return image_id not in ids[self.max_length:]

    def _example(self, enc: dict[str, Any], n_images: int,
                 unreadable: int) -> dict[str, Any]:
        ids, labels = enc["input_ids"][:self.max_length], enc["labels"][:self.max_length]
        if all(label == IGNORE_INDEX for label in labels):
            return self._unlabelled(unreadable)  # truncation cut every response away
        return {"input_ids": ids, "labels": labels,
                "images": example_images(self.layout, enc["image_inputs"]),
                "n_images": n_images, "images_unreadable": unreadable, "examples_skipped": 0}

    def build(self, row: dict[str, Any], candidates: Sequence[Candidate]) -> dict[str, Any]:
        """``row``'s example (a value per :data:`HF_EXAMPLE_COLUMNS`); later turns
        (multi-turn chat) are drawn from ``candidates``, a pool snapshot holding ``row``."""
        from pf_ray.model.hf_vlm.prompts import (
            REVISED_PREFIX,
            encode_segments,
            rewrite_messages,
            segments,
        )
        from pf_ray.model.prompts import Turn

        if len(row_images(row.get("image"), row.get("image_bytes"),
                          row.get("extra_images"))) > self.max_images:
            return self._unlabelled(0)  # more images than the stage takes
        if self.fmt == "rewrite":
            images, unreadable = self._images(row)
            messages = rewrite_messages(row["instruction"], row["distorted"], len(images),
                                        row["original"])
            enc = encode_segments(self.processor, segments(self.processor, messages,
                                                           prefill=REVISED_PREFIX), images)
            if not self._fits(enc["input_ids"]):
                return self._unlabelled(unreadable)  # the cut would split an image
            return self._example(enc, len(images), unreadable)
        own = _turns_of(row, self.fmt)
        if not own:  # no complete turn: nothing to learn (its image is not decoded)
            return self._unlabelled(0)
        images, unreadable = self._images(row)
        turns = [Turn(h, a, images=len(images) if k == 0 else 0)
                 for k, (h, a) in enumerate(own)]
        if self.multiturn:
            turns, images, merged_unreadable = self._augment(row, turns, images, candidates)
            unreadable += merged_unreadable
        while turns:  # drop later turns while the cut would split an image
            n = sum(t.images for t in turns)
            enc = self._encode_chat(turns, images[:n])
            if self._fits(enc["input_ids"]):
                return self._example(enc, n, unreadable)
            turns = turns[:-1]
        return self._unlabelled(unreadable)

    def _encode_chat(self, turns: Sequence[Any], images: Sequence[Any]) -> dict[str, Any]:
        from pf_ray.model.hf_vlm.prompts import chat_messages, encode_segments, segments

        pieces = segments(self.processor, chat_messages(turns))
        return encode_segments(self.processor, pieces, images)

    def _estimate(self, turns: Sequence[Any], *, system: bool) -> int:
        """Tokens of ``turns`` rendered by the chat template, an image as
        :attr:`image_tokens` (module doc: an estimate, for multi-turn augmentation)."""
        from pf_ray.model.hf_vlm.prompts import SYSTEM_MESSAGE, chat_messages

        messages = chat_messages(turns, system=SYSTEM_MESSAGE if system else None)
        text = self.processor.apply_chat_template(messages, tokenize=False)
        images = sum(t.images for t in turns)
        return len(self.tokenizer(text, add_special_tokens=False).input_ids) + images * (
            self.image_tokens - 1)


def collate_hf(rows: dict[str, list[Any]], builder: HFExampleBuilder,
               device: torch.device) -> dict[str, torch.Tensor]:
    """A micro-batch of :class:`HFExampleBuilder` examples as the model's keyword arguments.

    Right-padded ``input_ids`` (pad id), ``labels`` (-100) and ``attention_mask`` ``(b, t)``,
    plus the image tensors of :func:`collate_images`. A micro-batch without any image gets
    the builder's placeholder image after example 0's last token (labels -100; the causal
    mask keeps it from every real token): each rank then runs the vision tower and the
    connector on every micro-batch, as FSDP's collectives need.
    """
    ids = [list(x) for x in rows["input_ids"]]
    labels = [list(y) for y in rows["labels"]]
    images = list(rows["images"])
    if not any(images):
        extra = builder.placeholder["input_ids"]
        ids[0] += extra
        labels[0] += [IGNORE_INDEX] * len(extra)
        images[0] = builder.placeholder["images"]
    tok = builder.tokenizer
    pad = next(i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None)
    b, t = len(ids), max(len(x) for x in ids)
    input_ids = torch.full((b, t), pad, dtype=torch.long)
    target = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    for i, (x, y) in enumerate(zip(ids, labels, strict=True)):
        input_ids[i, :len(x)] = torch.tensor(x)
        target[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    out = {"input_ids": input_ids, "labels": target, "attention_mask": mask,
           **collate_images(builder.layout, images)}
    return {k: v.to(device) for k, v in out.items()}
