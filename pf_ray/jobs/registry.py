"""The registry of job kinds: each stage declares its spec, how it runs and its result.

A kind is one :class:`JobKind`, declared in the stage's own folder and registered once in
:mod:`pf_ray.kinds` (or, for a plugin or a test, with :func:`register`). Everything that
depends on the set of kinds comes from here: the spec union that ``pf-ray validate`` and
``run`` parse against, the kind list in error messages, the runner's dispatch and the
CLI's result printing (``summary()`` and ``to_json()`` of the result).

Two ways to run a kind:

* ``plan``: ``plan(spec) -> ShardPlan``; the runner executes the plan (Ray Data or in
  process), commits shards of the kind's declared ``output`` schema and returns a
  :class:`~pf_ray.jobs.shard.ShardResult`, or what the kind's optional ``finalize(spec,
  result)`` makes of it (eval's tables).
* ``run``: ``run(spec, executor=...) -> result``; the kind runs itself (training on Ray
  Train, a Serve app) and returns an object with ``summary()`` and ``to_json()``.

``pipeline`` is built in: an ordered list of jobs of any registered kind, inline or as
spec file paths.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, get_args

from pydantic import Field, TypeAdapter, create_model

from pf_ray.data.schema import OutputSchema
from pf_ray.specs import SpecBase

PIPELINE = "pipeline"


class ShardResult(Protocol):
    """What every kind's run returns: a line for people, a dict for ``--json``."""

    def summary(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class JobKind:
    """One kind of job. Give exactly one of ``plan`` (a shard job) or ``run``."""

    name: str
    spec: type[SpecBase]
    plan: Callable[[Any], Any] | None = None
    run: Callable[..., ShardResult] | None = None
    description: str = ""
    # A shard kind's output (its rows' schema and counted columns); its plan writes it.
    output: OutputSchema | None = None
    # After a shard kind's units are committed: ``finalize(spec, shard_result) -> result``
    # (e.g. eval's tables); the job's result is what it returns.
    finalize: Callable[[Any, Any], ShardResult] | None = None

    def __post_init__(self) -> None:
        if (self.plan is None) == (self.run is None):
            raise ValueError(f"kind {self.name!r}: give exactly one of plan= or run=")
        field = self.spec.model_fields.get("kind")
        tags = get_args(field.annotation) if field is not None else ()
        if tags != (self.name,):
            raise ValueError(f"kind {self.name!r}: {self.spec.__name__} must declare "
                             f"kind: Literal[{self.name!r}] (received {tags or 'no kind field'})")
        if self.name == PIPELINE:
            raise ValueError(f"kind {PIPELINE!r} is built in")
        if self.plan is not None and self.output is None:
            raise ValueError(f"kind {self.name!r}: a shard kind declares its output schema "
                             "(output=OutputSchema(...))")
        if self.run is not None and (self.output is not None or self.finalize is not None):
            raise ValueError(f"kind {self.name!r}: output= and finalize= belong to shard "
                             "kinds (plan=); a run= kind writes what it writes")


_KINDS: dict[str, JobKind] = {}
# The spec adapter and pipeline class for the kinds registered now (rebuilt after a change)
_built: tuple[TypeAdapter[Any], type[SpecBase]] | None = None


def register(kind: JobKind, *, replace: bool = False) -> JobKind:
    """Add a kind; registering another kind under a taken name is an error."""
    old = _KINDS.get(kind.name)
    if old is not None and old != kind and not replace:
        raise ValueError(f"kind {kind.name!r} is registered already ({old.spec.__name__})")
    global _built
    _KINDS[kind.name] = kind
    _built = None
    return kind


def unregister(name: str) -> None:
    global _built
    _KINDS.pop(name, None)
    _built = None


# The catalogue of built-in kinds sits above the stages (it imports them); the registry
# loads it by name on first use, the way a plugin system loads entry points, so that this
# layer never imports a stage.
CATALOGUE = "pf_ray.kinds"
_loaded = False


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module(CATALOGUE)


def kinds() -> dict[str, JobKind]:
    """Registered kinds by name (the built-in stages are loaded on first use)."""
    _load_builtin()
    return dict(_KINDS)


def kind_names() -> tuple[str, ...]:
    return (*kinds(), PIPELINE)


def get(name: str) -> JobKind:
    found = kinds().get(name)
    if found is None:
        raise KeyError(f"unknown kind {name!r}; allowed: {', '.join(kind_names())}")
    return found


def _build() -> tuple[TypeAdapter[Any], type[SpecBase]]:
    global _built
    registered = kinds()
    if _built is not None:
        return _built
    specs = tuple(k.spec for k in registered.values())
    leaf: Any = Annotated[specs[0] if len(specs) == 1 else _union(specs),
                          Field(discriminator="kind")]
    pipeline = create_model(
        "PipelineSpec", __base__=SpecBase,
        __doc__="An ordered list of jobs, each given inline or as a spec file path.",
        kind=(Literal["pipeline"], ...),
        jobs=(list[Annotated[str | leaf, Field(union_mode="left_to_right")]],
              Field(..., min_length=1)))
    spec_union: Any = Annotated[_union((*specs, pipeline)), Field(discriminator="kind")]
    _built = (TypeAdapter(spec_union), pipeline)
    return _built


def _union(types: tuple[type, ...]) -> Any:
    out: Any = types[0]
    for t in types[1:]:
        out = out | t
    return out


def spec_adapter() -> TypeAdapter[Any]:
    """The pydantic adapter for a spec of any registered kind (or a pipeline of them)."""
    return _build()[0]


def pipeline_spec() -> type[SpecBase]:
    """The pipeline spec class for the kinds registered now."""
    return _build()[1]


def spec_models() -> dict[str, type[SpecBase]]:
    """Spec class per kind name, ``pipeline`` included (used to explain unknown keys)."""
    return {**{name: k.spec for name, k in kinds().items()}, PIPELINE: pipeline_spec()}


def is_pipeline(spec: Any) -> bool:
    return getattr(spec, "kind", None) == PIPELINE
