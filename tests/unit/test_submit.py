"""``pf-ray submit``'s runtime env, built without a cluster: what is sent, what is printed.

The end-to-end submission to a real head is ``tests/integration/test_submit_head.py``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from pf_ray.cli import main
from pf_ray.config import SpecError
from pf_ray.submit import build_submission

ROOT = Path(__file__).resolve().parents[2]
SECRET = "value-that-must-not-print"


def test_from_the_repo_root_the_working_dir_carries_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    env = {"PF_WORKDIR": "/data/pf", "AWS_SECRET_ACCESS_KEY": SECRET, "UNRELATED": "x",
           "AWS_REGION": "eu-west-1"}
    sub = build_submission("jobs/quickstart_pipeline.yaml", ["jobs.0.n=90"], environ=env)
    assert sub.runtime_env["working_dir"] == str(ROOT)
    assert "py_modules" not in sub.runtime_env  # pf_ray/ is inside the working dir
    assert shlex.split(sub.entrypoint) == ["python", "-m", "pf_ray.cli", "run",
                                           "jobs/quickstart_pipeline.yaml", "jobs.0.n=90",
                                           "--no-progress"]
    # the ${VAR}s the spec uses, its credential names, the standard ones: if set here
    assert sub.runtime_env["env_vars"] == {"PF_WORKDIR": "/data/pf",
                                           "AWS_SECRET_ACCESS_KEY": SECRET,
                                           "AWS_REGION": "eu-west-1"}
    text = sub.describe()
    assert "PF_WORKDIR" in text and "AWS_SECRET_ACCESS_KEY" in text
    assert SECRET not in text and "/data/pf" not in text and "UNRELATED" not in text
    assert sub.entrypoint_num_cpus == 0 and sub.entrypoint_resources is None


def test_a_spec_elsewhere_takes_the_package_along(tmp_path: Path) -> None:
    spec = tmp_path / "syn.yaml"
    spec.write_text("kind: synthetic\nn: 10\noutput: {path: \"${OUT_DIR}\"}\n")
    sub = build_submission(spec, working_dir=tmp_path, environ={"OUT_DIR": "/o"},
                           extra_env=["HF_HOME"], driver_resource="pf_driver")
    assert sub.runtime_env["py_modules"] == [str(ROOT / "pf_ray")]
    assert sub.runtime_env["env_vars"] == {"OUT_DIR": "/o"}  # HF_HOME asked for, not set
    assert shlex.split(sub.entrypoint)[4] == "syn.yaml"
    assert sub.entrypoint_resources == {"pf_driver": 1.0}
    assert "py_modules" not in build_submission(
        spec, working_dir=tmp_path, environ={"OUT_DIR": "/o"}, include_package=False
    ).runtime_env


def test_the_spec_is_validated_here(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: synthetic\nn: lots\noutput: {path: x}\n")
    with pytest.raises(SpecError, match="n:"):
        build_submission(bad, working_dir=tmp_path, environ={})
    with pytest.raises(SpecError, match="OUT_DIR"):  # an unset ${VAR} without a default
        build_submission(_write(tmp_path), environ={}, working_dir=tmp_path)
    with pytest.raises(ValueError, match="inside the working dir"):
        build_submission(ROOT / "jobs" / "synthetic.yaml", working_dir=tmp_path, environ={})


def _write(tmp_path: Path) -> Path:
    spec = tmp_path / "needs_var.yaml"
    spec.write_text("kind: synthetic\noutput: {path: \"${OUT_DIR}\"}\n")
    return spec


def test_cli_needs_an_http_address(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["submit", str(ROOT / "jobs" / "synthetic.yaml")]) == 2
    assert "--address http://HEAD:8265" in capsys.readouterr().err
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert main(["submit", str(ROOT / "jobs" / "synthetic.yaml")]) == 2


def test_an_unreachable_head_exits_1(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["submit", "jobs/synthetic.yaml", "--address", "http://127.0.0.1:9"]) == 1
    assert "cannot submit to http://127.0.0.1:9" in capsys.readouterr().err


def test_api_key_env_fields_are_passed_by_name() -> None:
    key = "sk-" + "k" * 20
    sub = build_submission(ROOT / "jobs" / "eval_politeness.yaml", working_dir=ROOT,
                           environ={"LLAVA_API_KEY": key, "PF_RAY_CACHE": "/Users/x/.cache"})
    assert sub.runtime_env["env_vars"]["LLAVA_API_KEY"] == key
    assert "LLAVA_API_KEY" in sub.env_names and key not in sub.describe()
    assert "PF_RAY_CACHE" not in sub.runtime_env["env_vars"]  # a laptop path stays home
