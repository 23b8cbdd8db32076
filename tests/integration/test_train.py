"""Training on Ray Train V2 with FSDP2 on gloo (2 CPU workers), the tiny preset."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pf_ray.config import parse_spec
from pf_ray.jobs.runner import run_job
from pf_ray.model.checkpoint import load_folder_tokenizer, load_pretrained
from pf_ray.model.prompts import encode_rewrite
from pf_ray.train.launch import read_history

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def train_spec(pairs: str, tmp: Path, name: str, **extra: object):  # type: ignore[no-untyped-def]
    base = {"kind": "train", "stage": "rewriter", "model": "tiny", "data": [{"path": pairs}],
            "batch_size": 2, "max_length": 320, "checkpoint_every": 2,
            "scaling": {"num_workers": 2, "cpus_per_worker": 1},
            "storage_path": str(tmp / "runs"), "run_name": name, "ray": {"progress": False}}
    base.update(extra)
    return parse_spec(base)


def weights(folder: str) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_pretrained(folder).state_dict().items()}


def test_loss_falls_on_a_fixed_batch_with_fsdp(four_pairs: str, tmp_path: Path) -> None:
    # 4 pairs repeated 14 times, 2 per worker: every step sees the same global batch
    # max_length 448: one pair's revised response starts at token 344 (at 320 it would
    # carry no label token and be skipped)
    spec = train_spec(four_pairs, tmp_path, "fixed", samples_per_epoch=56, max_length=448,
                      optim={"lr": 3e-3}, export=str(tmp_path / "export"))
    (result,) = run_job(spec)
    losses = [r["loss"] for r in result.history]
    assert result.steps == 14 and len(losses) == 14
    assert losses[-1] < 0.7 * losses[0], losses
    run = tmp_path / "runs" / "fixed"
    assert {"metrics.csv", "metrics.json", "loss.png"} <= {p.name for p in run.iterdir()}
    # export -> load -> the same outputs, adapters or merged
    merged = tmp_path / "merged"
    spec_m = train_spec(four_pairs, tmp_path, "fixed", export=str(merged), export_lora="merged",
                        max_length=448)
    from pf_ray.train.export import write_export

    model = load_pretrained(tmp_path / "export")
    write_export(model.state_dict(), spec_m)  # merge the trained adapters into the LM
    merged_model = load_pretrained(merged)
    assert merged_model.config.lora is None and model.config.lora is not None
    tok = load_folder_tokenizer(tmp_path / "export")
    enc = encode_rewrite(tok, "What is it?", "red ball", images=0)
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        a = model(ids).logits
        b = merged_model(ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_injected_failure_resumes_to_the_same_weights(pairs: str, tmp_path: Path) -> None:
    common = {"max_steps": 6, "optim": {"lr": 1e-3}}
    (clean,) = run_job(train_spec(pairs, tmp_path, "clean", export=str(tmp_path / "a"),
                                  **common))
    (failed,) = run_job(train_spec(pairs, tmp_path, "failed", export=str(tmp_path / "b"),
                                   fail_at_step=3, max_failures=1, **common))
    assert clean.steps == failed.steps == 6
    assert (tmp_path / "runs" / "failed" / "_injected_failure").exists()
    assert [r["resumed_from"] for r in failed.history][-1] == 2  # restarted from step 2
    a, b = weights(str(tmp_path / "a")), weights(str(tmp_path / "b"))
    initial = weights_of_fresh_tiny()
    changed = [k for k in a if not torch.equal(a[k], initial[k])]
    assert changed, "training changed no weight"
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_a_finished_stage_is_skipped_on_rerun(pairs: str, tmp_path: Path) -> None:
    spec = train_spec(pairs, tmp_path, "done", max_steps=2, export=str(tmp_path / "export"))
    t = time.time()
    (first,) = run_job(spec)
    first_s = time.time() - t
    assert not first.skipped and first.steps == 2
    marker = json.loads((tmp_path / "export" / "_export.json").read_text())
    assert (marker["run_name"], marker["step"]) == ("done", 2)

    def files() -> dict[str, int]:
        return {str(p): p.stat().st_mtime_ns for p in tmp_path.rglob("*")
                if "runs" in p.parts or "export" in p.parts}

    before = files()
    t = time.time()
    (again,) = run_job(spec)
    again_s = time.time() - t
    assert again.skipped and "skipped" in again.summary() and str(tmp_path / "export") in (
        again.summary())
    assert (again.steps, again.history, again.checkpoint) == (
        2, first.history, first.checkpoint)
    assert files() == before  # no worker ran: no metrics, checkpoint or export written
    assert again_s < first_s / 2, (again_s, first_s)

    # a half-written export (killed before its marker) is not skipped: the run resumes
    # from its last checkpoint (step 2: no step left) and exports again, marker last
    (tmp_path / "export" / "_export.json").unlink()
    (third,) = run_job(spec)
    assert not third.skipped and third.steps == 2
    assert (tmp_path / "export" / "_export.json").exists()


def tensorboard_scalars(folder: Path, key: str) -> dict[int, float]:
    """``train/<key>`` per step as TensorBoard's own reader sees the event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(f"train/{key}")}


