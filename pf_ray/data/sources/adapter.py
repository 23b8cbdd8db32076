"""The declaration of a source adapter: one frozen record per public format.

Each adapter module declares its :class:`Adapter` (name, converter, file reader, key prefix,
image pattern, whether rows ask for a drawn region, a one-line description) next to the
code it names; :mod:`~pf_ray.data.sources.registry` finds the built-in records by
scanning this package and derives everything else from them: the names the ingest
spec accepts, the adapters that take an ``image_pattern`` and its fields, those whose rows
are drawn. Adding a format is one module with its record (or ``register`` for one
outside the package).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pf_ray.data.sources.fields import RecordContext, pattern_names, sample
from pf_ray.data.sources.files import file_stem_prefix
from pf_ray.data.sources.readers import RecordReader, json_records
from pf_ray.data.sources.turns import instruction_turns

# (record, context) -> row dict; raises RecordError for a record that is not a sample.
Converter = Callable[[Any, RecordContext], dict[str, Any]]
# file -> a prefix for every record key of that file, e.g. "detail/": sources whose keys
# repeat across their files (LLaVA's per-task files share COCO image ids; Alpaca-style
# files have no ids at all) keep their ids unique when one source globs several files.
KeyPrefix = Callable[[str], str]

NAME = re.compile(r"[a-z][a-z0-9_]*")


def no_prefix(file: str) -> str:
    """Keys as the records give them: the default for sources whose keys are unique."""
    return ""


@dataclass(frozen=True)
class Adapter:
    """One source adapter: how the files of one public release become sample rows.

    ``reader`` turns one file into ``(position, record)`` pairs (JSON array / JSON Lines by
    default; releases in other layouts bring their own); ``convert`` turns one record into
    one row or raises :class:`~pf_ray.data.sources.errors.RecordError`. ``image_pattern``
    is the default ``str.format`` pattern for adapters that name images from a record's
    ids (VQAv2: image_id 9 of train2014 -> ``train2014/COCO_train2014_000000000009.jpg``);
    ``pattern_fields`` are the fields it and a spec's ``source.image_pattern`` may use.
    ``draws``: rows ask for a region drawn onto their image (``meta.draw``, see
    pf_ray.data.draw), which the ingest job renders into ``image_bytes``.
    """

    name: str
    convert: Converter
    description: str
    reader: RecordReader = json_records
    key_prefix: KeyPrefix = no_prefix
    image_pattern: str | None = None
    pattern_fields: tuple[str, ...] = ()
    draws: bool = False

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ValueError(f"Adapter.name: received {self.name!r}; allowed: lower-case "
                             "letters, digits and '_', starting with a letter (it is in ids)")
        if not self.description.strip():
            raise ValueError(f"Adapter {self.name!r}: description is empty; say in one line "
                             "which release the adapter reads")
        if (self.image_pattern is None) != (not self.pattern_fields):
            raise ValueError(f"Adapter {self.name!r}: image_pattern {self.image_pattern!r} "
                             f"and pattern_fields {self.pattern_fields!r}: give both or "
                             "neither")
        if self.image_pattern is not None:
            unknown = sorted(pattern_names(self.image_pattern) - set(self.pattern_fields))
            if unknown:
                raise ValueError(f"Adapter {self.name!r}: image_pattern "
                                 f"{self.image_pattern!r} uses {unknown}; allowed: "
                                 f"{list(self.pattern_fields)}")


def instruction_adapter(name: str, description: str,
                        answer_keys: tuple[str, ...] = ("output",)) -> Adapter:
    """The record of an Alpaca-style source (``{instruction, input, <answer>}``): text-only
    samples, keys prefixed by the file stem (the records have no ids)."""

    def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
        turns, notes = instruction_turns(record, answer_keys)
        return sample(ctx, task="text_instruction", image=None, turns=turns, meta=notes)

    return Adapter(name, convert, description, key_prefix=file_stem_prefix)
