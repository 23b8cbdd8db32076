"""Job specs: variables, overrides, and errors that name path, received and allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pf_ray.cli import main
from pf_ray.config import (
    SpecError,
    apply_overrides,
    expand_env,
    load_spec,
    parse_spec,
)
from pf_ray.ingest.spec import IngestSpec, SyntheticSpec
from pf_ray.specs import spec_hash

GOOD = {"kind": "synthetic", "output": {"path": "/tmp/x"}, "n": 10}


def test_env_expansion_with_defaults() -> None:
    env = {"BUCKET": "b1", "EMPTY": ""}
    data = {"a": "s3://${BUCKET}/x", "b": ["${MISSING:-dflt}", "${EMPTY:-e}"], "c": 3}
    assert expand_env(data, env) == {"a": "s3://b1/x", "b": ["dflt", "e"], "c": 3}


def test_unset_variable_is_an_error_with_its_path() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({**GOOD, "output": {"path": "${NOPE_NOT_SET}"}}, env={})
    assert info.value.problems == [
        "output.path: environment variable NOPE_NOT_SET is not set "
        "(write ${NOPE_NOT_SET:-default} to give a default)"]


def test_overrides_parse_yaml_values_and_index_lists() -> None:
    data = {"kind": "pipeline", "jobs": [dict(GOOD)]}
    apply_overrides(data, ["jobs.0.n=25", "jobs.0.output.mode=overwrite", "name=x y"])
    spec = parse_spec(data)
    assert spec.kind == "pipeline"
    assert spec.jobs[0].n == 25 and spec.jobs[0].output.mode == "overwrite"
    assert spec.name == "x y"
    with pytest.raises(SpecError, match="expected dotted.key=value"):
        apply_overrides({}, ["novalue"])


def test_three_mistakes_three_errors() -> None:
    bad = {"kind": "synthetic", "output": {"path": "x", "mode": "sometimes"}, "seed": "abc",
           "colour": "red"}
    with pytest.raises(SpecError) as info:
        parse_spec(bad)
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert any(p.startswith("output.mode: received 'sometimes'; allowed: 'resume'")
               for p in problems)
    assert any(p.startswith("seed: ") and "'abc'" in p for p in problems)
    assert any(p.startswith("colour: unknown key") and "allowed keys:" in p and "seed" in p
               for p in problems)


def test_kind_errors() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"kind": "distortt"})
    assert info.value.problems == [
        "kind: unknown kind 'distortt'; allowed: 'synthetic', 'ingest', 'distort', 'rewrite', "
        "'filter', 'train', 'serve', 'eval', 'pipeline'"]
    with pytest.raises(SpecError, match="kind: required field is missing"):
        parse_spec({"n": 3})


def test_nested_errors_in_pipelines_and_spec_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: synthetic\noutput: {path: out}\nn: -1\n")
    (tmp_path / "p.yaml").write_text(
        "kind: pipeline\njobs:\n  - a.yaml\n  - {kind: ingest, output: {path: o},"
        " source: {adapter: llava, path: x.json}}\n  - 7\n")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "p.yaml")
    problems = info.value.problems
    assert "jobs.2: expected a spec file path or a job mapping (received 7)" in problems
    assert any(p.startswith("jobs.1.source.adapter: received 'llava'; allowed:")
               for p in problems)
    # the referenced file's own errors are reported too once the pipeline itself is valid
    (tmp_path / "p2.yaml").write_text("kind: pipeline\njobs: [a.yaml, missing.yaml]\n")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "p2.yaml")
    assert any(p.startswith("jobs.0 (a.yaml): n: ") for p in info.value.problems)
    assert "jobs.1: spec file not found (received 'missing.yaml')" in info.value.problems


def test_pipeline_resolves_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: synthetic\noutput: {path: out}\nn: 5\n")
    (tmp_path / "p.yaml").write_text("kind: pipeline\njobs: [a.yaml]\n")
    spec = load_spec(tmp_path / "p.yaml")
    assert isinstance(spec.jobs[0], SyntheticSpec) and spec.jobs[0].n == 5


def test_storage_and_ingest_fields() -> None:
    spec = parse_spec({"kind": "ingest", "output": {"path": "s3://b/o"},
                       "source": {"adapter": "sharegpt", "path": "s3://b/sg_*.json"},
                       "storage": {"endpoint_url": "http://127.0.0.1:9000", "client": "s3fs"}})
    assert isinstance(spec, IngestSpec) and spec.storage.client == "s3fs"
    with pytest.raises(SpecError, match="storage.endpoint_url: must start with http"):
        parse_spec({**GOOD, "storage": {"endpoint_url": "127.0.0.1:9000"}})


def test_spec_hash_ignores_where_the_job_runs() -> None:
    a = parse_spec(GOOD)
    b = parse_spec({**GOOD, "output": {"path": "s3://elsewhere"}, "ray": {"address": "auto"}})
    c = parse_spec({**GOOD, "n": 11})
    assert spec_hash(a) == spec_hash(b) != spec_hash(c)


def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("kind: synthetic\noutput: {path: out}\n")
    bad.write_text("kind: synthetic\noutput: {path: out, mode: x}\nseed: abc\nextra: 1\n")
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "3 error(s)" in err and "output.mode" in err and "seed" in err and "extra" in err


def test_every_shipped_spec_validates() -> None:
    root = Path(__file__).parents[2] / "jobs"
    specs = sorted(root.glob("*.yaml"))
    assert specs, "jobs/ holds no spec"
    env = {"PF_BUCKET": "s3://bucket", "LLAVA_JSON": "s3://b/llava.json"}
    for path in specs:
        load_spec(path, env=env)
