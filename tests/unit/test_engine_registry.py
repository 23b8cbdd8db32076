"""A new engine is one file and one registration: the rewrite spec accepts its block and the
rewrite job generates through it, with the rewriter's own prompts (no other file edited)."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pf_ray.config import SpecError, parse_spec
from pf_ray.data.io import Dataset
from pf_ray.engines import registry as engine_registry
from pf_ray.jobs import registry as kind_registry
from pf_ray.jobs.runner import run_job
from pf_ray.model.prompts import rewrite_stops
from pf_ray.rewrite.kind import rewrite_kind
from pf_ray.specs import StorageConfig

# The whole toy engine: its spec block, its generator, its record (one file). It answers
# from the chat form of each prompt, so the test sees what the stage asked.
TOY = '''
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from pf_ray.engines.base import Prompt, Result
from pf_ray.engines.config import GenerationEngine
from pf_ray.engines.registry import EngineDef


class EchoEngine(GenerationEngine):
    """Answers with the draft of the prompt's chat text, politely."""

    kind: Literal["echo"]
    greeting: str = Field("Certainly!", description="the first words of every answer")


class Echo:
    seen: list[Prompt] = []

    def __init__(self, cfg: EchoEngine):
        self.cfg = cfg

    def generate(self, prompts: Sequence[Prompt]) -> list[Result]:
        Echo.seen.extend(prompts)
        out = []
        for p in prompts:
            draft = p.user.split("Draft response: ", 1)[1].split("\\nRewrite the draft", 1)[0]
            out.append(Result(f"{self.cfg.greeting} The answer is {draft}.", "eos"))
        return out


def _build(cfg: EchoEngine, decoding: Any, storage: Any) -> Echo:
    return Echo(cfg)


ENGINE = EngineDef("echo", EchoEngine, _build, description="a toy engine")
'''


@pytest.fixture()
def toy(tmp_path: Path) -> Iterator[Any]:
    path = tmp_path / "toy_echo.py"
    path.write_text(textwrap.dedent(TOY))
    spec = importlib.util.spec_from_file_location("toy_echo", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_echo"] = module
    spec.loader.exec_module(module)
    old = kind_registry.get("rewrite")
    engine_registry.register(module.ENGINE)  # the one registration
    kind_registry.register(rewrite_kind(), replace=True)
    try:
        yield module
    finally:
        engine_registry.unregister("echo")
        kind_registry.register(old, replace=True)
        sys.modules.pop("toy_echo", None)


def test_a_toy_engine_is_one_file_and_one_registration(toy: Any, tmp_path: Path) -> None:
    syn = str(tmp_path / "syn")
    run_job(parse_spec({"kind": "synthetic", "n": 12, "rows_per_shard": 6,
                        "output": {"path": syn}}), executor="local")
    job = parse_spec({"kind": "rewrite", "inputs": [syn], "output": {"path": str(tmp_path / "o")},
                      "select": {"sources": ["synthetic_vl"]}, "ray": {"progress": False},
                      "engine": {"kind": "echo", "greeting": "Sure!", "batch_size": 4}})
    run_job(job, executor="local")
    ds = Dataset(str(tmp_path / "o"), StorageConfig())
    rows = ds.read().to_pylist()
    assert rows and all(r["output"] == f"Sure! The answer is {r['original']}." for r in rows)
    # the engine got the rewriter's prompt in every form: chat text, system, token encoder
    p = toy.Echo.seen[0]
    assert p.system and "Draft response:" in p.user and p.encode is not None
    assert p.stops == rewrite_stops("paper")  # the rewriter's stop strings
    with pytest.raises(SpecError, match="engine.echo.greeting|greeting"):
        parse_spec({"kind": "rewrite", "inputs": [syn], "output": {"path": "x"},
                    "engine": {"kind": "echo", "greeting": 3}})


def test_unknown_engine_kind_lists_the_registered_ones() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"kind": "rewrite", "inputs": ["x"], "output": {"path": "y"},
                    "engine": {"kind": "nope"}})
    text = str(info.value)
    assert all(k in text for k in ("flamingo", "http", "hf_vlm", "vllm"))
    assert list(engine_registry.engines()) == ["flamingo", "http", "hf_vlm", "vllm"]
    with pytest.raises(ValueError, match="must declare kind"):
        engine_registry.EngineDef("other", engine_registry.get("http").config,
                                  engine_registry.get("http").build)
