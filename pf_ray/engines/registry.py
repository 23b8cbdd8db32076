"""The registry of generation engines: each engine is one record, a spec's ``engine.kind``
picks one.

An engine is a file that declares an :class:`EngineDef` (its spec block, a pydantic model
with ``kind: Literal[...]``, and how the engine is built from it) and one :func:`register`
line in :mod:`pf_ray.engines.catalogue`. The stages that take an ``engine:`` block (rewrite)
parse it against the union of the registered blocks (:func:`engine_union`) and call what
:meth:`EngineDef.build` returns through the :class:`~pf_ray.engines.base.Generator`
protocol, with their own prompts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, get_args

from pydantic import Field

from pf_ray.engines.base import Generator
from pf_ray.engines.config import DecodingConfig, GenerationEngine
from pf_ray.specs import StorageConfig

Builder = Callable[[Any, DecodingConfig, StorageConfig], Generator]


@dataclass(frozen=True)
class EngineDef:
    """One engine: ``engine.kind`` in a spec, its block, how it is built (once per actor)."""

    kind: str
    config: type[GenerationEngine]
    build: Builder  # (its spec block, the stage's decoding, storage) -> a Generator
    needs_bytes: bool = False  # it sends the images' stored encodings (an HTTP API)
    beams: bool = False  # it runs beam search (decoding.num_beams > 1)
    # it runs over the whole dataset as a Ray Data stage (ray.data.llm), not as a Generator
    # per actor: the stage wires it in its plan (``build`` then only explains that)
    dataset_stage: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        tags = get_args(self.config.model_fields["kind"].annotation)
        if tags != (self.kind,):
            raise ValueError(f"engine {self.kind!r}: {self.config.__name__} must declare "
                             f"kind: Literal[{self.kind!r}] (received {tags or 'none'})")


_ENGINES: dict[str, EngineDef] = {}
# The built-in engines register themselves in this module, loaded by name on first use.
CATALOGUE = "pf_ray.engines.catalogue"
_loaded = False


def register(e: EngineDef, *, replace: bool = False) -> EngineDef:
    """Add an engine (another engine under its kind is an error)."""
    if e.kind in _ENGINES and _ENGINES[e.kind] != e and not replace:
        raise ValueError(f"engine {e.kind!r} is registered already")
    _ENGINES[e.kind] = e
    return e


def unregister(kind: str) -> None:
    """Remove an engine kind (tests remove what they register)."""
    _ENGINES.pop(kind, None)


def engines() -> dict[str, EngineDef]:
    """The registered engines by kind (the built-ins are loaded on first use)."""
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module(CATALOGUE)
    return dict(_ENGINES)


def get(kind: str) -> EngineDef:
    """The engine registered as ``kind``; a KeyError names the kinds allowed."""
    found = engines().get(kind)
    if found is None:
        raise KeyError(f"engine.kind {kind!r}: allowed: {', '.join(engines())}")
    return found


def engine_union() -> Any:
    """The type of an ``engine:`` block: the registered blocks, told apart by ``kind``."""
    configs = [e.config for e in engines().values()]
    union: Any = configs[0]
    for c in configs[1:]:
        union = union | c
    return Annotated[union, Field(discriminator="kind")] if len(configs) > 1 else union


def build(cfg: GenerationEngine, decoding: DecodingConfig, storage: StorageConfig) -> Generator:
    """The engine of a spec's block (call it where the engine runs: once per actor)."""
    return get(cfg.kind).build(cfg, decoding, storage)
