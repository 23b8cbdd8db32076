"""Job specs: pydantic v2 models, unknown keys are errors, discriminated on ``kind``.

A spec file is YAML. Loading goes: parse YAML -> expand ``${VAR}`` / ``${VAR:-default}`` in
strings -> apply ``dotted.key=value`` overrides -> validate. Every problem of a file is
collected and reported at once as a :class:`SpecError`, each line naming the dotted field
path, what was received and what is allowed.

Kinds so far: ``synthetic`` (the offline default dataset), ``ingest`` (a public dataset file
-> pf-ray shards) and ``pipeline`` (an ordered list of jobs or spec files). Later stages add
``distort``, ``rewrite``, ``train``, ``serve`` and ``eval`` as further members of :data:`JobSpec`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator


class Strict(BaseModel):
    """Base for every spec model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class StorageConfig(Strict):
    """Where ``s3://`` paths live and how to authenticate. Local paths ignore it.

    Credentials are never written in a spec: they are read from the environment variables
    named here, on the driver and on every Ray worker.
    """

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://127.0.0.1:8333 (None: AWS)"
    )
    region: str | None = Field(None, description="bucket region (None: AWS_REGION or us-east-1)")
    client: Literal["pyarrow", "s3fs"] = Field(
        "pyarrow", description="S3 client: pyarrow's native one, or s3fs through fsspec"
    )
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"
    session_token_env: str = "AWS_SESSION_TOKEN"
    anonymous: bool = Field(False, description="unsigned requests (public buckets)")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_has_scheme(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError(f"must start with http:// or https://, received {v!r}")
        return v


class RayConfig(Strict):
    """How a job reaches Ray."""

    address: str | None = Field(
        None, description="cluster address; None: RAY_ADDRESS if set, else a local instance"
    )
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    num_cpus: int | None = Field(
        None, ge=1, description="logical CPUs of a local instance (ignored for clusters)"
    )
    progress: bool = Field(True, description="show progress while the job runs")


class OutputConfig(Strict):
    """Where a dataset job writes: ROOT/shards, ROOT/rejects, ROOT/_manifest.json."""

    path: str = Field(..., description="local folder or s3://bucket/prefix")
    mode: Literal["resume", "overwrite", "error"] = Field(
        "resume",
        description="resume: skip committed shards; overwrite: delete ROOT first; "
        "error: fail if ROOT holds a dataset",
    )


class JobBase(Strict):
    name: str | None = Field(None, description="free-form job name, shown in logs")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ray: RayConfig = Field(default_factory=RayConfig)


class SyntheticJob(JobBase):
    """The offline default dataset: procedural shapes with known ground truth."""

    kind: Literal["synthetic"]
    output: OutputConfig
    seed: int = 0
    n: int = Field(2000, ge=1, description="number of rows (samples), all tasks together")
    image_size: int = Field(64, ge=16, le=1024, description="square image side in pixels")
    rows_per_shard: int = Field(1000, ge=1)
    embed_images: bool = Field(True, description="store PNG bytes in image_bytes")


SourceAdapter = Literal["llava_instruct", "sharegpt", "ultrachat", "coco"]


class SourceConfig(Strict):
    """A public dataset file in its own format."""

    adapter: SourceAdapter
    path: str = Field(..., description="file, glob or URI (s3://bucket/x.json)")
    image_root: str | None = Field(None, description="folder or URI image paths are relative to")
    name: str | None = Field(None, description="source name used in ids (default: adapter name)")


class ImagePolicy(Strict):
    """How images are checked when a job touches them."""

    check: bool = Field(True, description="decode every image; reject unreadable ones")
    embed: bool = Field(False, description="store the (re-encoded) image in image_bytes")
    max_pixels: int = Field(
        50_000_000, ge=1, description="larger images are rejected as decompression bombs"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="http(s) hosts images may be fetched from"
    )


class IngestJob(JobBase):
    """Convert a public instruction dataset into pf-ray sample shards."""

    kind: Literal["ingest"]
    output: OutputConfig
    source: SourceConfig
    rows_per_shard: int = Field(5000, ge=1)
    images: ImagePolicy = Field(default_factory=ImagePolicy)


Family = Literal["llm", "augment", "boxes"]


class MixtureConfig(Strict):
    """Distortion family weights per kind of row (normalised; spec §1 counts by default).

    A row is ``text`` (no image), ``image``, or ``image_with_boxes`` (captions + boxes are
    known for its image, e.g. LLaVA-detail joined with COCO). ``per_source`` replaces the
    weights for the rows of one source. ``boxes`` is drawn only where captions and boxes
    exist, and ``llm`` only when an engine is configured; the others are renormalised.
    """

    # 76k LLM-instructed UltraChat/ShareGPT, no other family on text-only rows.
    text: dict[Family, float] = Field(default_factory=lambda: {"llm": 1.0})
    # 133k LLM-instructed vs 77k nlpaug-augmented LLaVA rows.
    image: dict[Family, float] = Field(default_factory=lambda: {"llm": 133.0, "augment": 77.0})
    # 14k of LLaVA-detail's 23k use captions+boxes; the other 9k split 133:77 (5.7 : 3.3).
    image_with_boxes: dict[Family, float] = Field(
        default_factory=lambda: {"boxes": 14.0, "llm": 5.7, "augment": 3.3})
    per_source: dict[str, dict[Family, float]] = Field(default_factory=dict)

    @field_validator("text", "image", "image_with_boxes")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()) or not any(w > 0 for w in v.values()):
            raise ValueError(f"weights must be >= 0 with at least one > 0, received {v}")
        return v


