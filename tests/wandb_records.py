"""Read the history of an offline W&B run (``run-<id>.wandb``) without a W&B server.

The file is a LevelDB-style log (as W&B's own reader, gone from its SDK, read it): a 7-byte
header (``:W&B``, magic, version), then 32 KiB blocks of records, each with a 7-byte header
(CRC32C, length, type: 1 full, 2 first, 3 middle, 4 last); the record payloads are W&B's
``Record`` protobufs. Only the ``history`` records are kept.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
FILE_HEADER = 7
RECORD_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> list[bytes]:
    """Every record payload of the log, in order (no CRC check)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    out: list[bytes] = []
    pos, pending = FILE_HEADER, b""
    while pos + RECORD_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + RECORD_HEADER])
        if kind == 0 and length == 0:  # zeroed space at the end
            break
        chunk = data[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
    return out


def history(path: Path) -> list[dict[str, Any]]:
    """The rows ``run.log`` wrote, each with ``_step``."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in payloads(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                         for i in rec.history.item})
    return rows


def offline_history(folder: Path) -> list[dict[str, Any]]:
    """The rows of every offline run under ``folder`` (``wandb/offline-run-*``), in order."""
    rows = []
    for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        rows.extend(history(path))
    return rows
