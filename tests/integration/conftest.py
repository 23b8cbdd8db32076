"""Training fixtures shared by the Flamingo (test_train.py) and hf_vlm (test_train_hf_vlm_ray.py)
integration tests: small synthetic datasets, each built once per session."""

from __future__ import annotations

import pytest

from pf_ray.config import parse_spec
from pf_ray.jobs.runner import run_job


@pytest.fixture(scope="session")
def pairs(ray_session: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """270 synthetic samples distorted into rewriter pairs (with and without images)."""
    root = tmp_path_factory.mktemp("train_data")
    run_job(parse_spec({"kind": "synthetic", "n": 270, "rows_per_shard": 90,
                        "output": {"path": str(root / "syn")}, "ray": {"progress": False}}))
    run_job(parse_spec({"kind": "distort", "inputs": [str(root / "syn")],
                        "boxes_from": str(root / "syn"), "output": {"path": str(root / "pairs")},
                        "select": {"sources": ["synthetic_llava", "synthetic_text"]},
                        "mixture": {"text": {"augment": 1.0}}, "ray": {"progress": False}}))
    return str(root / "pairs")


@pytest.fixture(scope="session")
def samples_36(ray_session: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """36 synthetic samples (instructions, most with an image): a Clever stage's data."""
    root = tmp_path_factory.mktemp("samples36")
    run_job(parse_spec({"kind": "synthetic", "n": 36, "rows_per_shard": 36,
                        "output": {"path": str(root / "syn")}, "ray": {"progress": False}}))
    return str(root / "syn")


@pytest.fixture(scope="session")
def four_pairs(samples_36: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Exactly 4 pairs: the detailed descriptions of 4 images, as captions+boxes pairs."""
    root = tmp_path_factory.mktemp("four")
    (res,) = run_job(parse_spec({
        "kind": "distort", "inputs": [samples_36], "boxes_from": samples_36,
        "output": {"path": str(root / "pairs")}, "select": {"tasks": ["detail"]},
        "mixture": {"image_with_boxes": {"boxes": 1.0}}, "ray": {"progress": False}}))
    assert res.manifest["totals"]["rows"] == 4
    return str(root / "pairs")
