"""File readers: how the bytes of one released file become ``(position, record)`` pairs.

An adapter's :attr:`~pf_ray.data.sources.adapter.Adapter.reader` is one of these (JSON
array / JSON Lines by default) or its own function built from them. A file that cannot be
read as a whole raises :class:`RecordError` (the file becomes one reject); a bad line of a
JSON Lines file becomes that line's own error, in its position.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from pf_ray.data.sources.errors import RecordError
from pf_ray.specs import StorageConfig
from pf_ray.storage import read_bytes, resolve

# (file, storage) -> [(position, record or RecordError)]
RecordReader = Callable[[str, StorageConfig], list[tuple[int, Any]]]


def parse_records(data: bytes, where: str) -> Iterator[tuple[int, Any | RecordError]]:
    """(position, record or RecordError) for a JSON array or JSON Lines file.

    A JSON array that does not parse fails as a whole (raises RecordError); a bad line of a
    JSON Lines file becomes that line's error and the rest of the file is still read.
    """
    text = data.decode("utf-8-sig", errors="replace")
    head = text.lstrip()[:1]
    if head == "[":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError("unreadable_file", f"{where}: invalid JSON ({exc})") from exc
        yield from enumerate(records)
        return
    for lineno, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, RecordError("invalid_json", f"{where} line {lineno + 1}: {exc}")


def json_records(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    """The default reader: a JSON array or JSON Lines file (told apart by its first
    character), one record per element or line."""
    fs, path = resolve(file, storage)
    return list(parse_records(read_bytes(fs, path), file))


def parquet_records(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    """One record (a dict of the columns) per row of a parquet file, as the Hugging Face
    Hub serves its datasets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = resolve(file, storage)
    data = read_bytes(fs, path)  # outside the try: a store that fails is not a bad file
    try:
        return list(enumerate(pq.read_table(io.BytesIO(data)).to_pylist()))
    except (pa.ArrowException, OSError) as exc:
        raise RecordError("unreadable_file", f"{file}: not a parquet file ({exc})") from exc


def load_json(file: str, storage: StorageConfig) -> Any:
    """A whole JSON file; an unreadable one raises RecordError (the file becomes a reject)."""
    fs, path = resolve(file, storage)
    try:
        return json.loads(read_bytes(fs, path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError("unreadable_file", f"{file}: invalid JSON ({exc})") from exc


def karpathy_images(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
    """The image entries of a file in Karpathy's split layout (``{"images": [{"filename",
    "sentences": [{"raw", "tokens", ...}], "split", ...}]}``: Flickr30k, RSICD / UCM /
    Sydney-captions, LEVIR-CC), one record ``{"id": <file name stem>, "im": <entry>}`` each;
    an entry without a file name has no id (its position names it, its converter rejects
    it)."""
    images = json_field(load_json(file, storage), "images", file)
    out: list[tuple[int, Any]] = []
    for pos, im in enumerate(images):
        name = im.get("filename") if isinstance(im, dict) else None
        key = posixpath.splitext(name)[0] if isinstance(name, str) and name.strip() else None
        out.append((pos, {"id": key, "im": im}))
    return out


def json_array(file: str, storage: StorageConfig, of: str) -> list[Any]:
    """A whole file that must be a JSON array (of ``of``: "questions", "annotations"...);
    anything else raises RecordError (the file becomes a reject)."""
    data = load_json(file, storage)
    if not isinstance(data, list):
        raise RecordError("unreadable_file", f"{file}: expected a JSON array of {of}, "
                          f"received {type(data).__name__}")
    return data


def json_field(data: Any, field: str, file: str, kind: type = list) -> Any:
    """``data[field]`` of a released annotation file, checked to be a ``kind``."""
    value = data.get(field) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not isinstance(value, kind):
        raise RecordError("unreadable_file", f"{file}: expected an object with a {field!r} "
                          f"{kind.__name__}, received {type(value).__name__}")
    return value


def cached_reader(parse: RecordReader, maxsize: int = 2) -> RecordReader:
    """Cache a whole-file record reader: the plan counts a file and every unit of the file
    slices it, so a worker would otherwise parse the same (often 100+ MB) file per unit."""

    @lru_cache(maxsize=maxsize)
    def cached(file: str, storage_json: str) -> tuple[tuple[int, Any], ...]:
        return tuple(parse(file, StorageConfig.model_validate_json(storage_json)))

    def reader(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
        return list(cached(file, storage.model_dump_json()))

    return reader
