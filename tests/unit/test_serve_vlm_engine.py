"""``engine: hf_vlm`` without Ray: pf-ray's Serve batcher over a tiny Idefics3 with an
adapter. Requests of one batch keep their own settings, the adapter's rows and the base's
rows answer as each model alone, and greedy answers equal the stages' generator's."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
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


def test_one_batch_of_mixed_requests(engine: Any, spec: ServeSpec) -> None:
    """What the Serve batcher calls (``run(jobs, on_step)``, one call per batch): each row
    keeps its own settings and model, reports its tokens step by step, and answers as it
    does alone. (The batcher itself is ``test_serve_batching``'s: ``@serve.batch`` keeps one
    queue per process, as one replica runs per process.)"""
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
    # the prompt ids count the image's tokens, which the processor expands
    assert len(jobs[0].prompt_ids) > len(engine.tokenizer(jobs[0].prompt).input_ids)

    steps: list[list[Any]] = []
    gens = engine.run(jobs, steps.append)
    for i, (j, g) in enumerate(zip(jobs, gens, strict=True)):
        mine = [e for step in steps for e in step if e[0] == i]
        assert [t for _, t, _ in mine if t is not None] == g.token_ids  # step by step
        assert [r for _, _, r in mine if r] == [g.finish_reason]  # one finish, the last
        assert mine[-1][2] == g.finish_reason
        assert len(g.token_ids) <= j.config.max_new_tokens
        if g.finish_reason == "length":
            assert len(g.token_ids) == j.config.max_new_tokens
        (alone,) = engine.run([j])  # greedy rows; the seeded sampled row draws alone
        assert alone.token_ids == g.token_ids, j.rid
    assert gens[0].token_ids != gens[1].token_ids  # the adapter changes the answer


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
