"""Shared machinery of the source adapters: file discovery, record parsing, units, ids."""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyarrow.fs as pafs

from pf_ray.data.schema import (
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    ROLES,
    Batch,
    dumps_meta,
    make_id,
)
from pf_ray.specs import StorageConfig
from pf_ray.storage import is_uri, read_bytes, resolve

SAMPLE_COLUMNS = ("id", "source", "task", "image", "image_bytes", "conversations", "boxes", "meta")


class RecordError(Exception):
    """A record that cannot become a sample, with a machine-readable reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# An adapter converts (record, context) -> row dict. Registered by name in ADAPTERS.
Converter = Callable[[Any, "RecordContext"], dict[str, Any]]
ADAPTERS: dict[str, Converter] = {}
# Adapters whose files are not a list of records (COCO: one JSON object per split) say
# how to read (position, record) pairs from a file: RECORD_READERS[name](file, storage).
RecordReader = Callable[[str, StorageConfig], list[tuple[int, Any]]]
RECORD_READERS: dict[str, RecordReader] = {}
# Adapters whose record keys repeat across the files of one source (LLaVA's per-task files
# share COCO image ids; Alpaca-style files have no ids at all) prefix every key of a file:
# KEY_PREFIXES[name](file) -> e.g. "detail/", so ids stay unique when a source globs files.
KeyPrefix = Callable[[str], str]
KEY_PREFIXES: dict[str, KeyPrefix] = {}
# Adapters that name images from a record's ids (VQAv2: image_id 9 of train2014 ->
# "train2014/COCO_train2014_000000000009.jpg") accept ``source.image_pattern``: a
# str.format pattern over the fields listed here, replacing the adapter's default.
IMAGE_PATTERN_FIELDS: dict[str, tuple[str, ...]] = {}
# Adapters whose rows ask for a region drawn onto their image (``meta.draw``, see
# pf_ray.data.draw): the ingest job renders it into ``image_bytes``.
DRAWS: set[str] = set()


def register(name: str, records: RecordReader | None = None, key_prefix: KeyPrefix | None = None,
             pattern_fields: tuple[str, ...] | None = None, draws: bool = False
             ) -> Callable[[Converter], Converter]:
    def wrap(fn: Converter) -> Converter:
        ADAPTERS[name] = fn
        if records is not None:
            RECORD_READERS[name] = records
        if key_prefix is not None:
            KEY_PREFIXES[name] = key_prefix
        if pattern_fields is not None:
            IMAGE_PATTERN_FIELDS[name] = pattern_fields
        if draws:
            DRAWS.add(name)
        return fn

    return wrap


def cached_reader(parse: RecordReader, maxsize: int = 2) -> RecordReader:
    """Cache a whole-file record reader: the plan counts a file and every unit of the file
    slices it, so a worker would otherwise parse the same (often 100+ MB) file per unit."""

    @lru_cache(maxsize=maxsize)
    def cached(file: str, storage_json: str) -> tuple[tuple[int, Any], ...]:
        return tuple(parse(file, StorageConfig.model_validate_json(storage_json)))

    def reader(file: str, storage: StorageConfig) -> list[tuple[int, Any]]:
        return list(cached(file, storage.model_dump_json()))

    return reader


def load_json(file: str, storage: StorageConfig) -> Any:
    """A whole JSON file; an unreadable one raises RecordError (the file becomes a reject)."""
    fs, path = resolve(file, storage)
    try:
        return json.loads(read_bytes(fs, path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError("unreadable_file", f"{file}: invalid JSON ({exc})") from exc


def json_field(data: Any, field: str, file: str, kind: type = list) -> Any:
    """``data[field]`` of a released annotation file, checked to be a ``kind``."""
    value = data.get(field) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not isinstance(value, kind):
        raise RecordError("unreadable_file", f"{file}: expected an object with a {field!r} "
                          f"{kind.__name__}, received {type(value).__name__}")
    return value


def get_adapter(name: str) -> Converter:
    # Importing the modules registers them.
    from pf_ray.data.sources import (  # noqa: F401
        alpaca_gpt4,
        aokvqa,
        clevr,
        coco,
        flickr30k,
        gpteacher,
        gqa,
        image_folder_classes,
        image_paragraph,
        instructionwild,
        llava,
        oasst1,
        refcocog,
        scienceqa,
        sharegpt,
        textcaps,
        textvqa,
        ultrachat,
        vqav2,
        webdataset,
    )

    try:
        return ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown source adapter {name!r}; allowed: {sorted(ADAPTERS)}") from None


@dataclass(frozen=True)
class RecordContext:
    """What a converter knows besides the record itself."""

    source: str  # name used in ids
    key: str  # the record's own key, made unique within its file
    file: str  # the file it came from
    image_root: str | None
    image_pattern: str | None = None  # source.image_pattern (adapters that name images)


def expand_paths(path: str | list[str], storage: StorageConfig) -> list[str]:
    """A file, a glob or a URI (globs allowed in the key) -> sorted file list.

    A list of them gives each entry's files in the list's order (duplicates once); a glob
    entry of a list that matches nothing is an error, since the list names what it expects.
    """
    if isinstance(path, list):
        out: list[str] = []
        for entry in path:
            files = expand_paths(entry, storage)
            if not files:
                raise FileNotFoundError(f"source.path: no file matches {entry!r}")
            out.extend(f for f in files if f not in out)
        return out
    if not any(ch in path for ch in "*?["):
        return [path]
    if not is_uri(path):
        return sorted(glob.glob(path, recursive=True))
    fs, inner = resolve(path, storage)
    scheme = path.split("://", 1)[0]
    base = inner.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0].rsplit("/", 1)[0]
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        if not glob_match(inner, info.path):
            continue
        out.append(f"{scheme}://{info.path}")
    return sorted(out)


def glob_match(pattern: str, path: str) -> bool:
    """Whether an object key matches a glob the way a local glob would: ``*``, ``?`` and
    ``[...]`` within one path segment, ``**`` across segments (``glob.translate`` is only in
    Python 3.13+)."""
    if hasattr(glob, "translate"):
        return re.fullmatch(glob.translate(pattern, recursive=True, include_hidden=False),
                            path) is not None
    return _match_segments(pattern.split("/"), path.split("/"))


def _match_segments(parts: list[str], names: list[str]) -> bool:
    """Segment-wise glob match; a ``**`` segment matches zero or more segments, and no
    wildcard matches a hidden (dot) segment, as ``glob.glob(recursive=True)``."""
    if not parts:
        return not names
    head, rest = parts[0], parts[1:]
    if head == "**":
        return any(_match_segments(rest, names[k:]) for k in range(len(names) + 1)
                   if not any(n.startswith(".") for n in names[:k]))
    if not names:
        return False
    name = names[0]
    if name.startswith(".") and not head.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, head) and _match_segments(rest, names[1:])


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


def file_slug(path: str) -> str:
    """A short filesystem-safe name for a file: its stem and a hash of its full path."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", posixpath.basename(path).split(".")[0])[:40]
    return f"{stem}-{hashlib.sha256(path.encode()).hexdigest()[:6]}"


