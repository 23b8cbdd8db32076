"""Per-step metrics written beside the checkpoints: CSV, JSON and a loss-curve PNG."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from PIL import Image, ImageDraw

from pf_ray.specs import StorageConfig
from pf_ray.storage import join, resolve, write_bytes_atomic


def loss_png(losses: list[float], width: int = 640, height: int = 360) -> bytes:
    """A plain line plot of the loss per step (PIL only; no plotting library needed)."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 60, width - 20, 20, height - 40
    draw.rectangle((left, top, right, bottom), outline="black")
    if losses:
        lo, hi = min(losses), max(losses)
        span = (hi - lo) or 1.0
        n = max(1, len(losses) - 1)
        pts = [(left + (right - left) * i / n, bottom - (bottom - top) * (v - lo) / span)
               for i, v in enumerate(losses)]
        if len(pts) > 1:
            draw.line(pts, fill=(30, 90, 200), width=2)
        draw.text((5, top), f"{hi:.3f}", fill="black")
        draw.text((5, bottom - 10), f"{lo:.3f}", fill="black")
        draw.text((left, bottom + 10), f"step 1 .. {len(losses)}  (loss)", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
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
    write_bytes_atomic(fs, join(base, "loss.png"), loss_png([r["loss"] for r in rows]))