def test_tensorboard_mlflow_and_wandb_follow_metrics_json(pairs: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """2 workers, a failure after step 3 and a resume from the step-2 checkpoint: TensorBoard,
    an MLflow file store and an offline W&B run each hold steps 1-6 once, as metrics.json."""
    from mlflow.tracking import MlflowClient
    from wandb_records import offline_history

    uri = (tmp_path / "mlruns").as_uri()
    spec = train_spec(pairs, tmp_path, "tracked", max_steps=6, fail_at_step=3, max_failures=1,
                      optim={"lr": 1e-3},
                      tracking={"mlflow": {"tracking_uri": uri, "experiment": "pf"},
                                "wandb": {"project": "pf", "mode": "offline"}})
    (result,) = run_job(spec)
    rows = {r["step"]: r for r in result.history}
    assert sorted(rows) == list(range(1, 7)) and result.history[-1]["resumed_from"] == 2
    assert all(r["peak_host_bytes"] > 0 for r in rows.values())
    run = tmp_path / "runs" / "tracked"
    # TensorBoard: the resumed attempt's event file purges the failed one's step 3
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "step_s", "data_wait_s",
                "peak_host_bytes"):
        expected = {s: r[key] for s, r in rows.items()}
        assert tensorboard_scalars(run / "tensorboard", key) == pytest.approx(expected,
                                                                              rel=1e-6), key
    # MLflow: one run, each step once; step 3 as the failed attempt logged it (the same batch
    # from the same state: the same loss up to float noise)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("pf").experiment_id])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == "tracked"
    for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
        logged = client.get_metric_history(mlflow_run.info.run_id, f"train/{key}")
        assert sorted(m.step for m in logged) == list(range(1, 7)), key
        if key != "tokens_per_s":  # a timing: not the same in two attempts
            assert {m.step: m.value for m in logged} == pytest.approx(
                {s: r[key] for s, r in rows.items()}, rel=1e-4), key
    # W&B offline: one offline run per attempt, the same run id; the resumed one from step 3
    wandb_rows = offline_history(run)
    resumed = [r for r in wandb_rows if r["_step"] >= 3][-4:]
    assert [r["_step"] for r in resumed] == [3, 4, 5, 6]
    assert [r["train/loss"] for r in resumed] == pytest.approx([rows[s]["loss"]
                                                                for s in range(3, 7)])
    assert len({p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}) == 1


def weights_of_fresh_tiny() -> dict[str, torch.Tensor]:
    from pf_ray.model.loading import build_model

    return {k: v.float() for k, v in build_model("tiny", seed=0).state_dict().items()}


def committed_step(run: Path) -> int | None:
    """The step of the latest checkpoint Ray Train committed in ``run``, if any."""
    from ray.train import Result

    try:
        metrics = Result.from_path(str(run)).metrics
    except (RuntimeError, ValueError):  # no snapshot yet, or one being written
        return None
    return int(metrics["step"]) if metrics else None


