"""The doubling KV cache holds exactly what transformers' DynamicLayer holds."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from pf_ray.model.kv_cache import GrowingLayer, growing_cache


def _same(a: DynamicLayer, b: GrowingLayer) -> None:
    assert a.get_seq_length() == b.get_seq_length()
    assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_updates_selects_and_crops_match_dynamic_layer():
    torch.manual_seed(0)
    ref, grow = DynamicLayer(), GrowingLayer()
    for t in (7, 1, 1, 3, 1, 1, 1, 1, 1, 9):  # a prefill, decode steps, a longer chunk
        k, v = torch.randn(4, 2, t, 8), torch.randn(4, 2, t, 8)
        out_ref, out_grow = ref.update(k, v), grow.update(k, v)
        assert torch.equal(out_ref[0], out_grow[0]) and torch.equal(out_ref[1], out_grow[1])
        _same(ref, grow)
    assert grow.key_buffer.shape[-2] >= 26 and grow.key_buffer.shape[-2] <= 2 * 26
    idx = torch.tensor([3, 1])  # rows finish: keep two
    ref.batch_select_indices(idx)
    grow.batch_select_indices(idx)
    _same(ref, grow)
    ref.reorder_cache(torch.tensor([1, 0]))
    grow.reorder_cache(torch.tensor([1, 0]))
    _same(ref, grow)
    ref.crop(-5)
    grow.crop(-5)
    _same(ref, grow)
    k, v = torch.randn(2, 2, 1, 8), torch.randn(2, 2, 1, 8)
    ref.update(k, v)
    grow.update(k, v)  # writes over the cropped positions
    _same(ref, grow)


def test_capacity_doubles_so_each_step_does_not_copy():
    layer = GrowingLayer()
    layer.update(torch.zeros(1, 1, 10, 4), torch.zeros(1, 1, 10, 4))
    buffers = set()
    for _ in range(30):
        layer.update(torch.ones(1, 1, 1, 4), torch.ones(1, 1, 1, 4))
        buffers.add(layer.key_buffer.data_ptr())
    assert layer.get_seq_length() == 40
    assert len(buffers) <= 3  # 10 -> 20 -> 40: two reallocations for 30 steps


def test_a_model_decodes_the_same_with_either_cache():
    from pf_ray.model.loading import build_model

    model = build_model("tiny").eval()
    ids = torch.randint(3, 1000, (2, 12))
    with torch.no_grad():
        outs = []
        for cache in (None, growing_cache()):
            first = model(ids, cache=cache, use_cache=True)
            nxt = first.logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.ones(2, 13, dtype=torch.long)
            second = model(nxt, attention_mask=mask, cache=first.cache, use_cache=True)
            outs.append(second.logits)
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