def file_stem_prefix(path: str) -> str:
    """``.../alpaca_gpt4_data.json`` -> ``"alpaca_gpt4_data/"``: a key prefix per file."""
    return posixpath.basename(path).split(".")[0] + "/"


def record_key(record: Any, position: int, keys: tuple[str, ...] = ("id", "prompt_id")) -> str:
    if isinstance(record, dict):
        for k in keys:
            if record.get(k) not in (None, ""):
                return str(record[k])
    return f"#{position}"


@dataclass(frozen=True)
class SourceReader:
    """Reads one unit (a slice of one file) of a source into sample rows."""

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
        get_adapter(self.adapter)
        if self.adapter in RECORD_READERS:
            return RECORD_READERS[self.adapter](file, self.storage)
        fs, path = resolve(file, self.storage)
        return list(parse_records(read_bytes(fs, path), file))

    def read(self, file: str, start: int, stop: int) -> Batch:
        """Rows ``start..stop-1`` (by record position) of ``file``, rejects marked."""
        convert = get_adapter(self.adapter)
        prefix = KEY_PREFIXES[self.adapter](file) if self.adapter in KEY_PREFIXES else ""
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
            ctx = RecordContext(self.source, key, file, self.image_root, self.image_pattern)
            try:
                row = convert(record, ctx)
            except RecordError as exc:
                rows.append(_reject_row(sid, self.source, exc, record))
                continue
            except Exception as exc:  # noqa: BLE001 - a malformed record, whatever its shape
                rows.append(_reject_row(sid, self.source, RecordError(
                    "bad_record", f"{type(exc).__name__}: {exc}"), record))
                continue
            row.update({"id": sid, REJECT_STAGE: None, REJECT_REASON: None,
                        REJECT_DETAIL: None})
            rows.append(row)
        return _columns(rows)


