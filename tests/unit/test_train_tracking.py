"""Training metrics to TensorBoard, MLflow and W&B (no Ray instance), and the memory peaks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest
from wandb_records import offline_history

from pf_ray.config import SpecError, parse_spec
from pf_ray.train.tracking import STATE_FILE, TensorBoardBackend, Tracker, open_tracker, scalars


def spec_with(tmp: Path, **extra: Any):  # type: ignore[no-untyped-def]
    return parse_spec({"kind": "train", "stage": "rewriter", "model": "tiny",
                       "data": [{"path": str(tmp / "pairs")}],
                       "storage_path": str(tmp / "runs"), "run_name": "r", **extra})


def rows(steps: range, scale: float) -> list[dict[str, Any]]:
    return [{"step": s, "epoch": 0, "position": s, "loss": scale / s, "lr": 1e-4 * s,
             "grad_norm": 0.5, "tokens_per_s": 100.0 + s, "resumed_from": 0} for s in steps]


def tensorboard_scalars(folder: Path, tag: str = "train/loss") -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def run_attempts(spec: Any, first: range, resumed_from: int, second: range) -> None:
    """Two attempts: the first logs ``first`` and stops; the second resumes."""
    tracker = open_tracker(spec, 0, 0)
    for row in rows(first, 1.0):
        tracker.log(row)
    tracker.close()
    tracker = open_tracker(spec, 0, resumed_from)
    for row in rows(second, 10.0):
        tracker.log(row)
    tracker.close()


def test_scalars_are_the_rows_numbers_but_its_counters() -> None:
    row = {"step": 3, "position": 3, "resumed_from": 2, "loss": 1.5, "epoch": 0,
           "peak_host_bytes": 10, "flag": True, "note": "x"}
    assert scalars(row) == {"train/loss": 1.5, "train/epoch": 0.0,
                            "train/peak_host_bytes": 10.0}


def test_tracking_defaults_to_tensorboard_only(tmp_path: Path) -> None:
    spec = spec_with(tmp_path)
    assert spec.tracking.tensorboard and spec.tracking.mlflow is None
    assert spec.tracking.wandb is None


@pytest.mark.parametrize("tracking, path", [
    ({"tensorbord": True}, "tracking.tensorbord"),
    ({"mlflow": {"uri": "file:///tmp/x"}}, "tracking.mlflow.uri"),
    ({"wandb": {"mode": "sometimes"}}, "tracking.wandb.mode"),
])
def test_tracking_errors_name_the_field(tmp_path: Path, tracking: dict[str, Any],
                                        path: str) -> None:
    with pytest.raises(SpecError, match=path.replace(".", r"\.")):
        spec_with(tmp_path, tracking=tracking)


@pytest.mark.parametrize("backend, module", [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_backend_without_its_package_names_the_extra(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       backend: str, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # find_spec: not installed
    with pytest.raises(SpecError) as err:
        spec_with(tmp_path, tracking={backend: {}})
    assert f"tracking.{backend}" in str(err.value)
    assert "pip install 'pf-ray[tracking]'" in str(err.value)


def test_other_ranks_track_nothing(tmp_path: Path) -> None:
    tracker = open_tracker(spec_with(tmp_path), 1, 0)
    tracker.log(rows(range(1, 2), 1.0)[0])
    tracker.close()
    assert not (tmp_path / "runs").exists()


def test_tensorboard_resumed_run_replaces_the_steps_after_its_checkpoint(tmp_path: Path) -> None:
    # the first attempt logged steps 1-4 and failed; the second resumes from step 2
    run_attempts(spec_with(tmp_path), range(1, 5), 2, range(3, 7))
    folder = tmp_path / "runs" / "r" / "tensorboard"
    assert len(list(folder.iterdir())) == 2  # one event file per attempt
    loss = tensorboard_scalars(folder)
    expected = {s: 1.0 / s for s in (1, 2)} | {s: 10.0 / s for s in range(3, 7)}
    assert loss == pytest.approx(expected)  # TensorBoard stores float32
    assert tensorboard_scalars(folder, "train/tokens_per_s")[6] == 106.0


def test_event_files_written_locally_are_copied_at_flush(tmp_path: Path) -> None:
    """A URI run folder: the files are written in a local folder and copied at flush."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    tracker = Tracker({"tensorboard": TensorBoardBackend(str(local / "tensorboard"), 0)},
                      str(local), (pafs.LocalFileSystem(), str(remote)), ["tensorboard"])
    for row in rows(range(1, 3), 1.0):
        tracker.log(row)
    tracker.flush()
    assert tensorboard_scalars(remote / "tensorboard") == pytest.approx({1: 1.0, 2: 0.5})
    tracker.log(rows(range(3, 4), 1.0)[0])
    tracker.close()
    assert sorted(tensorboard_scalars(remote / "tensorboard")) == [1, 2, 3]


def test_mlflow_file_store_continues_the_same_run(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    spec = spec_with(tmp_path, tracking={"tensorboard": False,
                                         "mlflow": {"tracking_uri": uri, "experiment": "t"}})
    run_attempts(spec, range(1, 5), 2, range(3, 7))
    state = json.loads((tmp_path / "runs" / "r" / STATE_FILE).read_text())
    run_id = state["mlflow"]["run_id"]
    client = MlflowClient(tracking_uri=uri)
    loss = [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")]
    # each step once; 3 and 4 as the first attempt logged them (see pf_ray.train.tracking)
    assert sorted(loss) == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25), (5, 2.0), (6, 10 / 6)]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["optim.lr"] == "0.0001"
    assert run.data.tags["pf_ray.stage"] == "rewriter"
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_wandb_offline_run_is_written_under_the_run_folder(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    spec = spec_with(tmp_path, tracking={"tensorboard": False,
                                         "wandb": {"project": "t", "mode": "offline"}})
    tracker = open_tracker(spec, 0, 0)
    for row in rows(range(1, 4), 1.0):
        tracker.log(row)
    tracker.close()
    logged = offline_history(tmp_path / "runs" / "r")
    assert [(r["_step"], r["train/loss"]) for r in logged] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    state = json.loads((tmp_path / "runs" / "r" / STATE_FILE).read_text())
    assert list((tmp_path / "runs" / "r" / "wandb").glob(f"offline-run-*-{state['wandb']['id']}"))


PEAK_PROBE = """
import json
import numpy as np
from pf_ray.train.memory import PeakMemory, status_bytes
memory = PeakMemory()
memory.read()
before = status_bytes("VmRSS") - memory.baseline
block = np.ones(25_000_000)  # 200 MB, touched, alive while read
first = memory.read()
del block
memory.read()  # the step in which the block was freed
second = memory.read()
print(json.dumps({"before": before, "first": first, "second": second}))
"""


def test_peak_memory_sees_an_allocation_and_resets_per_read() -> None:
    """In a fresh process: in the test process, after a thousand tests, other threads (Ray's)
    and evictable file pages move VmRSS / VmHWM by hundreds of MB (it failed in CI)."""
    import json
    import subprocess
    import sys

    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux: reads VmRSS / VmHWM from /proc/self/status")
    out = subprocess.run([sys.executable, "-c", PEAK_PROBE], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    probe = json.loads(out.strip().splitlines()[-1])
    first, second = probe["first"], probe["second"]
    assert first["step_peak_host_bytes"] >= probe["before"] + 190e6, probe
    assert second["peak_host_bytes"] == first["peak_host_bytes"]  # the running peak stays
    assert second["step_peak_host_bytes"] < 100e6, probe  # this step allocated nothing
    assert "peak_gpu_bytes" not in second
