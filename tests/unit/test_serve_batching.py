"""The replica's batched generator in plain asyncio (no Ray instance, no Serve replica):
streaming and non-streaming requests decode in one batch, and a request that breaks the
model fails alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from pf_ray.model.generate import generate
from pf_ray.serve.api import ChatRequest
from pf_ray.serve.prepare import Job, encode, plan_chat
from pf_ray.serve.spec import ServeSpec

FAIL = "__break__"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer
    from pf_ray.serve.engine import Engine

    threads = torch.get_num_threads()
    folder = tmp_path_factory.mktemp("batching") / "tiny"
    save_pretrained(build_model("tiny", seed=0), folder, model_tokenizer("tiny"))
    yield Engine(str(folder), torch_threads=1, fail_marker=FAIL)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def replica(engine: Any) -> Any:
    """A Batcher and the one event loop it lives on (as in a replica: serve.batch's queue is
    bound to the loop of its first call). serve.batch reads the replica's
    max_ongoing_requests (for a warning only): a stand-in replica context gives it."""
    import ray.serve.batching as batching

    from pf_ray.serve.batching import Batcher

    config = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=64))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batching.serve, "get_replica_context", lambda: config)
        loop = asyncio.new_event_loop()
        yield Batcher(engine, max_batch_size=8, batch_wait_timeout_s=0.5), loop
        pending = asyncio.all_tasks(loop)  # serve.batch's queue task: stop it, then close
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def jobs(engine: Any, texts: list[str]) -> list[Job]:
    spec = ServeSpec(kind="serve", model=str(Path("unused")))
    out = []
    for i, text in enumerate(texts):
        req = ChatRequest.model_validate({
            "model": spec.model_name, "messages": [{"role": "user", "content": text}],
            "max_tokens": 4 + i, "temperature": 0, "stream": i % 2 == 0})
        plan = plan_chat(req, spec)
        ids = encode(plan, engine.tokenizer, engine.mode, engine.context_length)
        out.append(Job(f"r{i}", ids, [], plan.config, plan.text, plan.stream))
    return out


def run_all(replica: Any, batch: list[Job]) -> list[list[Any]]:
    batcher, loop = replica

    async def one(job: Job) -> list[Any]:
        return [u async for u in batcher.generate_batch(job)]

    async def every() -> list[list[Any]]:
        return await asyncio.gather(*(one(j) for j in batch))

    return loop.run_until_complete(every())


def test_streaming_and_plain_requests_share_one_batch(engine: Any, replica: Any) -> None:
    from pf_ray.serve.batching import EMPTY

    batcher = replica[0]
    before = (batcher.batches, batcher.requests)
    batch = jobs(engine, [f"Question number {i}?" for i in range(8)])
    results = run_all(replica, batch)
    # one decode for all eight
    assert (batcher.batches - before[0], batcher.requests - before[1]) == (1, 8)
    for job, updates in zip(batch, results, strict=True):
        alone = generate(engine.model, engine.tokenizer, [job.prompt_ids], [[]], job.config)[0]
        news = [u for u in updates if u is not EMPTY]
        assert "".join(u.delta for u in news) == alone.text
        assert news[-1].finish_reason == ("length" if alone.finish_reason == "length"
                                          else "stop")
        assert news[-1].completion_tokens == len(alone.token_ids) + (
            alone.finish_reason == "eos")
        if job.stream:  # deltas as they come
            assert sum(1 for u in news if u.delta) >= 2, job.rid
        else:  # one update, at the end
            assert len(news) == 1, job.rid


def test_a_request_that_breaks_the_model_fails_alone(engine: Any, replica: Any) -> None:
    batcher = replica[0]
    before = batcher.batches
    texts = [f"Question number {i}?" for i in range(5)]
    texts[3] = f"please {FAIL}"
    batch = jobs(engine, texts)
    results = run_all(replica, batch)
    assert batcher.batches - before == 1
    errors = [[u.error for u in r if u.error] for r in results]
    assert errors == [[], [], [], ["r3"], []]
    for i, updates in enumerate(results):
        if i != 3:
            assert any(u.finish_reason for u in updates)
