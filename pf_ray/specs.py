"""The spec building blocks every stage shares (the ground floor: pydantic only).

A stage's spec subclasses :class:`SpecBase` and adds ``kind: Literal["..."]`` and its own
fields; it lives in the stage's folder and is registered with the job registry
(:mod:`pf_ray.jobs.registry`). Loading, ``${VAR}`` expansion, overrides and error
formatting live in :mod:`pf_ray.config`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator


def _base_url(v: str) -> str:
    if not re.match(r"^https?://", v):
        raise ValueError(f"must start with http:// or https://, received {v!r}")
    return v.rstrip("/")


def _qa_template(v: str) -> str:
    if "{answer}" not in v or "{question}" not in v:
        raise ValueError(f"must contain {{answer}} and {{question}}, received {v!r}")
    return v


BaseURL = Annotated[str, AfterValidator(_base_url)]
"""An OpenAI-compatible server's URL (``http(s)://host:port/v1``), trailing ``/`` removed."""

QATemplate = Annotated[str, AfterValidator(_qa_template)]
"""The paper.md §5 NLI sentence: a template with ``{answer}`` and ``{question}``."""


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


class FaultPolicy(Strict):
    """Row faults become rejects; infrastructure faults are retried, then fail the job.

    An infrastructure fault (connection refused, timeout, HTTP 5xx, CUDA error, out of
    memory, a missing model file) is retried ``retries`` times on the same micro-batch,
    waiting ``backoff_s * 2**attempt`` seconds; then the unit fails, nothing of it is
    committed, and the job exits non-zero (a rerun resumes it).
    """

    retries: int = Field(3, ge=0, description="retries of a micro-batch after an "
                                              "infrastructure fault")
    backoff_s: float = Field(2.0, ge=0, description="first wait; doubles on each retry")
    max_reject_fraction: float = Field(
        0.5, ge=0, le=1, description="a unit whose rejects (not_selected excluded) exceed this "
        "fraction of its rows is not committed and fails the job")


class OutputConfig(Strict):
    """Where a dataset job writes: ROOT/shards, ROOT/rejects, ROOT/_manifest.json."""

    path: str = Field(..., description="local folder or s3://bucket/prefix")
    mode: Literal["resume", "overwrite", "error"] = Field(
        "resume",
        description="resume: skip committed shards; overwrite: delete ROOT first; "
        "error: fail if ROOT holds a dataset",
    )


class SpecBase(Strict):
    """Fields every job spec has, whatever its kind."""

    name: str | None = Field(None, description="free-form job name, shown in logs")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    faults: FaultPolicy = Field(default_factory=FaultPolicy)


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
    # Left out of dumps at their defaults, so spec hashes (shard names) of datasets made
    # before these fields existed stay the same and their jobs still resume.
    max_bytes: int = Field(
        50 * 2**20, ge=1, exclude_if=lambda v: v == 50 * 2**20,
        description="larger encoded images (files, objects, URLs, tar members) are "
        "rejected as image_too_large"
    )
    timeout_s: float = Field(
        20.0, gt=0, exclude_if=lambda v: v == 20.0,
        description="limit of one http(s) image fetch; a host that does not answer in time "
        "is an infrastructure fault (retried, then the unit fails)"
    )


class ImageLimits(Strict):
    """How images are read (every image is decoded; an unreadable one is a reject)."""

    max_pixels: int = Field(50_000_000, ge=1, description="larger images are rejected")
    allowed_hosts: list[str] = Field(default_factory=list,
                                     description="http(s) hosts images may be fetched from")
    fetch_threads: int = Field(8, ge=1, description="concurrent image reads per engine actor")
    # Left out of dumps at their defaults (as ImagePolicy's): older spec hashes still match.
    max_bytes: int = Field(
        50 * 2**20, ge=1, exclude_if=lambda v: v == 50 * 2**20,
        description="larger encoded images are rejected as image_too_large")
    timeout_s: float = Field(
        20.0, gt=0, exclude_if=lambda v: v == 20.0,
        description="limit of one http(s) image fetch; a host that does not answer in time "
        "is an infrastructure fault (retried, then the unit fails)")


def spec_hash(job: BaseModel, *, exclude: set[str] | None = None) -> str:
    """A short stable hash of what a job computes.

    Where and how it runs (``storage``, ``ray``, ``faults``, ``output``, ``name``) is
    excluded, so the same job gives the same shard names on a laptop and on a cluster, in a
    folder or a bucket, and with any retry policy.
    """
    skip = {"storage", "ray", "faults", "output", "name"} | (exclude or set())
    payload = job.model_dump(mode="json", exclude=skip)
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]
