"""infra/: the container image and the KubeRay manifests agree with jobs/ and the package.

Checked: one image tag everywhere (Dockerfile, KubeRay manifests, cluster launcher
configs), equal to pf-ray's version; the image's pinned versions cover every dependency
of pyproject.toml and satisfy its ranges; the Ray version the manifests declare is the
pinned one; the RayJob's entrypoint names a spec of jobs/ that validates with the RayJob's
env; the RayService imports a function that exists; GPU groups autoscale.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import pf_ray
from pf_ray.config import load_spec

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
IMAGE = f"ghcr.io/pf-ray/pf-ray:{pf_ray.__version__}"
MANIFESTS = ("raycluster.yaml", "rayjob.yaml", "rayservice.yaml")


def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((INFRA / name).read_text())


def _pins() -> dict[str, str]:
    pins = {}
    for line in (INFRA / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", line)
            assert m, f"infra/constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(m[1])] = m[2]
    return pins


def _images(node: Any) -> list[str]:
    """Every ``image:`` value in a manifest, at any depth."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image" and isinstance(v, str)] + \
            [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def test_the_dockerfile_builds_on_cuda_with_the_pins_and_the_jobs() -> None:
    text = (INFRA / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M)
    assert base and base[1].startswith("nvidia/cuda:") and "cudnn" in base[1]
    assert f"-t {IMAGE} ." in text.splitlines()[0]  # the build command, first line
    assert "-c constraints.txt" in text and "infra/constraints.txt" in text
    for folder in ("pf_ray", "jobs"):
        assert re.search(rf"^COPY .*\b{folder} \./{folder}$", text, re.M), folder
    ignored = (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
    assert {".venv", ".venv-*", ".git"} <= set(ignored)  # the context stays small
    assert not {"pf_ray", "jobs", "pyproject.toml", "infra"} & set(ignored)


def test_pins_cover_pyproject_and_satisfy_its_ranges() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is not pinned in infra/constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (dep, pins[name])


def test_one_image_tag_everywhere() -> None:
    found = {name: _images(_yaml(name)) for name in MANIFESTS}
    for name, images in found.items():
        assert images and set(images) == {IMAGE}, (name, images)
    for path in sorted((ROOT / "cluster").glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["docker"]["image"] == IMAGE, path.name


def test_the_ray_version_is_the_pinned_one() -> None:
    pinned = _pins()["ray"]
    assert _yaml("raycluster.yaml")["spec"]["rayVersion"] == pinned
    assert _yaml("rayservice.yaml")["spec"]["rayClusterConfig"]["rayVersion"] == pinned


def test_the_raycluster_autoscales_its_gpu_groups() -> None:
    spec = _yaml("raycluster.yaml")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert {"cpu", "gpu-rewrite", "gpu-train"} <= set(groups)
    for name in ("gpu-rewrite", "gpu-train"):
        g = groups[name]
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert g["minReplicas"] == 0 and g["maxReplicas"] >= 1, name
    assert "pf_driver" in spec["headGroupSpec"]["rayStartParams"]["resources"]
    assert "pf_driver" in groups["cpu"]["rayStartParams"]["resources"]
    assert "pf_driver" not in str(groups["gpu-rewrite"]["rayStartParams"])


def test_the_rayjob_runs_a_spec_of_jobs_on_the_raycluster() -> None:
    job = _yaml("rayjob.yaml")
    spec = job["spec"]
    assert spec["clusterSelector"]["ray.io/cluster"] == _yaml("raycluster.yaml")["metadata"]["name"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["pf-ray", "run"]
    path = ROOT / argv[2]  # the image's working dir holds the repository's jobs/
    assert argv[2].startswith("jobs/") and path.is_file(), argv[2]
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    loaded = load_spec(path, env=env)  # validates, nested files included
    assert loaded.kind == "pipeline"
    kinds = [j.kind for j in loaded.jobs]
    assert "rewrite" in kinds and kinds.index("rewrite") < kinds.index("filter")
    rewrite = loaded.jobs[kinds.index("rewrite")]
    assert rewrite.engine.model == env["REWRITER_MODEL"]
    assert rewrite.engine.max_actors == int(env["REWRITE_GPUS"])
    assert '"pf_driver"' in spec["entrypointResources"]


def _function_exists(import_path: str) -> bool:
    module, _, attr = import_path.partition(":")
    found = importlib.util.find_spec(module)
    assert found is not None and found.origin, module
    tree = ast.parse(Path(found.origin).read_text())
    return any(isinstance(n, ast.FunctionDef | ast.ClassDef) and n.name == attr
               for n in tree.body) or any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", None) == attr for t in n.targets)
        for n in tree.body)


def test_the_rayservice_imports_an_app_that_exists() -> None:
    serve = yaml.safe_load(_yaml("rayservice.yaml")["spec"]["serveConfigV2"])
    paths = [a["import_path"] for a in serve["applications"]]
    assert paths and all(_function_exists(p) for p in paths), paths
    assert not _function_exists("pf_ray.serve.app:no_such_app")


@pytest.mark.parametrize("name", ["Dockerfile", *MANIFESTS])
def test_each_file_opens_with_its_command(name: str) -> None:
    first = (INFRA / name).read_text().splitlines()[0]
    assert first.startswith(("# docker build", "# kubectl")), first
