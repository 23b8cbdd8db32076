"""Declared Arrow schemas for every dataset pf-ray writes.

Writers never guess: :func:`to_table` casts a batch to a declared schema and fails loudly,
naming the column, when one is missing or cannot be cast. This module holds the formats
several stages share (samples, rejects, rewrites) and the bookkeeping columns; a kind's own
output schema lives in its folder (:class:`OutputSchema`, declared in its registration).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 2  # 2: extra_images (rows with several images)

# A batch in flight: column name -> one Python value per row (nested columns such as
# ``conversations`` are lists of dicts, which numpy cannot hold without object arrays).
Batch = dict[str, list[Any]]

# In-flight bookkeeping columns (never written to shards): the unit a row belongs to, its
# row count and ids digest at read time, and why a row was rejected (the stage, a
# machine-readable reason, a human-readable detail).
UNIT, UNIT_ROWS, UNIT_T0, UNIT_IDS = "_unit", "_unit_rows", "_unit_t0", "_unit_ids"
REJECT_STAGE, REJECT_REASON, REJECT_DETAIL = "_reject_stage", "_reject_reason", "_reject_detail"
BOOKKEEPING = (UNIT, UNIT_ROWS, UNIT_T0, UNIT_IDS, REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)

ROLES = ("system", "user", "assistant")

TURN = pa.struct([("role", pa.string()), ("content", pa.string())])
# An image after a row's first (``image`` / ``image_bytes``): the same two fields.
IMAGE = pa.struct([("image", pa.string()), ("image_bytes", pa.binary())])
BOX = pa.struct(
    [
        ("label", pa.string()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("x2", pa.float32()),
        ("y2", pa.float32()),
    ]
)

# One instruction sample: a conversation about zero, one or several images.
#   id:            "<source>:<source's own key>", stable across runs
#   image:         URI of the image (path relative to an image root, s3://, tar://member::archive)
#   image_bytes:   the encoded image itself, when the dataset embeds it
#   extra_images:  [{image, image_bytes}]: the images after the first, in order (a change
#                  caption's "after" image); null for the usual one-image row. Every image of
#                  a row belongs to its first user turn, in this order (data/images.py
#                  row_images).
#   conversations: [{role: system|user|assistant, content}]
#   boxes:         [{label, x1, y1, x2, y2}] in 0-1 image coordinates, when the source has them
#   meta:          JSON object string: source-specific fields and ground truth
SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("image", pa.string()),
        pa.field("image_bytes", pa.binary()),
        pa.field("extra_images", pa.list_(IMAGE)),
        pa.field("conversations", pa.list_(TURN), nullable=False),
        pa.field("boxes", pa.list_(BOX)),
        pa.field("meta", pa.string(), nullable=False),
    ]
)
SAMPLE_COLUMNS = tuple(SAMPLE_SCHEMA.names)

# A row some stage could not process, or a filter dropped, with the original row as JSON.
REJECT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("row", pa.string(), nullable=False),
    ]
)

# A rewrite of a raw annotation by the rewriter (rewrite stage, paper.md §4).
#   instruction:   the user turn before the first assistant turn (text, no image marker)
#   original:      the raw annotation as the rewriter got it (the "draft"; boxes appended
#                  when the row has them and draft_boxes is on)
#   output:        the rewrite, cut at the first stop string
#   finish_reason: eos | stop | length
#   meta:          the input row's meta, unchanged (ground truth included)
#   (image, image_bytes, extra_images: the sample's images, unchanged)
REWRITE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("image", pa.string()),
        pa.field("image_bytes", pa.binary()),
        pa.field("extra_images", pa.list_(IMAGE)),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("original", pa.string(), nullable=False),
        pa.field("output", pa.string(), nullable=False),
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("meta", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class OutputSchema:
    """What a job kind writes: its rows' Arrow schema, and the columns whose value counts
    each shard's marker and the manifest record. Each kind declares its own (in its
    registration, :class:`pf_ray.jobs.registry.JobKind`); the formats two stages share
    (samples, rewrites) live here."""

    name: str
    schema: pa.Schema
    count_columns: tuple[str, ...] = ("source",)


# Columns added to the shared formats after datasets were written with them (schema version
# 2): a shard or batch without one reads as all nulls, so older datasets stay readable.
ADDED_COLUMNS = frozenset({"extra_images"})


def column_type(name: str) -> pa.DataType:
    """The declared type of a column of the shared formats (samples, rewrites)."""
    for schema in (SAMPLE_SCHEMA, REWRITE_SCHEMA):
        if name in schema.names:
            return schema.field(name).type
    raise KeyError(f"{name!r} is no column of the sample or rewrite schema")


SAMPLE_OUTPUT = OutputSchema("sample", SAMPLE_SCHEMA, ("source", "task"))
REWRITE_OUTPUT = OutputSchema("rewrite", REWRITE_SCHEMA, ("source", "task"))


class SchemaError(ValueError):
    """A batch does not match the declared schema."""


def to_table(columns: Mapping[str, Sequence[Any]], schema: pa.Schema, *, name: str = "") -> pa.Table:
    """Build a table with exactly ``schema``'s columns from a column dict.

    Extra columns are ignored (in-flight bookkeeping such as ``_unit``); a missing column
    (other than one of :data:`ADDED_COLUMNS`, which reads as nulls), a null in a
    non-nullable column or a value of the wrong type raises :class:`SchemaError` naming the
    column.
    """
    label = f"{name} schema" if name else "schema"
    arrays = []
    n_rows = len(next(iter(columns.values()))) if columns else 0
    for field in schema:
        if field.name not in columns and field.name in ADDED_COLUMNS:
            arrays.append(pa.nulls(n_rows, field.type))
            continue
        if field.name not in columns:
            raise SchemaError(
                f"{label}: missing column {field.name!r} (type {field.type}); "
                f"received columns {sorted(columns)}"
            )
        values = columns[field.name]
        try:
            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            if isinstance(values, pa.Array):
                array = values if values.type == field.type else values.cast(field.type)
            else:
                array = pa.array(values, type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise SchemaError(
                f"{label}: column {field.name!r} cannot be read as {field.type}: {exc}"
            ) from exc
        if not field.nullable and array.null_count:
            raise SchemaError(f"{label}: column {field.name!r} has {array.null_count} null(s)")
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=schema)


def validate_table(table: pa.Table, schema: pa.Schema, *, name: str = "") -> pa.Table:
    """Cast an existing Arrow table to ``schema`` (see :func:`to_table` for the errors)."""
    return to_table({c: table.column(c) for c in table.column_names}, schema, name=name)


def make_id(source: str, key: object) -> str:
    """The stable id of a sample: source name + the source's own key."""
    return f"{source}:{key}"


def dumps_meta(meta: Mapping[str, Any]) -> str:
    """Canonical JSON for the ``meta`` column (sorted keys, so reruns give equal bytes)."""
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
