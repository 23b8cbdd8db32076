"""Source adapters: public dataset files in their own formats -> pf-ray sample rows.

Each adapter turns one record into one sample row or raises :class:`RecordError` with a
reason; the record then becomes a reject, never a crash. Files are JSON arrays or JSON
Lines (detected from the first character), local or on an object store, matched by a path,
glob or URI (see :func:`expand_paths`). Adapters whose released files are something else
(a JSON object per split, a questions file joined with its annotations, WebDataset tars, a
refer pickle, class folders) read them through ``RECORD_READERS``; the raw vision-language
ones template the paper's instructions (:mod:`~pf_ray.data.sources.templates`).
"""

from __future__ import annotations

from pf_ray.data.sources.base import (
    ADAPTERS,
    RecordError,
    SourceReader,
    expand_paths,
    get_adapter,
)

__all__ = ["ADAPTERS", "RecordError", "SourceReader", "expand_paths", "get_adapter"]
