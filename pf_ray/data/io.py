"""The pf-ray dataset layout on any storage (folders and object stores, see ``storage``).

A dataset lives under one ROOT (a folder or ``s3://bucket/prefix``)::

    ROOT/shards/<unit>-<spec hash>.parquet    rows that passed, in the stage's schema
    ROOT/rejects/<unit>-<spec hash>.parquet   rows that did not, with stage and reason
    ROOT/_markers/<unit>-<spec hash>.json     completion marker, written last
    ROOT/_manifest.json                       summary rebuilt from the markers

(When a stage re-batches rows, a unit may arrive in parts: ``<name>.part-<hash>.parquet``
files plus ``ROOT/_parts/<name>/*.json``; the marker lists the files of each shard.)

A shard counts only once its marker exists. Data files are written atomically (a local
file is written under a temporary name and renamed; an object-store PUT only becomes
visible when the upload completes), the marker after them, so a job killed at any point
leaves either a committed shard or nothing that readers look at. A rerun rewrites
uncommitted shards under the same deterministic names and never duplicates a row.
"""

from __future__ import annotations

import io
import json
import posixpath
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pf_ray import __version__
from pf_ray.data.schema import ADDED_COLUMNS, SCHEMA_VERSION
from pf_ray.specs import StorageConfig
from pf_ray.storage import exists, join, list_files, read_bytes, resolve, write_bytes_atomic

SHARDS, REJECTS, MARKERS, PARTS = "shards", "rejects", "_markers", "_parts"
MANIFEST = "_manifest.json"