class SamplingConfig(Strict):
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0: off")


class EngineBase(Strict):
    prompt_format: Literal["guanaco", "chat_template"] = Field(
        "guanaco", description="paper's ### Human/### Assistant text, or the model's template")
    batch_size: int = Field(16, ge=1, description="prompts per engine call")
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="GPUs per engine actor")
    min_actors: int = Field(1, ge=1)
    max_actors: int = Field(1, ge=1)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class HFEngineConfig(EngineBase):
    """A transformers causal LM in an actor pool."""

    kind: Literal["hf"]
    model: str = Field(..., description="local folder or URI (s3://...) of a HF model")
    gguf_file: str | None = Field(None, description="a GGUF file inside the model folder")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False


class VLLMEngineConfig(EngineBase):
    """vLLM through ``ray.data.llm`` (vLLMEngineProcessorConfig + build_processor)."""

    kind: Literal["vllm"]
    model: str = Field(..., description="model_source: HF folder or URI")
    num_gpus: float = Field(1.0, ge=0, description="GPUs per engine (0: vLLM on CPU)")
    accelerator_type: str | None = None
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    separate_cpu_stages: bool = Field(
        True, description="tokenize/detokenize in their own actor pools (off on tiny CPU "
        "machines, where the extra pools can starve the engine of CPUs)")


class HTTPEngineConfig(EngineBase):
    """Any OpenAI-compatible /v1/completions endpoint."""

    kind: Literal["http"]
    base_url: str = Field(..., description="e.g. http://10.0.0.5:8000/v1")
    model: str = Field(..., description="model name the server knows")
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(120.0, gt=0)
    max_concurrency: int = Field(8, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError(f"must start with http:// or https://, received {v!r}")
        return v


EngineConfig = Annotated[HFEngineConfig | VLLMEngineConfig | HTTPEngineConfig,
                         Field(discriminator="kind")]


class SelectConfig(Strict):
    """Which input rows are clean data to distort (others are rejected as not_selected)."""

    sources: list[str] | None = Field(None, description="None: every source")
    tasks: list[str] | None = Field(None, description="None: every task")


class DistortJob(JobBase):
    """Clean instruction data -> (distorted, original) pairs for the rewriter."""

    kind: Literal["distort"]
    inputs: list[str] = Field(..., min_length=1, description="pf-ray dataset roots")
    output: OutputConfig
    seed: int = 0
    select: SelectConfig = Field(default_factory=SelectConfig)
    mixture: MixtureConfig = Field(default_factory=MixtureConfig)
    engine: EngineConfig | None = Field(None, description="None: no LLM family")
    boxes_from: str | None = Field(
        None, description="dataset with captions+boxes rows (COCO ingest) joined on image")
    max_chars: int = Field(8000, ge=1, description="longer originals are rejected")
    images: ImagePolicy = Field(default_factory=lambda: ImagePolicy(check=True))


class TrainData(Strict):
    """One dataset of a training mixture."""

    path: str = Field(..., description="pf-ray dataset root (pairs or samples)")
    ratio: float = Field(1.0, gt=0, description="sampling weight (see TrainJob.sampling)")


class OptimConfig(Strict):
    lr: float = Field(1e-4, gt=0)
    lr_scale: float = Field(1.0, gt=0, description="multiplies lr (clever_s3: 0.1)")
    weight_decay: float = Field(0.1, ge=0, description="on cross-attention parameters only")
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = Field(1.0, gt=0)


class ScalingSpec(Strict):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    accelerator_type: str | None = None


class TrainJob(JobBase):
    """Rewriter SFT or one Clever Flamingo stage on Ray Train (spec §3 Table 4, §6)."""

    kind: Literal["train"]
    stage: Literal["rewriter", "clever_s1", "clever_s2", "clever_s3"]
    model: str = Field(..., description="a preset name (tiny, openflamingo-9b-v1...) or a "
                                        "pf-ray model folder / URI (a previous stage's export)")
    data: list[TrainData] = Field(..., min_length=1)
    sampling: Literal["ratio", "sqrt"] = Field(
        "ratio", description="ratio: weight = ratio; sqrt: weight = ratio * sqrt(rows)")
    samples_per_epoch: int | None = Field(None, ge=1, description="None: all rows once")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps")
    batch_size: int = Field(4, ge=1, description="samples per worker per micro-step")
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8)
    max_images: int = Field(10, ge=1)
    multiturn: bool | None = Field(None, description="None: on for clever stages")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    fsdp: bool = Field(True, description="FSDP2 fully_shard (vision tower, each decoder layer)")
    bf16: bool | None = Field(None, description="bf16 autocast; None: on when using GPUs")
    storage_path: str = Field(..., description="checkpoints + metrics: folder or s3://")
    run_name: str = Field(..., description="run folder under storage_path; a rerun with the "
                                           "same name resumes from its latest checkpoint")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    max_failures: int = Field(1, ge=0)
    export: str | None = Field(None, description="model folder written at the end")
    export_lora: Literal["adapter", "merged"] = "adapter"
    seed: int = 0
    fail_at_step: int | None = Field(None, description="testing: raise once at this step")


