"""Field helpers: what a converter knows besides its record, the checks of a record's
fields (each failure a :class:`RecordError` with a reason), image references, and the
sample row every adapter returns."""

from __future__ import annotations

import hashlib
import posixpath
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pf_ray.data.schema import dumps_meta
from pf_ray.data.sources.errors import RecordError
from pf_ray.specs import StorageConfig


@dataclass(frozen=True)
class RecordContext:
    """What a converter knows besides the record itself."""

    source: str  # name used in ids
    key: str  # the record's own key, made unique within its file
    file: str  # the file it came from
    image_root: str | None
    # The image path pattern (adapters that name images from ids): ``source.image_pattern``
    # when the spec sets it, else the adapter's default.
    image_pattern: str | None = None
    # The spec's storage settings, for converters that read more than their record (the
    # header of a record's image, to learn its size); None: the defaults.
    storage: StorageConfig | None = None


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


def karpathy_entry(record: dict[str, Any]) -> tuple[dict[str, Any], str, list[Any]]:
    """A Karpathy-layout record (:func:`~pf_ray.data.sources.readers.karpathy_images`): its
    image entry, file name and sentence objects, checked."""
    im = record["im"]
    if not isinstance(im, dict):
        raise RecordError("bad_record", f"image entry is {type(im).__name__}, not an object")
    filename = text_field(im, "filename")
    sentences = im.get("sentences")
    if not isinstance(sentences, list):
        raise RecordError("missing_field" if sentences is None else "bad_field",
                          f"'sentences' is {type(sentences).__name__}, not a list")
    return im, filename, sentences


def choice_list(record: dict[str, Any]) -> list[str]:
    """A multiple-choice record's ``choices``: 2-26 non-blank strings (one per letter)."""
    choices = record.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or len(choices) > 26:
        raise RecordError("bad_field", f"'choices' must be a list of 2-26 strings, received "
                          f"{choices!r}"[:300])
    if not all(isinstance(c, str) and c.strip() for c in choices):
        raise RecordError("bad_field", "'choices' holds a blank or non-string choice")
    return [c.strip() for c in choices]


def correct_index(record: dict[str, Any], field: str, n: int) -> int:
    """The index of the correct choice among ``n``, in ``record[field]``."""
    idx = record.get(field)
    if idx is None:
        raise RecordError("missing_field", f"no {field!r} (a test split has no answers)")
    if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < n:
        raise RecordError("bad_field", f"{field!r} is {idx!r}; expected an index 0..{n - 1}")
    return idx


def coco_box_to_xyxy(bbox: Sequence[float], width: float, height: float) -> tuple[float, ...]:
    """COCO ``[x, y, w, h]`` in pixels -> ``(x1, y1, x2, y2)`` in 0-1."""
    x, y, w, h = bbox
    return (x / width, y / height, (x + w) / width, (y + h) / height)


def pick(options: tuple[str, ...], key: str) -> str:
    """One of ``options`` chosen by a hash of the record key: stable across runs and
    machines (Python's own hash() is salted per process)."""
    return options[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)]


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


def pattern_names(pattern: str) -> set[str]:
    """The field names a ``str.format`` pattern uses (``"{split}/{image_id:012d}.jpg"`` ->
    ``{"split", "image_id"}``; a positional ``{}`` gives ``""``). Raises ValueError for a
    malformed pattern."""
    return {re.split(r"[.\[]", f)[0] for _, f, _, _ in string.Formatter().parse(pattern)
            if f is not None}


def pattern_image(ctx: RecordContext, **fields: Any) -> str | None:
    """The image a record names through its pattern (``source.image_pattern`` or the
    adapter's default, in ``ctx.image_pattern``), resolved under the image root like any
    record's image."""
    pattern = ctx.image_pattern
    if pattern is None:
        raise RecordError("bad_field", f"no image_pattern to name the image from {fields}")
    try:
        name = pattern.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise RecordError("bad_field", f"image_pattern {pattern!r} with {fields}: "
                          f"{type(exc).__name__}: {exc}") from exc
    return image_ref({"image": name}, ctx)


def sample(ctx: RecordContext, *, task: str, image: str | None,
           turns: list[dict[str, str]], meta: dict[str, Any],
           extra_images: Sequence[str] = ()) -> dict[str, Any]:
    """The row every converter returns (the unit reader adds the id and reject columns).

    ``extra_images``: the references of the images after ``image``, in order (a change
    caption's "after" image); the row's first user turn is about all of them."""
    if extra_images and image is None:
        raise ValueError("extra_images without a first image")
    return {"source": ctx.source, "task": task, "image": image, "image_bytes": None,
            "extra_images": [{"image": ref, "image_bytes": None} for ref in extra_images]
            or None,
            "conversations": turns, "boxes": None,
            "meta": dumps_meta({"source_key": ctx.key, "file": posixpath.basename(ctx.file),
                                **meta})}