def parquet_bytes(table: pa.Table) -> bytes:
    """Serialise a table to Parquet deterministically (same rows -> same bytes)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()


@dataclass
class Dataset:
    """The layout of one pf-ray dataset under ``root``."""

    root: str
    storage: StorageConfig

    def __post_init__(self) -> None:
        self.fs, self.base = resolve(self.root, self.storage)

    def __getstate__(self) -> dict[str, Any]:  # filesystems are rebuilt on the worker
        return {"root": self.root, "storage": self.storage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root, self.storage = state["root"], state["storage"]
        self.__post_init__()

    def path(self, *parts: str) -> str:
        return join(self.base, *parts)

    # -------------------------------------------------------------- shards

    def committed(self) -> dict[str, dict[str, Any]]:
        """Markers of all committed shards, by shard name."""
        out = {}
        for p in list_files(self.fs, self.path(MARKERS), ".json"):
            marker = json.loads(read_bytes(self.fs, p))
            out[marker["name"]] = marker
        return out

    def is_committed(self, name: str) -> bool:
        return exists(self.fs, self.path(MARKERS, f"{name}.json"))

    def write_data(self, file: str, rows: pa.Table, rejects: pa.Table) -> None:
        """Write ``shards/<file>`` and, when there are any, ``rejects/<file>``."""
        write_bytes_atomic(self.fs, self.path(SHARDS, file), parquet_bytes(rows))
        if rejects.num_rows:
            write_bytes_atomic(self.fs, self.path(REJECTS, file), parquet_bytes(rejects))

    def commit(self, name: str, marker: dict[str, Any]) -> None:
        """Write the completion marker of shard ``name`` (after all its data files)."""
        marker = {"name": name, **marker, "committed_at": time.time()}
        write_bytes_atomic(self.fs, self.path(MARKERS, f"{name}.json"),
                           json.dumps(marker, sort_keys=True, indent=1).encode())

    def write_part_info(self, name: str, part: str, info: dict[str, Any]) -> list[dict[str, Any]]:
        """Record one part of a shard; return the infos of all its parts written so far.

        Parts exist when a stage re-batches rows (``ray.data.llm``) so that a unit reaches
        the writer in several blocks. Each writer lists the parts after writing its own, so
        the writer of the last part always sees them all.
        """
        folder = self.path(PARTS, name)
        write_bytes_atomic(self.fs, join(folder, f"{part}.json"),
                           json.dumps(info, sort_keys=True).encode())
        return [json.loads(read_bytes(self.fs, p)) for p in list_files(self.fs, folder, ".json")]

    def discard_uncommitted(self, names: set[str]) -> None:
        """Delete what killed attempts at shards ``names`` left (never committed, never read)."""
        for folder in (SHARDS, REJECTS):
            for p in list_files(self.fs, self.path(folder)):
                if posixpath.basename(p).split(".", 1)[0] in names:
                    self.fs.delete_file(p)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(PARTS),
                                                            allow_not_found=True))
        except FileNotFoundError:
            infos = []
        for info in infos:
            if info.base_name in names:
                self.fs.delete_dir(info.path)

    def shard_files(self) -> list[str]:
        """Paths of committed shard files (files without a marker are ignored)."""
        return [self.path(SHARDS, f) for m in self._sorted_markers() for f in m["files"]]

    def unit_files(self) -> list[str]:
        """The committed shard files that hold rows: what a job reading this dataset makes
        its units of. A unit committed in parts (after a re-batching stage such as vLLM's)
        may have a part whose rows were all rejects, an empty file: a unit of no rows would
        never reach the next job's writer, so it is not one (each file's row count comes
        from its Parquet footer)."""
        return [f for f in self.shard_files()
                if pq.read_metadata(f, filesystem=self.fs).num_rows > 0]

    def reject_files(self) -> list[str]:
        return [self.path(REJECTS, f) for m in self._sorted_markers()
                for f in m.get("reject_files", [])]

    def _sorted_markers(self) -> list[dict[str, Any]]:
        markers = self.committed()
        return [markers[n] for n in sorted(markers)]

    def read(self, what: str = SHARDS, columns: list[str] | None = None) -> pa.Table:
        """All committed rows (``shards``) or rejects (``rejects``) as one table."""
        files = self.shard_files() if what == SHARDS else self.reject_files()
        tables = [pq.read_table(f, filesystem=self.fs, columns=columns) for f in files]
        if not tables:
            raise FileNotFoundError(f"{self.root}: no committed {what}")
        return pa.concat_tables(tables)

    # -------------------------------------------------------------- manifest

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.path(MANIFEST)
        return json.loads(read_bytes(self.fs, path)) if exists(self.fs, path) else None

    def write_manifest(self, *, kind: str, spec_hash: str, spec: dict[str, Any],
                       run: dict[str, Any], extra: dict[str, Any] | None = None
                       ) -> dict[str, Any]:
        """Rebuild the manifest from the markers, appending this run's timing (``extra``:
        more top-level keys, e.g. a stage's score summary)."""
        previous = self.read_manifest() or {}
        shards = self.committed()
        totals: dict[str, Any] = {"rows": 0, "rejects": 0, "shards": len(shards),
                                  "counts": {}, "rejects_per_reason": {}}
        for m in shards.values():
            totals["rows"] += m["rows"]
            totals["rejects"] += m["rejects"]
            for col, values in m["counts"].items():
                _add(totals["counts"].setdefault(col, {}), values.items())
            _add(totals["rejects_per_reason"], m["rejects_per_reason"].items())
        totals["rows_per_source"] = totals["counts"].get("source", {})
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "code_version": __version__,
            "kind": kind,
            "spec_hash": spec_hash,
            "spec": spec,
            "totals": totals,
            "shards": {n: {k: v for k, v in m.items() if k != "name"}
                       for n, m in sorted(shards.items())},
            "runs": [*previous.get("runs", []), run],
        }
        manifest.update(extra or {})
        write_bytes_atomic(self.fs, self.path(MANIFEST),
                           json.dumps(manifest, sort_keys=True, indent=1).encode())
        return manifest

    def clear(self) -> None:
        """Delete everything under the root (``output.mode: overwrite``)."""
        if exists(self.fs, self.base):
            self.fs.delete_dir_contents(self.base, missing_dir_ok=True)


def _add(into: dict[str, int], items: Iterable[tuple[str, int]]) -> None:
    for k, v in items:
        into[k] = into.get(k, 0) + v


def read_shard_columns(fs: pafs.FileSystem, path: str, columns: Iterable[str]) -> dict[str, list]:
    """``columns`` of one shard file as Python lists; a column of
    :data:`~pf_ray.data.schema.ADDED_COLUMNS` that a shard written before it lacks reads as
    nulls (any other missing column is pyarrow's error)."""
    columns = list(columns)
    present = set(pq.read_schema(path, filesystem=fs).names)
    wanted = [c for c in columns if c in present or c not in ADDED_COLUMNS]
    batch = pq.read_table(path, filesystem=fs, columns=wanted).to_pydict()
    n = len(next(iter(batch.values()))) if batch else 0
    return {c: batch[c] if c in batch else [None] * n for c in columns}
