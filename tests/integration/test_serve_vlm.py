"""``engine: hf_vlm``: the same tiny Idefics3 folder with a LoRA adapter on pf-ray's own
``@serve.batch`` app (the baseline of ``bench/bench_serve_vllm.py``), answering the cases
``engine: vllm`` answers in ``tests/vllm/test_serve_llm.py`` (``tests/serve_vlm_cases.py``):
the same front, the same names, the same refusals. One application for the module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serve_support import tiny_vlm
from serve_vlm_cases import (  # noqa: F401 - the shared cases run here
    Served,
    image_servers,
    serve_spec,
    test_image_chat_through_the_openai_client,
    test_image_urls_allow_list,
    test_limits_and_refusals,
    test_streaming_with_usage,
    test_the_adapter_by_name,
    test_the_api_key,
    test_the_chat_page_and_its_request_shape,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def served(ray_session: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from ray import serve

    from pf_ray.serve.launch import start
    from pf_ray.serve.spec import ServeSpec

    folder = tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny")
    allowed, other, image = image_servers()
    spec = ServeSpec.model_validate(serve_spec(
        folder, "hf_vlm", allowed,
        deployment={"cpus_per_replica": 0.5, "torch_threads": 1},
        batching={"max_batch_size": 16, "batch_wait_timeout_s": 0.02}))
    url = start(spec)
    yield Served(url, allowed, other, image)
    serve.delete(spec.app_name)
    serve.shutdown()
    allowed.stop()
    other.stop()
