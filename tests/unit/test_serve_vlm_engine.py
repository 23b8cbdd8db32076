"""``engine: hf_vlm`` without Ray: pf-ray's Serve batcher over a tiny Idefics3 with an
adapter. Requests of one batch keep their own settings, the adapter's rows and the base's
rows answer as each model alone, and greedy answers equal the stages' generator's."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from serve_support import png_bytes, tiny_vlm  # noqa: E402

from pf_ray.serve.api import APIError, ChatRequest  # noqa: E402
from pf_ray.serve.images import Checked  # noqa: E402
from pf_ray.serve.prepare import plan_chat, served_models  # noqa: E402
from pf_ray.serve.spec import ServeSpec  # noqa: E402

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny")


@pytest.fixture(scope="module")
def spec(folder: Path) -> ServeSpec:
    return ServeSpec.model_validate({"kind": "serve", "engine": "hf_vlm", "model_name": "smol",
                                     "model": {"family": "hf_vlm", "path": str(folder)},
                                     "limits": {"max_tokens": 40, "default_max_tokens": 16}})


@pytest.fixture(scope="module")
def engine(spec: ServeSpec) -> Iterator[Any]:
    import torch

    from pf_ray.serve.engine_vlm import VLMEngine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield VLMEngine(spec.model, adapter_model=served_models(spec, True)[0], device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def replica(engine: Any) -> Iterator[tuple[Any, asyncio.AbstractEventLoop]]:
    """A Batcher on its own loop; ``serve.batch`` asks the replica context for
    max_ongoing_requests (for a warning only): a stand-in gives it."""
    import ray.serve.batching as batching

    from pf_ray.serve.batching import Batcher

    config = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=64))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batching.serve, "get_replica_context", lambda: config)
        loop = asyncio.new_event_loop()
        yield Batcher(engine, max_batch_size=8, batch_wait_timeout_s=0.3), loop
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def image(colour: tuple[int, int, int]) -> Checked:
    from PIL import Image

    data = png_bytes(colour)
    return Checked(data, "PNG", Image.open(io.BytesIO(data)).convert("RGB"))


def job(engine: Any, spec: ServeSpec, rid: str, model: str, text: str,
        images: list[Checked], **sampling: Any) -> Any:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": "data:,"}} for _ in images]
    req = ChatRequest.model_validate({"model": model, "messages": [
        {"role": "user", "content": parts}], **sampling})
    return engine.job(plan_chat(req, spec, served_models(spec, True)), rid, images)


def test_one_batch_of_mixed_requests(engine: Any, spec: ServeSpec, replica: Any) -> None:
    batcher, loop = replica
    red, blue = image((200, 20, 20)), image((20, 20, 200))
    jobs = [job(engine, spec, "a", "smol:adapter", "what is it?", [red], max_tokens=12,
                temperature=0),
            job(engine, spec, "b", "smol", "what is it?", [red], max_tokens=12, temperature=0),
            job(engine, spec, "c", "smol", "hello", [], max_tokens=5, temperature=0,
                stream=True),
            job(engine, spec, "d", "smol:adapter", "describe", [blue], max_tokens=9,
                temperature=0.8, seed=5)]
    assert [j.adapter for j in jobs] == [True, False, False, True]
    assert jobs[0].prompt.count("<image>") == 1 and jobs[2].prompt.count("<image>") == 0
    assert len(jobs[0].prompt_ids) > len(engine.tokenizer(jobs[0].prompt).input_ids)  # image
    # tokens expanded

    async def collect(j: Any) -> tuple[list[str], Any]:
        deltas, last = [], None
        async for u in batcher.generate_batch(j):
            assert u.error is None
            deltas.append(u.delta)
            last = u if u.finish_reason else last
        return deltas, last

    async def all_at_once() -> list[tuple[list[str], Any]]:
        return await asyncio.gather(*(collect(j) for j in jobs))

    batched = loop.run_until_complete(all_at_once())
    assert batcher.batches == 1 and batcher.requests == 4  # one batch
    for j, (_, last) in zip(jobs, batched, strict=True):
        assert last.finish_reason in ("length", "stop")
        assert last.completion_tokens <= j.config.max_new_tokens
    assert batched[0][1].completion_tokens == 12 or batched[0][1].finish_reason == "stop"
    assert len([d for d in batched[2][0] if d]) > 1  # the streaming request got deltas
    # each alone: the same answers (greedy rows; the seeded sampled row draws alone)
    for j, (deltas, _) in zip(jobs, batched, strict=True):
        alone, _ = loop.run_until_complete(collect(j))
        assert "".join(alone) == "".join(deltas), j.rid
    # the adapter changes the answer to the same request
    assert "".join(batched[0][0]) != "".join(batched[1][0])


def test_greedy_equals_the_stages_generator(engine: Any, spec: ServeSpec, folder: Path) -> None:
    from pf_ray.engines.config import DecodingConfig
    from pf_ray.engines.hf_vlm import HFVLMGenerator

    red = image((200, 20, 20))
    j = job(engine, spec, "a", "smol:adapter", "what is it?", [red], max_tokens=10,
            temperature=0)
    (gen,) = engine.run([j])
    ref = HFVLMGenerator(str(folder), decoding=DecodingConfig(max_new_tokens=10), device="cpu")
    (ids,) = ref.generate_token_ids([j.prompt], [[red.image]])  # adapter merged there
    assert gen.token_ids == ids[:len(gen.token_ids)] and len(gen.token_ids) >= min(len(ids), 10)


def test_refusals(engine: Any, spec: ServeSpec) -> None:
    with pytest.raises(APIError) as info:
        job(engine, spec, "a", "smol", "one two three " * 400, [], max_tokens=40)
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    assert "context is 1024 tokens" in info.value.message