def _reject_row(sid: str, source: str, exc: RecordError, record: Any) -> dict[str, Any]:
    return {"id": sid, "source": source, "task": "unknown", "image": None, "image_bytes": None,
            "conversations": [], "boxes": None,
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


# ------------------------------------------------------------------ conversation helpers

ROLE_ALIASES = {
    "human": "user", "user": "user", "usr": "user", "prompter": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "bard": "assistant", "model": "assistant", "claude": "assistant", "bot": "assistant",
    "system": "system",
}
IMAGE_TOKEN = re.compile(r"\s*<image>\s*")


def normalise_turns(turns: list[tuple[Any, Any]]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Validate (speaker, text) pairs into pf-ray turns.

    Returns the turns and notes for ``meta``. Raises RecordError for an empty conversation,
    an unknown speaker, a non-string or blank text, or no user / no assistant turn. Leading
    assistant turns (a conversation that opens with the model) are dropped and noted.
    """
    if not turns:
        raise RecordError("empty_conversation", "no turns")
    out: list[dict[str, str]] = []
    notes: dict[str, Any] = {}
    for i, (speaker, text) in enumerate(turns):
        role = ROLE_ALIASES.get(str(speaker).strip().lower())
        if role is None:
            raise RecordError("unknown_role", f"turn {i}: speaker {speaker!r}; known: "
                              f"{sorted(ROLE_ALIASES)}")
        if not isinstance(text, str):
            raise RecordError("bad_field", f"turn {i}: text is {type(text).__name__}, not str")
        if not text.strip():
            raise RecordError("empty_text", f"turn {i} ({role}) is empty or whitespace")
        out.append({"role": role, "content": text})
    dropped = 0
    first = 1 if out and out[0]["role"] == "system" else 0
    while len(out) > first + 1 and out[first]["role"] == "assistant":
        out.pop(first)
        dropped += 1
    if dropped:
        notes["dropped_leading_assistant_turns"] = dropped
    roles = {t["role"] for t in out}
    if "user" not in roles:
        raise RecordError("no_user_turn", "conversation has no user turn")
    if "assistant" not in roles:
        raise RecordError("no_assistant_turn", "conversation has no assistant turn")
    assert all(t["role"] in ROLES for t in out)
    return out, notes


# How an Alpaca-style record's non-empty ``input`` joins its instruction into the user turn:
# the Clever Flamingo authors' converter for these sources (instruct_flamingo 942955a,
# instruction_dataset/alpaca_cot_to_instruction_v2.py) writes instruction + "\ninput: " + input.
INPUT_JOIN = "\ninput: "


def instruction_turns(record: Any, answer_keys: tuple[str, ...] = ("output",)
                      ) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """An Alpaca-style ``{instruction, input, <answer>}`` record -> one user/assistant pair.

    The first of ``answer_keys`` present holds the response. A record without any of them
    (an instruction-only release) is rejected as ``no_assistant_turn``; a blank instruction
    with an input uses the input alone. Instruction, input and response are stripped.
    """
    if not isinstance(record, dict):
        raise RecordError("bad_record", f"expected an object, received {type(record).__name__}")
    if "instruction" not in record:
        raise RecordError("missing_field", "no 'instruction'")
    fields: dict[str, str] = {}
    for k in ("instruction", "input"):
        value = record.get(k) or ""
        if not isinstance(value, str):
            raise RecordError("bad_field", f"{k!r} is {type(value).__name__}, not str")
        fields[k] = value.strip()
    answer_key = next((k for k in answer_keys if k in record), None)
    if answer_key is None:
        raise RecordError("no_assistant_turn", f"no {' / '.join(map(repr, answer_keys))}: an "
                          "instruction without a response")
    answer = record[answer_key]
    prompt = INPUT_JOIN.join(v for v in (fields["instruction"], fields["input"]) if v)
    turns, notes = normalise_turns([("user", prompt),
                                    ("assistant", answer.strip() if isinstance(answer, str)
                                     else answer)])
    if fields["input"]:
        notes["has_input"] = True
    return turns, notes


def register_instruction_adapter(name: str, answer_keys: tuple[str, ...] = ("output",)
                                 ) -> Converter:
    """Register an adapter for Alpaca-style files: text-only samples, keys per file."""

    def convert(record: Any, ctx: RecordContext) -> dict[str, Any]:
        turns, notes = instruction_turns(record, answer_keys)
        return sample(ctx, task="text_instruction", image=None, turns=turns, meta=notes)

    return register(name, key_prefix=file_stem_prefix)(convert)


def strip_image_tokens(turns: list[dict[str, str]]) -> tuple[list[dict[str, str]], str | None]:
    """Remove ``<image>`` markers; report where the first one sat ("before"/"after" text)."""
    placement = None
    for t in turns:
        if "<image>" in t["content"]:
            if placement is None:
                placement = "before" if t["content"].lstrip().startswith("<image>") else "after"
            t["content"] = IMAGE_TOKEN.sub("\n", t["content"]).strip()
            if not t["content"]:
                raise RecordError("empty_text", f"{t['role']} turn holds only <image>")
    return turns, placement


def image_ref(record: dict[str, Any], ctx: RecordContext) -> str | None:
    """The record's image as a reference under the image root (escapes are rejected)."""
    from pf_ray.data.images import ImageError, ImageLoader

    image = record.get("image")
    if image in (None, ""):
        return None
    if isinstance(image, list):  # multi-image records: the first is the sample's image
        if not image:
            return None
        image = image[0]
    if not isinstance(image, str):
        raise RecordError("bad_field", f"image is {type(image).__name__}, not a path")
    try:
        return ImageLoader(image_root=ctx.image_root).locate(image) if ctx.image_root else image
    except ImageError as exc:
        raise RecordError(exc.reason, exc.detail) from exc


def pattern_image(ctx: RecordContext, default: str, **fields: Any) -> str | None:
    """The image a record names through ``source.image_pattern`` (or the adapter's default),
    resolved under the image root like any record's image."""
    pattern = ctx.image_pattern or default
    try:
        name = pattern.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise RecordError("bad_field", f"image_pattern {pattern!r} with {fields}: "
                          f"{type(exc).__name__}: {exc}") from exc
    return image_ref({"image": name}, ctx)


def pick(options: tuple[str, ...], key: str) -> str:
    """One of ``options`` chosen by a hash of the record key: stable across runs and
    machines (Python's own hash() is salted per process)."""
    return options[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)]


def text_field(record: dict[str, Any], field: str) -> str:
    """A required non-blank string field of a record, stripped."""
    if field not in record or record[field] is None:
        raise RecordError("missing_field", f"no {field!r}")
    value = record[field]
    if not isinstance(value, str):
        raise RecordError("bad_field", f"{field!r} is {type(value).__name__}, not str")
    if not value.strip():
        raise RecordError("empty_text", f"{field!r} is empty")
    return value.strip()


def id_field(record: dict[str, Any], field: str) -> int | str:
    """A required id (int or non-empty str; bools are not ids)."""
    value = record.get(field)
    if value is None or value == "":
        raise RecordError("missing_field", f"no {field!r}")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RecordError("bad_field", f"{field!r} is {type(value).__name__}, not an id")
    return value


def sample(ctx: RecordContext, *, task: str, image: str | None,
           turns: list[dict[str, str]], meta: dict[str, Any]) -> dict[str, Any]:
    return {"source": ctx.source, "task": task, "image": image, "image_bytes": None,
            "conversations": turns, "boxes": None,
            "meta": dumps_meta({"source_key": ctx.key, "file": posixpath.basename(ctx.file),
                                **meta})}
