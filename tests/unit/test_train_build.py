"""How a training rank builds its model: sharded loads, fp32 masters, FSDP units, recompute.

Two gloo processes (``torch.multiprocessing``) run :func:`build_for_training` as Ray Train's
workers do; each writes what it saw, the test process compares with an unsharded model.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from pf_ray.config import parse_spec
from pf_ray.model.checkpoint import save_pretrained
from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.loading import build_model
from pf_ray.model.presets import get_preset

pytestmark = pytest.mark.timeout(300)


def _spec(model: str, **extra: Any) -> Any:
    return parse_spec({"kind": "train", "stage": "rewriter", "model": model,
                       "data": [{"path": "/unused"}], "storage_path": "/unused",
                       "run_name": "r", **extra})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch() -> dict[str, torch.Tensor]:
    cfg = get_preset("tiny")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 1000, (2, 12), generator=g)
    ids[:, 2] = cfg.tokens.media
    return {"input_ids": ids, "images": torch.randn(2, 1, 3, 64, 64, generator=g),
            "labels": ids.clone()}


# what Flamingo adds to the LM, trained (with LoRA and the embeddings of the rewriter stage)
EVERY_ADDED_PART = {"perceiver": True, "xattn_attn": True, "xattn_ffn": True}


def _open_gates(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for block in model.gated_cross_attn_layers.values():
            block.attn_gate.fill_(0.5)
            block.ff_gate.fill_(0.5)


def _worker(rank: int, world: int, port: int, folder: str, tied: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    from pf_ray.train.build import build_for_training

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        report: dict[str, Any] = {}
        for name, model in (("folder", folder), ("preset", "tiny"), ("tied", tied)):
            built = build_for_training(_spec(model, bf16=True), device=torch.device("cpu"),
                                       sharded=True, rank=rank, world=world, bf16=True)
            m = built.model
            full = get_model_state_dict(m, options=StateDictOptions(full_state_dict=True,
                                                                    cpu_offload=True))
            local = {n: p.to_local() for n, p in m.named_parameters()}
            report[name] = {
                "full": full if rank == 0 else None,
                "trainable_dtypes": {n: p.dtype for n, p in m.named_parameters()
                                     if p.requires_grad},
                "frozen_dtypes": {n: p.dtype for n, p in m.named_parameters()
                                  if not p.requires_grad},
                "local_numel": sum(t.numel() for t in local.values()),
                "fsdp_units": sorted(n for n, mod in m.named_modules()
                                     if isinstance(mod, FSDPModule)),
                "host_peak_bytes": built.host_peak_bytes,
                "head_is_embeddings": m.lang_encoder.lm_head.weight
                is m.lang_encoder.get_input_embeddings().weight,
            }
            if name == "folder":  # compute dtype seen by a LoRA-wrapped projection
                seen: list[torch.dtype] = []
                lin = m.lang_encoder.model.layers[0].self_attn.q_proj.base_layer
                lin.register_forward_hook(lambda mod, a, o, seen=seen: seen.append(a[0].dtype))
                b = _batch()
                out_ = m(b["input_ids"], b["images"], labels=b["labels"])
                out_.loss.backward()
                report[name]["compute_dtype"] = seen[0]
                report[name]["grad_dtypes"] = {p.grad.dtype for p in m.parameters()
                                               if p.grad is not None}
        # activation checkpointing under FSDP2 (as the 9B job files run): the same gradients
        grads = []
        for checkpointing in (False, True):
            m = build_for_training(_spec(folder, bf16=True,
                                         activation_checkpointing=checkpointing),
                                   device=torch.device("cpu"), sharded=True, rank=rank,
                                   world=world, bf16=True).model
            m.train()
            b = _batch()
            m(b["input_ids"], b["images"], labels=b["labels"]).loss.backward()
            grads.append({n: p.grad.full_tensor() for n, p in m.named_parameters()
                          if p.grad is not None})
        report["checkpointing_grads"] = grads
        # FSDP (every unit, fp32) against one process: the same gradients, gates opened so
        # that the cross-attention blocks' own weights get gradients
        m = build_for_training(_spec("tiny", trainable=EVERY_ADDED_PART),
                               device=torch.device("cpu"), sharded=True,
                               rank=rank, world=world, bf16=False).model
        m.train()
        _open_gates(m)
        b = _batch()
        m(b["input_ids"], b["images"], labels=b["labels"]).loss.backward()
        report["fsdp_grads"] = {n: p.grad.full_tensor() for n, p in m.named_parameters()
                                if p.grad is not None}
        torch.save(report, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, dict]:
    tmp = tmp_path_factory.mktemp("build")
    torch.manual_seed(0)
    model = build_flamingo(get_preset("tiny").replace(dtype="bfloat16"))
    with torch.no_grad():  # LoRA B is zero in a fresh model: give it values to load
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_()
    save_pretrained(model, tmp / "folder")
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    save_pretrained(tied_model(), tmp / "tied")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp / "folder"), str(tmp / "tied"), str(tmp)),
             nprocs=2)
    r0, r1 = (torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    return reference, r0, r1


def tied_model() -> torch.nn.Module:
    """The tiny preset with its output head tied to the input embeddings (as the smol
    preset's SmolLM2), seeded."""
    cfg = get_preset("tiny")
    hf = {**cfg.lm.hf_config, "tie_word_embeddings": True}
    torch.manual_seed(2)
    return build_flamingo(cfg.replace(lm=type(cfg.lm)(hf_config=hf)))


def test_tied_embeddings_stay_tied_and_load(reports: tuple) -> None:
    _, r0, r1 = reports
    assert r0["tied"]["head_is_embeddings"] and r1["tied"]["head_is_embeddings"]
    expected = tied_model().state_dict()
    full = r0["tied"]["full"]
    assert all(torch.equal(full[k].float(), expected[k].float()) for k in expected)


def test_a_model_folder_loads_shard_by_shard_to_the_same_weights(reports: tuple) -> None:
    reference, r0, r1 = reports
    full = r0["folder"]["full"]
    assert set(full) == set(reference)
    assert all(torch.equal(full[k].float(), reference[k].float()) for k in reference)
    total = sum(v.numel() for v in reference.values())
    # each rank holds about half of the parameters (FSDP shards dim 0; odd rows round up)
    for r in (r0, r1):
        assert 0.4 * total < r["folder"]["local_numel"] < 0.6 * total


def test_a_preset_is_built_once_and_scattered(reports: tuple) -> None:
    _, r0, _ = reports
    expected = build_model("tiny", seed=0).state_dict()
    full = r0["preset"]["full"]
    assert all(torch.equal(full[k].float(), expected[k].float()) for k in expected)


def test_trainable_weights_are_fp32_masters_while_compute_is_bf16(reports: tuple) -> None:
    _, r0, r1 = reports
    for r in (r0, r1):
        rep = r["folder"]
        assert rep["trainable_dtypes"] and set(rep["trainable_dtypes"].values()) == {
            torch.float32}
        assert any(".lora_A." in n for n in rep["trainable_dtypes"])
        assert set(rep["frozen_dtypes"].values()) == {torch.bfloat16}  # stored as saved
        assert rep["compute_dtype"] == torch.bfloat16
        assert rep["grad_dtypes"] == {torch.float32}  # reduced in fp32 onto the masters


def test_every_cross_attention_block_is_its_own_fsdp_unit(reports: tuple) -> None:
    _, r0, _ = reports
    units = r0["folder"]["fsdp_units"]
    config = get_preset("tiny")
    blocks = [f"gated_cross_attn_layers.{i}" for i in config.xattn_layers]
    layers = [f"lang_encoder.model.layers.{i}" for i in range(config.lm.num_layers)]
    assert set(blocks) | set(layers) | {"", "vision_encoder",
                                        "lang_encoder.model.embed_tokens",
                                        "lang_encoder.lm_head"} == set(units)


def test_activation_checkpointing_recomputes_each_layer_with_the_same_gradients() -> None:
    from pf_ray.train.build import build_for_training

    grads, calls = [], []
    for on in (False, True):
        built = build_for_training(_spec("tiny", activation_checkpointing=on),
                                   device=torch.device("cpu"), sharded=False, rank=0,
                                   world=1, bf16=False)
        model = built.model
        model.train()
        count = {"xattn": 0, "layer": 0}
        # submodules run inside what is checkpointed: a recomputation calls them again
        model.gated_cross_attn_layers["1"].attn.register_forward_hook(
            lambda *_, c=count: c.__setitem__("xattn", c["xattn"] + 1))
        model.decoder_layers[1].self_attn.register_forward_hook(
            lambda *_, c=count: c.__setitem__("layer", c["layer"] + 1))
        with torch.no_grad():  # open the gates so the blocks' gradients flow everywhere
            for block in model.gated_cross_attn_layers.values():
                block.attn_gate.fill_(0.5)
                block.ff_gate.fill_(0.5)
        b = _batch()
        model(b["input_ids"], b["images"], labels=b["labels"]).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()
                      if p.grad is not None})
        calls.append(count)
    # the block before layer 1 and the layer ran again in the backward pass
    assert calls == [{"xattn": 1, "layer": 1}, {"xattn": 2, "layer": 2}]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_activation_checkpointing_under_fsdp_gives_the_same_gradients(reports: tuple) -> None:
    _, r0, _ = reports
    off, on = r0["checkpointing_grads"]
    assert off.keys() == on.keys() and any(".lora_B." in n for n in off)
    for n in off:
        assert torch.allclose(off[n], on[n], rtol=1e-3, atol=1e-5), n


def test_fsdp_gives_the_gradients_of_one_process(reports: tuple) -> None:
    from pf_ray.train.build import build_for_training

    _, r0, _ = reports
    model = build_for_training(_spec("tiny", trainable=EVERY_ADDED_PART),
                               device=torch.device("cpu"), sharded=False,
                               rank=0, world=1, bf16=False).model
    model.train()
    _open_gates(model)
    b = _batch()
    model(b["input_ids"], b["images"], labels=b["labels"]).loss.backward()
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    got = r0["fsdp_grads"]
    assert got.keys() == expected.keys()
    assert any(n.startswith("gated_cross_attn_layers.") and ".attn.to_q." in n for n in got)
    for n in expected:
        assert torch.allclose(got[n], expected[n], rtol=1e-4, atol=1e-6), n
