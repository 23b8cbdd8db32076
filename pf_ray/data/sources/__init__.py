"""Source adapters: public dataset files in their own formats -> pf-ray sample rows.

Each adapter is one module declaring one :class:`Adapter` record: its name, how a file
becomes records (JSON arrays or JSON Lines by default; a JSON object per split, a questions
file joined with its annotations, WebDataset tars, a refer pickle, class folders, parquet
through their own readers), how a record becomes a row, and for adapters that name images
from ids the default image pattern. The registry (:mod:`.registry`) finds the records by
scanning this package. Each converter turns one record into one sample row or raises
:class:`RecordError` with a reason; the record then becomes a reject, never a crash.
Files are local or on an object store, matched by a path, glob or URI (see
:func:`expand_paths`).

Layers inside this folder, each importing only those below it:

* ``errors``, ``files``, ``readers``, ``fields``, ``turns``, ``templates``: helpers;
* ``adapter``: the :class:`Adapter` record;
* one module per adapter (``vqav2``, ``llava``...);
* ``registry`` (scans for the records) and ``source_reader`` (reads a unit of a source).
"""

from __future__ import annotations

from pf_ray.data.sources.adapter import Adapter
from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.files import expand_paths
from pf_ray.data.sources.registry import adapters, get_adapter, register
from pf_ray.data.sources.source_reader import SourceReader

__all__ = ["Adapter", "RecordError", "SourceReader", "adapters", "expand_paths",
           "get_adapter", "register"]
