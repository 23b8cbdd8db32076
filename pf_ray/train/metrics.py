"""Per-step metrics written beside the checkpoints: CSV, JSON and a loss-curve PNG."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from pf_ray.specs import StorageConfig
from pf_ray.storage import join, resolve, write_bytes_atomic


def loss_png(rows: list[dict[str, Any]]) -> bytes:
    """The loss per step (and the learning rate on a second axis, when rows carry it).

    A resumed run's rows start at the step it resumed from, so the x axis is ``step``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(steps, [r["loss"] for r in rows], color="tab:blue", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    if all("lr" in r for r in rows):
        lr = ax.twinx()
        lr.plot(steps, [r["lr"] for r in rows], color="tab:orange", linewidth=1, alpha=0.7)
        lr.set_ylabel("learning rate", color="tab:orange")
    ax.set_title("Training loss")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_metrics(rows: list[dict[str, Any]], folder: str, storage: StorageConfig) -> None:
    """``metrics.csv``, ``metrics.json`` and ``loss.png`` under ``folder`` (local or URI)."""
    if not rows:
        return
    fs, base = resolve(folder, storage)
    text = io.StringIO()
    # every key of every row (the first step also has memory columns; older runs' rows may
    # lack newer keys): missing cells stay empty
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(fs, join(base, "metrics.csv"), text.getvalue().encode())
    write_bytes_atomic(fs, join(base, "metrics.json"), json.dumps(rows, indent=1).encode())
    write_bytes_atomic(fs, join(base, "loss.png"), loss_png(rows))
