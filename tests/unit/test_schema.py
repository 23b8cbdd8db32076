"""Writers cast to the declared schemas and fail loudly, naming the column."""

from __future__ import annotations

import pytest

from pf_ray.data.schema import REJECT_SCHEMA, SAMPLE_SCHEMA, SchemaError, to_table
from pf_ray.data.synthetic import generate


def test_synthetic_rows_fit_the_sample_schema() -> None:
    batch = generate(0, 0, 20)
    table = to_table(batch, SAMPLE_SCHEMA)
    assert table.schema == SAMPLE_SCHEMA and table.num_rows == 20


def test_missing_column_is_named() -> None:
    batch = generate(0, 0, 3)
    del batch["meta"]
    with pytest.raises(SchemaError, match="missing column 'meta'"):
        to_table(batch, SAMPLE_SCHEMA)


def test_mistyped_column_is_named() -> None:
    batch = generate(0, 0, 3)
    batch["conversations"] = ["not a list"] * 3
    with pytest.raises(SchemaError, match="column 'conversations' cannot be read"):
        to_table(batch, SAMPLE_SCHEMA)


def test_null_in_required_column() -> None:
    batch = generate(0, 0, 3)
    batch["id"][1] = None
    with pytest.raises(SchemaError, match="column 'id' has 1 null"):
        to_table(batch, SAMPLE_SCHEMA)


def test_reject_schema() -> None:
    t = to_table({"id": ["a"], "stage": ["s"], "reason": ["r"], "detail": [""],
                  "row": ["{}"]}, REJECT_SCHEMA)
    assert t.num_rows == 1
