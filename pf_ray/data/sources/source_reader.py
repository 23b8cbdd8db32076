"""Reading one unit of a source: a slice of one file -> sample rows and reject rows.

This is where ids are made (source name + the record's key, prefixed per file and made
unique within the file) and where every record problem becomes a reject row: the
adapter's reader and converter raise :class:`RecordError`, and any other exception of a
converter is a malformed record (``bad_record``). An infrastructure fault is neither
(docs/jobs.md, "Row faults and infrastructure faults"): a converter that reads storage
(an image's header for its size) and meets an outage (a refused connection, a timeout,
throttling, a 5xx, refused credentials: :func:`pf_ray.faults.is_infrastructure_fault`)
raises it out of :meth:`SourceReader.read`, so the unit fails and is retried, and the
outage is never committed as rejects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pf_ray.data.schema import (
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    SAMPLE_COLUMNS,
    Batch,
    dumps_meta,
    make_id,
)
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext
from pf_ray.data.sources.files import file_slug
from pf_ray.data.sources.registry import get_adapter
from pf_ray.faults import is_infrastructure_fault
from pf_ray.specs import StorageConfig


def record_key(record: Any, position: int, keys: tuple[str, ...] = ("id", "prompt_id")) -> str:
    """A record's own key (its first non-empty ``keys`` field), else ``#<position>``."""
    if isinstance(record, dict):
        for k in keys:
            if record.get(k) not in (None, ""):
                return str(record[k])
    return f"#{position}"


@dataclass(frozen=True)
class SourceReader:
    """Reads one unit (a slice of one file) of a source into sample rows.

    Holds the adapter's name, not its record, so that it pickles to workers as a few
    strings; each worker looks the record up in its own registry.
    """

    adapter: str
    source: str
    image_root: str | None
    storage: StorageConfig
    image_pattern: str | None = None

    def count(self, file: str) -> int:
        """Records in a file (an unreadable file counts as one row: its reject)."""
        try:
            return len(self.records(file))
        except RecordError:
            return 1

    def records(self, file: str) -> list[tuple[int, Any]]:
        return get_adapter(self.adapter).reader(file, self.storage)

    def read(self, file: str, start: int, stop: int) -> Batch:
        """Rows ``start..stop-1`` (by record position) of ``file``, rejects marked."""
        adapter = get_adapter(self.adapter)
        prefix = adapter.key_prefix(file)
        pattern = self.image_pattern or adapter.image_pattern
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        try:
            records = self.records(file)
        except RecordError as exc:  # the whole file is one reject, in the unit at start 0
            if start == 0:
                rows.append(_reject_row(make_id(self.source, file_slug(file)), self.source,
                                        exc, {"file": file}))
            return _columns(rows)
        for n, (position, record) in enumerate(records):
            key = prefix + (record_key(record, position) if not isinstance(record, RecordError)
                            else f"#{position}")
            # A key that repeats within the file (LLaVA image ids) gets #1, #2...; skip
            # suffixes that are themselves keys of the file so ids never collide.
            if key in seen:
                occurrence = seen[key]
                while f"{key}#{occurrence}" in seen:
                    occurrence += 1
                seen[key] = occurrence + 1
                key = f"{key}#{occurrence}"
            seen[key] = 1
            if n < start or n >= stop:
                continue
            sid = make_id(self.source, key)
            if isinstance(record, RecordError):
                rows.append(_reject_row(sid, self.source, record, {"file": file}))
                continue
            ctx = RecordContext(self.source, key, file, self.image_root, pattern, self.storage)
            try:
                row = adapter.convert(record, ctx)
            except RecordError as exc:
                rows.append(_reject_row(sid, self.source, exc, record))
                continue
            except Exception as exc:  # noqa: BLE001 - a malformed record, whatever its shape
                if is_infrastructure_fault(exc):  # an outage, not the record: the unit fails
                    raise
                rows.append(_reject_row(sid, self.source, RecordError(
                    "bad_record", f"{type(exc).__name__}: {exc}"), record))
                continue
            row.update({"id": sid, REJECT_STAGE: None, REJECT_REASON: None,
                        REJECT_DETAIL: None})
            rows.append(row)
        return _columns(rows)


def _reject_row(sid: str, source: str, exc: RecordError, record: Any) -> dict[str, Any]:
    return {"id": sid, "source": source, "task": "unknown", "image": None, "image_bytes": None,
            "extra_images": None, "conversations": [], "boxes": None,
            "meta": dumps_meta({"record": record}) if _jsonable(record) else
            dumps_meta({"record": repr(record)[:10000]}),
            REJECT_STAGE: "ingest", REJECT_REASON: exc.reason, REJECT_DETAIL: exc.detail}


def _jsonable(x: Any) -> bool:
    try:
        json.dumps(x)
        return True
    except (TypeError, ValueError):
        return False


def _columns(rows: list[dict[str, Any]]) -> Batch:
    cols = (*SAMPLE_COLUMNS, REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)
    return {c: [r.get(c) for r in rows] for c in cols}
