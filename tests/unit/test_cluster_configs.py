"""cluster/*.yaml: valid Ray cluster-launcher configs that fit the jobs they run.

Each file is validated against the JSON schema shipped inside the installed ``ray``
package (what ``ray up`` itself checks), then against the specs: the GPU groups scale from
zero, the groups are big enough for the actor pools and Train scaling in ``jobs/``, job
drivers have a CPU node to land on, and every node runs the project's image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import pf_ray
from pf_ray.config import load_spec

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = sorted((ROOT / "cluster").glob("*.yaml"))
IMAGE = f"ghcr.io/pf-ray/pf-ray:{pf_ray.__version__}"


def ray_schema() -> dict[str, Any]:
    import importlib.util

    origin = importlib.util.find_spec("ray").origin  # type: ignore[union-attr]
    return json.loads((Path(origin).parent / "autoscaler" / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return ray_schema()


def test_aws_and_gcp_configs_exist() -> None:
    assert {p.name for p in CLUSTERS} >= {"aws.yaml", "gcp.yaml"}


@pytest.mark.parametrize("path", CLUSTERS, ids=lambda p: p.name)
def test_config_matches_rays_cluster_schema(path: Path, schema: dict[str, Any]) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_the_schema_check_can_fail(schema: dict[str, Any]) -> None:
    config = yaml.safe_load(CLUSTERS[0].read_text())
    config["available_node_types"]["gpu_rewrite"]["resources"]["GPU"] = 0.5  # ints only
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)
    config = yaml.safe_load(CLUSTERS[0].read_text())
    config["idle_timeout"] = 5  # unknown top-level key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


def _groups(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["available_node_types"]


@pytest.mark.parametrize("path", CLUSTERS, ids=lambda p: p.name)
def test_groups_head_cpu_and_autoscaling_gpu(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    groups = _groups(config)
    head = groups[config["head_node_type"]]
    assert "GPU" not in head["resources"] and head["resources"].get("pf_driver")
    cpu = [g for n, g in groups.items() if n != config["head_node_type"]
           and "GPU" not in g["resources"]]
    assert cpu and all(g["resources"].get("pf_driver") for g in cpu)  # drivers land there
    gpu = {n: g for n, g in groups.items() if g["resources"].get("GPU")}
    assert {"gpu_rewrite", "gpu_train"} <= set(gpu)
    for name, g in gpu.items():
        assert g.get("min_workers", 0) == 0, f"{name}: GPU groups scale from zero"
        assert g["max_workers"] >= 1 and "pf_driver" not in g["resources"]
    assert 0 < config["idle_timeout_minutes"] <= 30
    assert config["max_workers"] >= sum(g.get("max_workers", 0) for g in cpu) + \
        gpu["gpu_rewrite"]["max_workers"]


@pytest.mark.parametrize("path", CLUSTERS, ids=lambda p: p.name)
def test_every_node_runs_the_image_and_installs_this_checkout(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert config["docker"]["image"] == IMAGE
    assert config["file_mounts"] == {"/home/ray/pf-ray": "."}
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "/home/ray/pf-ray" in setup and "pf-ray --version" in setup
    assert path.read_text().startswith("# ray up cluster/")


@pytest.mark.parametrize("path", CLUSTERS, ids=lambda p: p.name)
def test_the_gpu_groups_fit_the_paper_specs(path: Path) -> None:
    groups = _groups(yaml.safe_load(path.read_text()))
    rewrite_group, train_group = groups["gpu_rewrite"], groups["gpu_train"]
    rewrite = load_spec(ROOT / "jobs" / "rewrite_pf1m.yaml", env={})
    engine = rewrite.engine
    assert engine.num_gpus <= rewrite_group["resources"]["GPU"]
    assert engine.num_cpus * (rewrite_group["resources"]["GPU"] // engine.num_gpus) <= \
        rewrite_group["resources"]["CPU"]
    assert engine.max_actors <= rewrite_group["max_workers"] * rewrite_group["resources"]["GPU"]
    train = load_spec(ROOT / "jobs" / "train_rewriter.yaml", env={})
    sc = train.scaling
    res = train_group["resources"]
    assert sc.num_workers * sc.gpus_per_worker <= res["GPU"] * train_group["max_workers"]
    assert sc.num_workers * sc.cpus_per_worker <= res["CPU"] * train_group["max_workers"]
    if sc.accelerator_type:  # Train asks for accelerator_type:<X>: the group must offer it
        assert res.get(f"accelerator_type:{sc.accelerator_type}")
