"""A train spec's failure block reaches Ray Train's FailureConfig; an export's completion
marker decides whether a rerun skips the stage (no Ray cluster, no worker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pf_ray.train.export import EXPORT_MARKER, export_marker, write_export
from pf_ray.train.launch import failure_config, finished_stage
from pf_ray.train.spec import TrainSpec


def spec(tmp: Path, **extra: object) -> TrainSpec:
    return TrainSpec.model_validate({
        "kind": "train", "stage": "rewriter", "model": "tiny", "data": [{"path": "d"}],
        "storage_path": str(tmp / "runs"), "run_name": "r", "export": str(tmp / "export"),
        **extra})


def test_the_failure_block_reaches_ray_trains_failure_config(tmp_path: Path) -> None:
    s = spec(tmp_path, failure={"max_failures": 3, "max_preemption_failures": 10,
                                "preemption_grace_s": 30})
    fc = failure_config(s)
    assert (fc.max_failures, fc.max_preemption_failures, fc.preemption_grace_s) == (3, 10, 30.0)
    assert fc.relax_collectives_on_preemption is False  # pf-ray's checkpoints need every rank
    fc = failure_config(spec(tmp_path))
    assert (fc.max_failures, fc.max_preemption_failures, fc.preemption_grace_s) == (1, -1, 0.0)


def test_top_level_max_failures_still_works(tmp_path: Path) -> None:
    s = spec(tmp_path, max_failures=4)
    assert s.failure.max_failures == 4 and failure_config(s).max_failures == 4
    again = TrainSpec.model_validate(s.model_dump(mode="json"))  # what the workers receive
    assert again.failure == s.failure
    assert spec(tmp_path, max_failures=2, failure={"max_failures": 2}).failure.max_failures == 2
    with pytest.raises(ValidationError, match="failure.max_failures alone"):
        spec(tmp_path, max_failures=2, failure={"max_failures": 5})


def write_run(s: TrainSpec, steps: int) -> list[dict[str, float]]:
    """What a finished run leaves beside its checkpoints: metrics.json."""
    history = [{"step": k, "loss": 5.0 - k} for k in range(1, steps + 1)]
    run = Path(s.storage_path) / s.run_name
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(history))
    return history


def test_a_complete_export_is_skipped_a_partial_one_is_not(tmp_path: Path) -> None:
    from pf_ray.model.loading import build_model

    s = spec(tmp_path, max_steps=4)
    history = write_run(s, 4)
    assert finished_stage(s, 4) is None  # no export yet
    write_export(build_model("tiny").state_dict(), s)
    marker = export_marker(s)
    assert marker is not None and marker["run_name"] == "r" and marker["step"] == 4
    result = finished_stage(s, 4)
    assert result is not None and result.skipped
    assert (result.steps, result.history, result.metrics) == (4, history, history[-1])
    assert result.export == s.export and "skipped" in result.summary()
    assert s.export in result.summary() and result.to_json()["skipped"] is True
    # a spec that trains further, or another run's export: not this stage's result
    assert finished_stage(s, 6) is None
    assert finished_stage(spec(tmp_path, run_name="other"), 4) is None
    assert finished_stage(spec(tmp_path, model="tiny-qwen2"), 4) is None
    # killed before its marker: the folder is all there but the export is not complete
    (Path(s.export) / EXPORT_MARKER).unlink()
    assert (Path(s.export) / "model.safetensors").exists()
    assert finished_stage(s, 4) is None


def test_an_export_being_rewritten_is_not_complete(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from pf_ray.model.loading import build_model

    s = spec(tmp_path)
    state = build_model("tiny").state_dict()
    write_export(state, s, step=7)
    assert export_marker(s)["step"] == 7  # type: ignore[index]

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed while writing the weights")

    monkeypatch.setattr("pf_ray.model.checkpoint.save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        write_export(state, s, step=8)
    assert export_marker(s) is None
