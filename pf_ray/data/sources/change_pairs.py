"""What the change-captioning adapters share (``spot_the_diff``, ``image_editing_requests``,
``levir_cc``): two images per row (before, after), the pair's sentences as the raw answer.

Not an adapter itself (no ``ADAPTER``): the three modules build on it. Each row is one
``change_caption`` sample: ``image`` the before image, ``extra_images`` ``[after]`` (see
:func:`~pf_ray.data.sources.fields.sample`), the user turn one of a prompt tuple picked from
the record key, the assistant turn the kept sentences, one per line.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import Any

from pf_ray.data.sources.errors import RecordError
from pf_ray.data.sources.fields import RecordContext, image_ref, pick, sample, text_field

TASK = "change_caption"


def split_of(ctx: RecordContext) -> str:
    """The split a per-split release names by its file (``val.json`` -> ``"val"``)."""
    return posixpath.splitext(posixpath.basename(ctx.file))[0]


def plain_name(record: dict[str, Any], field: str) -> str:
    """A required file or folder name (a string, or an int id) that is only a name: the
    adapters build image paths from it under a folder of the image root, so a ``/``, ``\\``
    or ``..`` in it would step out of that folder (or the root): ``image_path_escape``."""
    value = record.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        name = str(value)
    else:
        name = text_field(record, field)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise RecordError("image_path_escape", f"{field!r} is {name!r}: a path, not a name "
                          "of a file under the image root")
    return name


def sentence_texts(value: Any, field: str) -> list[str]:
    """A released list of sentences (strings), each stripped with its inner whitespace
    collapsed; blank ones are dropped (the release has some). Raises for a value that is not
    a list of strings."""
    if value is None:
        raise RecordError("missing_field", f"no {field!r}")
    if not isinstance(value, list):
        raise RecordError("bad_field", f"{field!r} is {type(value).__name__}, not a list")
    bad = [s for s in value if not isinstance(s, str)]
    if bad:
        raise RecordError("bad_field", f"{field!r} holds a {type(bad[0]).__name__}, not a "
                          "sentence")
    return [" ".join(s.split()) for s in value if s.strip()]


def unique(sentences: Iterable[str]) -> list[str]:
    """Sentences in order, exact repeats dropped (the first kept)."""
    return list(dict.fromkeys(sentences))


def pair_images(ctx: RecordContext, before: str, after: str) -> tuple[str, str]:
    """Both images of a pair as references under the image root (escapes rejected)."""
    refs = [image_ref({"image": name}, ctx) for name in (before, after)]
    assert refs[0] is not None and refs[1] is not None  # non-empty names always resolve
    return refs[0], refs[1]


def change_sample(ctx: RecordContext, *, before: str, after: str, sentences: list[str],
                  prompts: tuple[str, ...], meta: dict[str, Any]) -> dict[str, Any]:
    """The row of one image pair; ``sentences`` must be the kept ones (at least one)."""
    if not sentences:
        raise RecordError("empty_text", "no sentence describes the pair")
    first, second = pair_images(ctx, before, after)
    return sample(ctx, task=TASK, image=first, extra_images=[second],
                  turns=[{"role": "user", "content": pick(prompts, ctx.key)},
                         {"role": "assistant", "content": "\n".join(sentences)}],
                  meta={**meta, "sentences": sentences})
