"""The serve spec, its Serve config and the RayService manifest agree (no Ray instance)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pf_ray.cli import main
from pf_ray.config import SpecError, load_spec, parse_spec
from pf_ray.serve.launch import IMPORT_PATH, serve_config
from pf_ray.serve.spec import ServeSpec

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "jobs" / "serve.yaml"


@pytest.fixture(scope="module")
def spec() -> ServeSpec:
    return load_spec(JOB, env={})  # the defaults of ${VAR:-default}


def test_job_spec_is_a_registered_kind(spec: ServeSpec) -> None:
    assert spec.kind == "serve" and spec.model == "s3://pf-ray/models/clever-flamingo"
    assert spec.deployment.autoscaling is not None
    assert spec.deployment.autoscaling.max_replicas == 4
    with pytest.raises(SpecError) as info:
        parse_spec({"kind": "serve", "model": "m", "deployment": {"autoscaling": {
            "min_replicas": 3, "max_replicas": 2}}, "limits": {"max_tokens": "many"},
            "image_fetch": {"allowed_hosts": ["http://x.com/"]}, "route_prefix": "v1"})
    text = str(info.value)
    for field in ("deployment.autoscaling", "limits.max_tokens", "image_fetch.allowed_hosts",
                  "route_prefix"):
        assert field in text, field


def test_checked_in_serve_config_and_rayservice_match_the_job(spec: ServeSpec) -> None:
    from ray.serve.schema import ServeDeploySchema

    expected = serve_config(spec)
    ServeDeploySchema.model_validate(expected)  # Serve's own schema accepts it
    shipped = yaml.safe_load((ROOT / "pf_ray" / "serve" / "serve_config.yaml").read_text())
    assert shipped == expected
    service = yaml.safe_load((ROOT / "infra" / "rayservice.yaml").read_text())
    assert service["kind"] == "RayService"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == expected
    workers = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    gpu = workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert float(gpu) == spec.deployment.gpus_per_replica
    assert workers["maxReplicas"] == spec.deployment.autoscaling.max_replicas
    env = [e["name"] for e in workers["template"]["spec"]["containers"][0]["env"]]
    assert spec.api_key_env in env


def test_build_app_arguments(spec: ServeSpec) -> None:
    from pf_ray.apps import spec_from_args
    from pf_ray.serve.app import app_for, deployment_options

    app = serve_config(spec)["applications"][0]
    assert app["import_path"] == IMPORT_PATH
    inline = spec_from_args(app["args"])
    skip = {"wait", "name"}
    assert inline.model_dump(exclude=skip) == spec.model_dump(exclude=skip)
    from_file = spec_from_args({"spec": str(JOB), "overrides": ["port=9000"],
                                "limits.max_tokens": 640})
    assert (from_file.port, from_file.limits.max_tokens) == (9000, 640)
    opts = deployment_options(spec)
    assert opts["autoscaling_config"] == {
        "min_replicas": 1, "max_replicas": 4, "initial_replicas": 1,
        "target_ongoing_requests": 16.0, "upscale_delay_s": 10.0, "downscale_delay_s": 300.0}
    assert opts["ray_actor_options"] == {"num_cpus": 4.0, "num_gpus": 1.0}
    assert opts["max_ongoing_requests"] == 64 and "num_replicas" not in opts
    fixed = deployment_options(spec.model_copy(update={"deployment": spec.deployment.model_copy(
        update={"autoscaling": None, "num_replicas": 3})}))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert app_for(spec) is not None  # binds without a cluster
    with pytest.raises(ValueError, match="kind"):
        spec_from_args({"spec": str(ROOT / "jobs" / "distort.yaml")})


def test_cli_serve(capsys: pytest.CaptureFixture[str], spec: ServeSpec,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PF_MODELS", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    assert main(["serve", str(JOB), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == serve_config(spec)
    assert main(["serve", str(ROOT / "jobs" / "distort.yaml"), "--print-config"]) == 2
    assert "pf-ray serve takes kind: serve" in capsys.readouterr().err
    assert main(["serve", str(JOB), "port=0", "--print-config"]) == 2
    assert "port" in capsys.readouterr().err
