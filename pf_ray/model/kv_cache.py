"""A KV cache that grows by doubling, for batched decoding.

Transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``, which
copies the whole cache: for a batch of ``b`` rows at length ``L`` every decoding step moves
``b * L`` cached positions per layer, so a batched decode costs O(L^2) memory traffic.
Measured with the tiny rewriter on 2 CPUs (``bench/bench_rewrite.py``'s prompts, batch 32,
128 new tokens, torch profiler): ``aten::cat`` was 52% of ``generate``'s time. This layer
writes each step into a preallocated buffer (capacity doubled when full, so each position is
copied O(1) times on average) and hands the attention a view of the filled part.

Everything else is ``DynamicLayer``'s: masks, lengths, batch selection when rows finish
(:meth:`batch_select_indices`, :meth:`reorder_cache`) and cropping.
"""

from __future__ import annotations

from typing import Any

import torch

try:  # transformers >= 4.56: caches made of per-layer objects
    from transformers.cache_utils import Cache, DynamicLayer
except ImportError:  # older: the model's own DynamicCache (growing_cache returns None)
    Cache = DynamicLayer = None  # type: ignore[assignment,misc]


class GrowingLayer(DynamicLayer or object):  # type: ignore[misc]
    """One decoder layer's keys and values, ``(b, heads, capacity, head_dim)`` buffers."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.length = 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def _grow(self, needed: int, like_k: torch.Tensor, like_v: torch.Tensor) -> None:
        old = 0 if self.key_buffer is None else self.key_buffer.shape[-2]
        capacity = max(needed, 2 * old)
        b, h, _, _ = like_k.shape
        keys = like_k.new_empty(b, h, capacity, like_k.shape[-1])
        values = like_v.new_empty(b, h, capacity, like_v.shape[-1])
        if self.length:
            keys[:, :, :self.length] = self.key_buffer[:, :, :self.length]
            values[:, :, :self.length] = self.value_buffer[:, :, :self.length]
        self.key_buffer, self.value_buffer = keys, values

    def _views(self) -> None:
        assert self.key_buffer is not None and self.value_buffer is not None
        self.keys = self.key_buffer[:, :, :self.length]
        self.values = self.value_buffer[:, :, :self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """key_states, value_states: ``(b, heads, t, head_dim)`` -> the cache up to now,
        ``(b, heads, past + t, head_dim)``."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self.key_buffer is None or end > self.key_buffer.shape[-2]:
            self._grow(end, key_states, value_states)
        assert self.key_buffer is not None and self.value_buffer is not None
        self.key_buffer[:, :, self.length:end] = key_states
        self.value_buffer[:, :, self.length:end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self.key_buffer = self.key_buffer[indices]
            self.value_buffer = self.value_buffer[indices]
            self._views()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.get_seq_length() > 0:
            idx = beam_idx.to(self.key_buffer.device)
            self.key_buffer = self.key_buffer.index_select(0, idx)
            self.value_buffer = self.value_buffer.index_select(0, idx)
            self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._views()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop: received {tokens_to_remove}; allowed: <= 0 (tokens to "
                             f"remove, negative)")
        if tokens_to_remove and self.is_initialized:
            self.length = max(0, self.length + tokens_to_remove)
            self._views()

    def reset(self) -> None:
        self.length = 0
        self.key_buffer = self.value_buffer = None
        super().reset()


def growing_cache() -> Any:
    """An empty cache whose layers are :class:`GrowingLayer` (created on first use); None
    (the model's default cache) on transformers releases without per-layer caches."""
    if Cache is None:
        return None
    return Cache(layer_class_to_replicate=GrowingLayer)
