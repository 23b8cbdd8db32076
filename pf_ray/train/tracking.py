"""Per-step training metrics where users look: TensorBoard (on by default), MLflow, W&B.

Rank 0's rows (the ones ``metrics.json`` holds) are logged at every optimizer step: every
number in the row except ``step`` / ``position`` / ``resumed_from``, named ``train/<key>``
(``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/tokens_per_s``, ``train/step_s``,
``train/data_wait_s``, ``train/peak_host_bytes``...), at the row's ``step``.

- **TensorBoard** event files (PyTorch's ``SummaryWriter``; ``tensorboard --logdir`` reads them)
  under ``storage_path/run_name/tensorboard/``. With a local ``storage_path`` they are written
  there directly (live, flushed every 30 s and at each checkpoint); with a URI (``s3://``),
  where appending to an object is not possible, they are written in a local folder on the
  worker and copied to the run folder at each checkpoint and at the end, as
  ``metrics.json`` is.
- **MLflow** (``tracking.mlflow``) through Ray's ``setup_mlflow``: one MLflow run per
  training run, the spec's fields as its parameters.
- **W&B** (``tracking.wandb``) through Ray's ``setup_wandb``: one W&B run per training run;
  ``mode: offline`` writes it under the run folder's ``wandb/`` (copied like the event files
  from a worker writing to a URI), for ``wandb sync``.

Resuming (a restart after a failure, or a rerun with the same ``run_name``) continues the
same curves. ``tracking.json`` beside the checkpoints keeps the MLflow run id and the W&B run
id, so a resumed run logs into the same runs. Steps after the checkpoint a run resumes from
may have been logged by the attempt that failed; they are trained again, and:

- TensorBoard: each attempt writes its own event file, which opens with a purge at
  ``resumed_from + 1``; TensorBoard's readers then drop the earlier attempt's events from that
  step on, so every step shows once, with the values ``metrics.json`` holds.
- MLflow and W&B keep every value logged (a metric's history cannot be edited): a resumed run
  does not log the steps the run already holds again, so every step shows once there too;
  those few steps keep the failed attempt's values (the same batches from the same state:
  equal up to floating-point noise).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol

from pf_ray.storage import exists, join, read_bytes, resolve, write_bytes_atomic
from pf_ray.train.spec import TRACKING_EXTRA, MlflowTracking, TrainSpec, WandbTracking

log = logging.getLogger(__name__)

STATE_FILE = "tracking.json"
NOT_TRACKED = frozenset({"step", "position", "resumed_from"})
PREFIX = "train/"
TB_FLUSH_SECS = 30


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics row to track, named ``train/<key>``."""
    return {PREFIX + k: float(v) for k, v in row.items()
            if k not in NOT_TRACKED and isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat_params(spec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A spec as flat ``a.b`` parameters (MLflow's params are flat strings of <= 6000
    characters; lists are written as JSON, long values cut at 500 characters)."""
    out: dict[str, str] = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        elif value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = text[:500]
    return out


class Backend(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class TensorBoardBackend:
    """Event files in ``logdir``, one per attempt, purged from ``resumed_from + 1``."""

    def __init__(self, logdir: str, resumed_from: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # its flush() waits for the queued events (tensorboardX's does not)
        self.writer = SummaryWriter(logdir, purge_step=resumed_from + 1,
                                    flush_secs=TB_FLUSH_SECS)

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def tracking_module(name: str) -> Any:
    """A module of the ``tracking`` extra (mlflow-skinny, wandb), imported by name when a
    spec's tracking block asks for it: a runtime-only install does not have them, and gets
    an error naming the extra (the spec's validator says so before any worker starts)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{name} is not installed: {TRACKING_EXTRA}") from exc


class MlflowBackend:
    """One MLflow run per training run, continued by a resumed run (``state["run_id"]``)."""

    def __init__(self, cfg: MlflowTracking, spec: TrainSpec, state: dict[str, Any]) -> None:
        from ray.air.integrations.mlflow import setup_mlflow

        mlflow = tracking_module("mlflow")

        uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri and (uri.startswith("file:") or "://" not in uri):
            # MLflow 3 refuses its file store unless asked: the spec asked for it by name
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        run_id = state.get("run_id") if state.get("tracking_uri") == uri else None
        if run_id:
            mlflow.set_tracking_uri(uri)
            try:
                mlflow.start_run(run_id=run_id)  # setup_mlflow keeps an active run
            except mlflow.exceptions.MlflowException as exc:  # deleted meanwhile: a new run
                log.warning("MLflow run %s cannot be continued (%s): starting a new one",
                            run_id, exc)
                run_id = None
        setup_mlflow(
            # parameters once, at the first attempt (a rerun may change some: MLflow refuses
            # to change a logged parameter)
            config=None if run_id else flat_params(spec.model_dump(mode="json")),
            tracking_uri=uri, experiment_name=cfg.experiment,
            run_name=cfg.run_name or spec.run_name, create_experiment_if_not_exists=True,
            tags={"pf_ray.stage": spec.stage, **cfg.tags}, rank_zero_only=False)
        self.mlflow = mlflow
        self.run_id = mlflow.active_run().info.run_id
        self.client = tracking_module("mlflow.tracking").MlflowClient(
            tracking_uri=mlflow.get_tracking_uri())
        self.metric = tracking_module("mlflow.entities").Metric
        self.state = {"tracking_uri": uri, "run_id": self.run_id}
        self.logged = _last_step(self.client, self.run_id) if run_id else 0

    def log(self, values: dict[str, float], step: int) -> None:
        if step <= self.logged:
            return  # the run holds this step already (see the module docstring)
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self.metric(k, v, now, step)
                                                    for k, v in values.items()])

    def flush(self) -> None:
        pass  # every log is written when it is made

    def close(self) -> None:
        self.mlflow.end_run()


def _last_step(client: Any, run_id: str) -> int:
    history = client.get_metric_history(run_id, PREFIX + "loss")
    return max((m.step for m in history), default=0)


class WandbBackend:
    """One W&B run per training run, its id kept so that a resumed run continues it."""

    def __init__(self, cfg: WandbTracking, spec: TrainSpec, state: dict[str, Any],
                 local_root: str) -> None:
        from ray.air.integrations.wandb import setup_wandb

        # Ray's setup reads the mode from the environment (an offline run needs no API key)
        os.environ["WANDB_MODE"] = cfg.mode
        run_id = state.get("id") or uuid.uuid4().hex[:12]
        self.run = setup_wandb(
            config=spec.model_dump(mode="json"), rank_zero_only=False, trial_id=run_id,
            trial_name=spec.run_name, project=cfg.project, entity=cfg.entity, mode=cfg.mode,
            group=cfg.group, tags=cfg.tags or None, dir=local_root, resume="allow",
            reinit="finish_previous")  # Ray passes True, which W&B deprecated
        self.state = {"id": run_id}
        self.logged = max(0, int(getattr(self.run, "step", 0) or 0) - 1)

    def log(self, values: dict[str, float], step: int) -> None:
        if step <= self.logged:
            return  # W&B refuses steps below its last one (see the module docstring)
        self.run.log(values, step=step)

    def flush(self) -> None:
        pass  # the W&B process writes as it goes

    def close(self) -> None:
        self.run.finish()
        # finish() can return before W&B's service has written the run's last records (an
        # offline run read right after lacked its history, 3 times in 8 on a loaded machine);
        # ending the service flushes them (0 in 24)
        tracking_module("wandb").teardown()


class Tracker:
    """Logs rank 0's metrics rows to the spec's trackers; a no-op with no backend.

    ``local_root``: where the backends write; ``remote``: ``(fs, folder)`` of the run folder
    when that is a URI (``synced`` subfolders of ``local_root`` are copied there by
    :meth:`flush`), else None (``local_root`` is the run folder itself).
    """

    def __init__(self, backends: dict[str, Backend] | None = None, local_root: str = "",
                 remote: tuple[Any, str] | None = None, synced: Iterable[str] = ()) -> None:
        self.backends = backends or {}
        self.local_root = local_root
        self.remote = remote
        self.synced = list(synced)
        self._copied: dict[str, tuple[int, int]] = {}

    def log(self, row: dict[str, Any]) -> None:
        """Log one metrics row (a dict with ``step``) to every backend."""
        if not self.backends:
            return
        values = scalars(row)
        for backend in self.backends.values():
            backend.log(values, int(row["step"]))

    def flush(self) -> None:
        """Write what the backends hold and copy local files to a URI run folder."""
        for backend in self.backends.values():
            backend.flush()
        self._sync()

    def close(self) -> None:
        """End the runs (MLflow, W&B), close the event file, copy the files a last time."""
        for backend in self.backends.values():
            backend.close()
        self._sync()
        self.backends = {}

    def _sync(self) -> None:
        if self.remote is None:
            return
        fs, folder = self.remote
        for sub in self.synced:
            for root, _, files in os.walk(os.path.join(self.local_root, sub)):
                for name in files:
                    path = os.path.join(root, name)
                    if os.path.islink(path):
                        continue
                    stat = os.stat(path)
                    if self._copied.get(path) == (stat.st_size, stat.st_mtime_ns):
                        continue  # unchanged since the last copy
                    rel = os.path.relpath(path, self.local_root).replace(os.sep, "/")
                    with open(path, "rb") as f:
                        write_bytes_atomic(fs, join(folder, rel), f.read())
                    self._copied[path] = (stat.st_size, stat.st_mtime_ns)


def _read_state(fs: Any, folder: str) -> dict[str, Any]:
    path = join(folder, STATE_FILE)
    return json.loads(read_bytes(fs, path)) if exists(fs, path) else {}


def open_tracker(spec: TrainSpec, rank: int, resumed_from: int) -> Tracker:
    """The tracker of rank 0 (a no-op elsewhere, and when the spec tracks nothing)."""
    cfg = spec.tracking
    if rank != 0 or not (cfg.tensorboard or cfg.mlflow or cfg.wandb):
        return Tracker()
    import pyarrow.fs as pafs

    fs, folder = resolve(join(spec.storage_path, spec.run_name), spec.storage)
    local = isinstance(fs, pafs.LocalFileSystem)
    local_root = folder if local else tempfile.mkdtemp(prefix="pf-ray-tracking-")
    state = _read_state(fs, folder)
    backends: dict[str, Backend] = {}
    synced = []
    if cfg.tensorboard:
        backends["tensorboard"] = TensorBoardBackend(os.path.join(local_root, "tensorboard"),
                                                     resumed_from)
        synced.append("tensorboard")
    if cfg.mlflow is not None:
        mlflow = MlflowBackend(cfg.mlflow, spec, state.get("mlflow", {}))
        backends["mlflow"], state["mlflow"] = mlflow, mlflow.state
    if cfg.wandb is not None:
        os.makedirs(local_root, exist_ok=True)
        wandb = WandbBackend(cfg.wandb, spec, state.get("wandb", {}), local_root)
        backends["wandb"], state["wandb"] = wandb, wandb.state
        if cfg.wandb.mode == "offline":
            synced.append("wandb")
    if cfg.mlflow is not None or cfg.wandb is not None:
        write_bytes_atomic(fs, join(folder, STATE_FILE), json.dumps(state, indent=1).encode())
    return Tracker(backends, local_root, None if local else (fs, folder), synced)