class PipelineJob(JobBase):
    """An ordered list of jobs, each given inline or as a spec file path."""

    kind: Literal["pipeline"]
    jobs: list[Annotated[str | LeafJob, Field(union_mode="left_to_right")]] = Field(
        ..., min_length=1
    )


LeafJob = Annotated[SyntheticJob | IngestJob | DistortJob | TrainJob,
                    Field(discriminator="kind")]
JobSpec = Annotated[SyntheticJob | IngestJob | DistortJob | TrainJob | PipelineJob,
                    Field(discriminator="kind")]
PipelineJob.model_rebuild()
KINDS = ("synthetic", "ingest", "distort", "train", "pipeline")
ENGINE_KINDS = ("hf", "vllm", "http")

_JOB_ADAPTER: TypeAdapter[Any] = TypeAdapter(JobSpec)


# ---------------------------------------------------------------- errors


class SpecError(ValueError):
    """All problems found in one spec, each as ``path: message``."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} error(s)\n{lines}")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the last element of a pydantic error location."""
    models: dict[str, Any] = {"synthetic": SyntheticJob, "ingest": IngestJob,
                              "distort": DistortJob, "train": TrainJob, "pipeline": PipelineJob,
                              "hf": HFEngineConfig, "vllm": VLLMEngineConfig,
                              "http": HTTPEngineConfig}
    if not loc or loc[0] not in models:
        return None
    model: Any = models[loc[0]]
    for i, part in enumerate(loc[1:-1], start=1):
        if part in models and (isinstance(loc[i - 1], int) or loc[i - 1] == "engine"):
            model = models[part]
            continue
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            for arg in getattr(ann, "__args__", ()):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    model = arg
    return model


_WRAPPER_LOC = re.compile(r"^(tagged-union|union|function-\w+|str|json-or-python)\b")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(path shown to users, path for model lookup), without pydantic's union/tag parts."""
    shown: list[Any] = []
    lookup: list[Any] = []
    after_tag_slot = True  # a kind tag may follow the root, a list index or a union part
    for part in loc:
        if isinstance(part, str) and _WRAPPER_LOC.match(part):
            after_tag_slot = True
            continue
        engine_tag = part in ENGINE_KINDS and shown[-1:] == ["engine"]
        if isinstance(part, str) and ((after_tag_slot and part in KINDS) or engine_tag):
            lookup.append(part)
            after_tag_slot = False
            continue
        shown.append(part)
        lookup.append(part)
        after_tag_slot = isinstance(part, int)
    return tuple(shown), tuple(lookup)


