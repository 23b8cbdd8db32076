"""Shared fixtures: one local Ray instance and one S3 server per test session."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from s3server import ACCESS_KEY, SECRET_KEY, S3Server, start_s3_server  # noqa: E402


@pytest.fixture(scope="session")
def ray_session() -> Iterator[str]:
    """A local Ray instance shared by all integration tests; yields its GCS address.

    4 logical CPUs on a 2-core machine: Ray waits forever when resources run short.
    """
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"AWS_ACCESS_KEY_ID": ACCESS_KEY,
                                       "AWS_SECRET_ACCESS_KEY": SECRET_KEY}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("weed"))
    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_session_bucket(s3_server: S3Server) -> str:
    """One bucket for the session (each bucket costs the server its own volumes)."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                           endpoint_override=s3_server.endpoint.removeprefix("http://"),
                           scheme="http", region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("pf-ray-tests")
    return "s3://pf-ray-tests"


@pytest.fixture()
def s3_bucket(s3_session_bucket: str) -> str:
    """A fresh prefix in the session bucket; returns ``s3://bucket/prefix``."""
    return f"{s3_session_bucket}/t{time.time_ns()}"


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama + BPE tokenizer saved as a HF folder (built once per session)."""
    from tiny_lm import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))
