"""Which files a source names: paths, globs and URIs expanded the same way locally and on an
object store, and the short names (slugs, key prefixes) derived from a file's path."""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import posixpath
import re

import pyarrow.fs as pafs

from pf_ray.specs import StorageConfig
from pf_ray.storage import is_uri, resolve


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


def file_slug(path: str) -> str:
    """A short filesystem-safe name for a file: its stem and a hash of its full path."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", posixpath.basename(path).split(".")[0])[:40]
    return f"{stem}-{hashlib.sha256(path.encode()).hexdigest()[:6]}"


def file_stem_prefix(path: str) -> str:
    """``.../alpaca_gpt4_data.json`` -> ``"alpaca_gpt4_data/"``: a key prefix per file."""
    return posixpath.basename(path).split(".")[0] + "/"