def _format_error(err: Mapping[str, Any]) -> str:
    shown, lookup = _clean_loc(tuple(err["loc"]))
    path = ".".join(str(p) for p in shown)
    where = path or "<root>"
    kind, ctx = err["type"], err.get("ctx") or {}
    received = _short(err.get("input"))
    if kind == "extra_forbidden":
        model = _model_at(lookup)
        allowed = sorted(model.model_fields) if model else []
        return f"{where}: unknown key (received {received}); allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        return f"{where}: required field is missing"
    prefix = f"{path}.kind" if path else "kind"
    if kind == "union_tag_invalid":
        return f"{prefix}: unknown kind {ctx.get('tag')!r}; allowed: {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"{prefix}: required field is missing; allowed: {', '.join(KINDS)}"
    if kind == "literal_error":
        return f"{where}: received {received}; allowed: {ctx.get('expected')}"
    if kind in ("model_type", "model_attributes_type", "dict_type") and shown and shown[0] == "jobs":
        return f"{where}: expected a spec file path or a job mapping (received {received})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return msg and f"{where}: {msg}" + ("" if "received" in msg else f" (received {received})")


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per pydantic error: dotted path, what was received, what is allowed."""
    lines: list[str] = []
    for err in exc.errors():
        # A pipeline entry that is neither a path nor a job yields one error per union arm;
        # the string arm's "not a string" error only adds noise.
        if err["type"] == "string_type" and "str" in err["loc"]:
            continue
        line = _format_error(err)
        if line not in lines:
            lines.append(line)
    return lines


# ---------------------------------------------------------------- loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, env: Mapping[str, str] | None = None, *, _path: str = "",
               _problems: list[str] | None = None) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of ``data``.

    An unset variable without a default is an error naming its path (collected in
    ``_problems`` when given, raised otherwise).
    """
    env = os.environ if env is None else env
    top = _problems is None
    problems: list[str] = [] if top else _problems  # type: ignore[assignment]

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        problems.append(f"{_path or '<root>'}: environment variable {name} is not set "
                        f"(write ${{{name}:-default}} to give a default)")
        return match.group(0)

    if isinstance(data, str):
        out: Any = _VAR.sub(sub, data)
    elif isinstance(data, dict):
        out = {k: expand_env(v, env, _path=f"{_path}.{k}" if _path else str(k),
                             _problems=problems) for k, v in data.items()}
    elif isinstance(data, list):
        out = [expand_env(v, env, _path=f"{_path}.{i}" if _path else str(i),
                          _problems=problems) for i, v in enumerate(data)]
    else:
        out = data
    if top and problems:
        raise SpecError("spec", problems)
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; values are parsed as YAML (``n=5`` is an int).

    List items are addressed by index (``jobs.0.seed=3``). Missing dict levels are created.
    """
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {item!r}: expected dotted.key=value")
            continue
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        parts = key.split(".")
        node: Any = data
        try:
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
            last = parts[-1]
            if isinstance(node, list):
                node[int(last)] = value
            elif isinstance(node, dict):
                node[last] = value
            else:
                raise TypeError(f"{type(node).__name__} has no keys")
        except (ValueError, IndexError, TypeError) as exc:
            problems.append(f"override {key}: cannot set ({exc})")
    if problems:
        raise SpecError("overrides", problems)
    return data


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML spec file into a dict (errors name the file and line)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise SpecError(str(path), [f"<root>: expected a mapping with a 'kind' key, "
                                    f"received {type(data).__name__}"])
    return data


def parse_spec(data: dict[str, Any], *, source: str = "spec", base_dir: Path | None = None,
               env: Mapping[str, str] | None = None) -> Any:
    """Expand variables, validate, and (for pipelines) load and validate referenced files.

    Raises :class:`SpecError` with every problem found, nested files included.
    """
    problems: list[str] = []
    data = expand_env(data, env, _problems=problems)
    job = None
    try:
        job = _JOB_ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems.extend(format_validation_error(exc))
    if job is not None and isinstance(job, PipelineJob):
        resolved = []
        for i, entry in enumerate(job.jobs):
            if isinstance(entry, str):
                ref = Path(entry)
                if not ref.is_absolute() and base_dir is not None:
                    ref = base_dir / ref
                try:
                    sub = parse_spec(read_spec_file(ref), source=str(ref),
                                     base_dir=ref.parent, env=env)
                except FileNotFoundError:
                    problems.append(f"jobs.{i}: spec file not found (received {entry!r})")
                    continue
                except SpecError as exc:
                    problems.extend(f"jobs.{i} ({entry}): {p}" for p in exc.problems)
                    continue
                if isinstance(sub, PipelineJob):
                    resolved.extend(sub.jobs)
                else:
                    resolved.append(sub)
            else:
                resolved.append(entry)
        job = job.model_copy(update={"jobs": resolved})
    if problems:
        raise SpecError(source, problems)
    return job


def load_spec(path: str | Path, overrides: list[str] | None = None,
              env: Mapping[str, str] | None = None) -> Any:
    """Read, override, expand and validate a spec file."""
    path = Path(path)
    data = read_spec_file(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_spec(data, source=str(path), base_dir=path.parent, env=env)


def spec_hash(job: BaseModel, *, exclude: set[str] | None = None) -> str:
    """A short stable hash of what a job computes.

    Where and how it runs (``storage``, ``ray``, ``output``, ``name``) is excluded, so the
    same job gives the same shard names on a laptop and on a cluster, in a folder or a bucket.
    """
    skip = {"storage", "ray", "output", "name"} | (exclude or set())
    payload = job.model_dump(mode="json", exclude=skip)
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]
