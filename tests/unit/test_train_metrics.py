"""The per-step metrics files written beside a run's checkpoints."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from PIL import Image

from pf_ray.specs import StorageConfig
from pf_ray.train.metrics import write_metrics


def test_metrics_files_hold_every_row_and_key(tmp_path: Path) -> None:
    rows = [{"step": s, "loss": 4.0 / s, "lr": 1e-4} for s in range(3, 9)]  # resumed at 2
    rows[0]["rank_memory_bytes"] = 123  # only the first step has memory columns
    write_metrics(rows, str(tmp_path), StorageConfig())
    assert json.loads((tmp_path / "metrics.json").read_text()) == rows
    table = list(csv.DictReader(io.StringIO((tmp_path / "metrics.csv").read_text())))
    assert [int(r["step"]) for r in table] == list(range(3, 9))
    assert table[0]["rank_memory_bytes"] == "123" and table[1]["rank_memory_bytes"] == ""
    png = Image.open(tmp_path / "loss.png")
    assert png.format == "PNG" and png.size == (640, 360)


def test_no_rows_writes_nothing(tmp_path: Path) -> None:
    write_metrics([], str(tmp_path), StorageConfig())
    assert list(tmp_path.iterdir()) == []


def test_plot_without_learning_rate(tmp_path: Path) -> None:
    write_metrics([{"step": 1, "loss": 2.0}], str(tmp_path), StorageConfig())
    assert Image.open(tmp_path / "loss.png").size == (640, 360)