def test_killed_run_resumes_mid_epoch(ray_session: str, pairs: str, tmp_path: Path) -> None:
    spec_file = tmp_path / "train.yaml"
    spec_file.write_text(json.dumps({
        "kind": "train", "stage": "rewriter", "model": "tiny", "data": [{"path": pairs}],
        "batch_size": 2, "max_length": 320, "checkpoint_every": 2, "max_steps": 10,
        "scaling": {"num_workers": 2, "cpus_per_worker": 1},
        "storage_path": str(tmp_path / "runs"), "run_name": "killed"}))
    env = {**os.environ, "RAY_ADDRESS": ray_session, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "pf_ray.cli", "run", str(spec_file),
                             "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "runs" / "killed"
    # A checkpoint's files land in storage when a worker reports it; Ray Train commits it
    # (checkpoint_manager_snapshot.json) when the controller next drains the reports, up
    # to RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s) later. Only committed checkpoints are
    # resumed, so kill once Ray has committed one (files alone raced: CI resumed from 0).
    deadline = time.time() + 300
    while time.time() < deadline and committed_step(run) is None:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # let Ray reap the dead driver's workers
    committed = committed_step(run)  # re-read: one more may have been committed meanwhile
    saved = {json.loads(p.read_text())["step"] for p in run.glob("checkpoint_*/train_state.json")}
    assert committed is not None and committed in saved and max(saved) < 10
    spec = parse_spec(json.loads(spec_file.read_text()))
    (result,) = run_job(spec)
    assert result.steps == 10
    history = read_history(spec)
    start = history[-1]["resumed_from"]
    assert start == committed  # the killed run's last committed checkpoint, not scratch
    resumed = [r for r in history if r["resumed_from"] == start]
    assert resumed[0]["step"] == start + 1  # the step counter continued
    assert resumed[0]["position"] == start + 1  # and so did the data position (mid-epoch)
    assert resumed[0]["epoch"] == 0
    assert [r["step"] for r in history] == list(range(1, 11))


def test_checkpoints_metrics_and_export_in_s3(pairs: str, s3_server, s3_bucket: str,
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PF_RAY_CACHE", str(tmp_path / "cache"))
    storage = {"endpoint_url": s3_server.endpoint}
    spec = train_spec(pairs, tmp_path, "s3run", max_steps=2, checkpoint_every=1,
                      storage=storage, storage_path=f"{s3_bucket}/runs",
                      export=f"{s3_bucket}/models/rw", scaling={"num_workers": 1})
    (result,) = run_job(spec)
    assert result.steps == 2 and [r["step"] for r in result.history] == [1, 2]
    from pf_ray.specs import StorageConfig
    from pf_ray.storage import exists, resolve

    fs, base = resolve(f"{s3_bucket}/runs/s3run", StorageConfig(**storage))
    assert exists(fs, f"{base}/metrics.csv") and exists(fs, f"{base}/loss.png")
    # event files: written on the worker, copied to the run folder at checkpoints and the end
    from pf_ray.storage import list_files, read_bytes

    (events,) = list_files(fs, f"{base}/tensorboard")
    local = tmp_path / "tensorboard"
    local.mkdir()
    (local / events.rsplit("/", 1)[-1]).write_bytes(read_bytes(fs, events))
    assert tensorboard_scalars(local, "loss") == pytest.approx(
        {r["step"]: r["loss"] for r in result.history}, rel=1e-6)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    model = load_pretrained(f"{s3_bucket}/models/rw")
    assert model.config.lora is not None
    assert exists(fs, f"{base.removesuffix('runs/s3run')}models/rw/_export.json")
    (again,) = run_job(spec)  # its export is complete: skipped, read back from the store
    assert again.skipped and again.steps == 2 and again.checkpoint == result.checkpoint


def break_images(root: Path, every: int) -> int:
    """Overwrite the image bytes of every ``every``-th row with bytes that are no image."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    broken = 0
    for path in sorted((root / "shards").glob("*.parquet")):
        table = pq.read_table(path)
        data = table.column("image_bytes").to_pylist()
        for i in range(0, len(data), every):
            if data[i] is not None:
                data[i], broken = b"not an image", broken + 1
        col = table.schema.get_field_index("image_bytes")
        table = table.set_column(col, table.schema.field(col), pa.array(data, pa.binary()))
        pq.write_table(table, path)
    return broken


def test_cli_training_output_reads_plainly(tmp_path: Path) -> None:
    """``pf-ray run`` with its output piped (no terminal), on its own local Ray instance:
    one line per step from rank 0, no Ray Train report lines, no escape sequences; the
    images that fail to load are counted in the metrics."""
    syn = tmp_path / "syn"
    run_job(parse_spec({"kind": "synthetic", "n": 40, "rows_per_shard": 40,
                        "output": {"path": str(syn)}}), executor="local")
    assert break_images(syn, every=4) > 0
    spec_file = tmp_path / "train.yaml"
    spec_file.write_text(json.dumps({
        "kind": "train", "stage": "clever_s1", "model": "tiny", "data": [{"path": str(syn)}],
        "batch_size": 4, "max_length": 320, "max_images": 3, "max_steps": 3,
        "checkpoint_every": 2, "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "storage_path": str(tmp_path / "runs"), "run_name": "plain",
        "ray": {"num_cpus": 4}}))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_DATA_DISABLE_PROGRESS_BARS", "RAY_COLOR_PREFIX")}
    proc = subprocess.run([str(Path(sys.executable).parent / "pf-ray"), "run", str(spec_file)],
                          env={**env, "RAY_AUTH_MODE": "disabled"}, cwd=tmp_path,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:]
    for k in (1, 2, 3):
        assert len(re.findall(rf"\] step {k}/3 ", out)) == 1, out[-4000:]
    assert "Reporting training result" not in out
    assert "Failed to query Ray Train Controller" not in out  # the State API is served
    assert "\x1b[" not in out, [line for line in out.splitlines() if "\x1b[" in line][:5]
    assert "train plain: 3 step(s)" in out
    history = json.loads((tmp_path / "runs" / "plain" / "metrics.json").read_text())
    counts = [r["images_unreadable"] for r in history]
    assert counts == sorted(counts) and counts[-1] > 0, counts  # a running total


def mid_size_folder(root: Path) -> tuple[Path, int]:
    """The ``mid`` preset (random, seeded) saved as a model folder; returns (folder, bytes
    of its weights)."""
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer

    model = build_model("mid", seed=0)
    folder = root / "mid"
    save_pretrained(model, folder, model_tokenizer("mid"))
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return folder, size


def test_mid_size_model_trains_with_fp32_masters_and_sharded_construction(
        pairs: str, tmp_path: Path) -> None:
    """A bf16 model folder of ~220M parameters (418 MiB), 2 gloo workers, a stage-3-sized
    lr (1e-5): the checkpoint's trainable weights and optimizer states are fp32, LoRA A
    moved by less than bf16 can represent (a bf16 master would not have moved), and
    building the model grew each rank's host memory by less than the full model's bytes."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    folder, model_bytes = mid_size_folder(tmp_path)
    spec = train_spec(pairs, tmp_path, "mid", model=str(folder), bf16=True, batch_size=1,
                      activation_checkpointing=True,  # as the 9B job files
                      max_length=160, max_steps=3, checkpoint_every=3,
                      optim={"lr": 1e-5}, data=[{"path": pairs, "samples": 6}])
    (result,) = run_job(spec)
    assert result.steps == 3
    first = result.history[0]
    print(f"mid-size model: {model_bytes / 2**20:.0f} MiB of weights; rank 0 built it with "
          f"{first['build_host_bytes'] / 2**20:.0f} MiB of private memory")
    assert 0 < first["build_host_bytes"] < model_bytes, (first["build_host_bytes"], model_bytes)
    (ckpt,) = [p for p in (tmp_path / "runs" / "mid").glob("checkpoint_*") if p.is_dir()]
    meta = dcp.FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    tensors = {k: m.properties.dtype for k, m in meta.items() if hasattr(m, "properties")}
    params = {k: d for k, d in tensors.items() if k.startswith("model.")}
    states = {k: d for k, d in tensors.items() if k.startswith("optim.state.")
              and not k.endswith(".step")}
    assert params and any(".lora_A." in k for k in params)
    assert set(params.values()) == {torch.float32}, params
    assert states and set(states.values()) == {torch.float32}
    # LoRA A after the run (fp32 master) against the folder's initial values
    initial = {k: v.float() for k, v in load_file(
        str(folder / "adapter" / "adapter_model.safetensors")).items()}
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    ours = "model.lang_encoder.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    state = {ours: torch.empty(meta[ours].size, dtype=torch.float32)}
    dcp.load(state, checkpoint_id=str(ckpt), no_dist=True)
    after, before = state[ours], initial[key]
    moved = after != before
    assert moved.float().mean() > 0.9  # the fp32 master moved almost everywhere
    unseen_in_bf16 = after.bfloat16() == before.bfloat16()
    assert (unseen_in_bf16 & moved).float().mean() > 0.5  # most moves round away in bf16
