"""The spec reference, generated from the spec models' own field descriptions.

Why generated: a hand-written table of keys drifts from the code (a renamed field, a new
default), while the pydantic models that ``pf-ray validate`` checks specs against already
carry each field's type, default and ``description=``. This module walks every registered
kind's spec class (nested models, lists of models, discriminated unions such as engine
configs) and renders one markdown table per kind; ``pf-ray spec-reference --output
docs/spec-reference.md`` writes the committed page, and a unit test fails when that page
differs from what the code generates.

The kinds come from the job registry (:func:`pf_ray.jobs.registry.spec_models`), loaded on
first use, never from import paths: a spec class may move between modules and the page
follows it. This module sits beside the CLI, above the registry; it imports no stage.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pf_ray.specs import SpecBase

COMMAND = "pf-ray spec-reference --output docs/spec-reference.md"
SHARED = "Keys shared by every kind"


@dataclass(frozen=True)
class Row:
    """One key of a spec: its dotted path, type, default and description (markdown-ready)."""

    path: str
    type: str
    default: str
    description: str
    when: str = ""  # the variant a key belongs to, e.g. "engine.kind: http"


# --- types -------------------------------------------------------------------------------

def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The annotation without ``Annotated[...]``, and the metadata that wrapper held."""
    meta: list[Any] = []
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        meta.extend(extra)
    return annotation, meta


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any) -> str:
    """A short, readable name of a field's type (``int``, ``"a" | "b"``, ``list[str]``)."""
    annotation, _ = _unwrap(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(v) for v in get_args(annotation))
    if _is_union(annotation):
        members = get_args(annotation)
        names = [type_name(m) for m in members if m is not type(None)]
        if type(None) in members:
            names.append("null")
        return " | ".join(dict.fromkeys(names))
    if origin in (list, tuple, set, frozenset, dict):
        inner = ", ".join(type_name(a) for a in get_args(annotation) if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if _is_model(annotation):
        return "job spec" if issubclass(annotation, SpecBase) else "object"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(metadata: list[Any]) -> str:
    """Bounds declared with ``Field(ge=..., min_length=...)``, as ``>= 1``, ``min length 1``."""
    out: list[str] = []
    for m in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                out.append(f"{sign} {getattr(m, attr)}")
        if isinstance(m, annotated_types.MinLen):
            out.append(f"min length {m.min_length}")
        if isinstance(m, annotated_types.MaxLen):
            out.append(f"max length {m.max_length}")
    return ", ".join(out)


# --- defaults ----------------------------------------------------------------------------

_UNSET = object()


def _default_value(field: FieldInfo) -> Any:
    """The field's default (a factory called), or ``_UNSET`` when the field is required."""
    if field.is_required():
        return _UNSET
    if field.default_factory is not None:
        try:
            return field.default_factory()  # type: ignore[call-arg]
        except TypeError:  # a factory that takes the validated data: not a static default
            return _UNSET
    return None if field.default is PydanticUndefined else field.default


def _default_text(value: Any, required: bool) -> str:
    if required:
        return "required"
    if isinstance(value, BaseModel):
        return "(keys below)"
    if value is _UNSET:
        return "computed"
    return f"`{json.dumps(value, default=str)}`"


# --- descriptions ------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line (the rest is for code readers)."""
    if not doc:
        return ""
    return _one_line(inspect.cleandoc(doc).split("\n\n")[0])


# The sections of docs/paper.md (the paper's facts the code cites as "paper.md §N"), so that a
# citation in a field's description becomes a link on the page.
PAPER_SECTIONS = {
    "1": "1-rewriter-training-data", "2": "2-distortions", "3": "3-model",
    "4": "4-rewriting-at-scale", "5": "5-filtering", "5.1": "51-length-filter",
    "5.2": "52-change-filter", "5.3": "53-captions", "5.4": "54-vqa",
    "6": "6-clever-flamingo", "7": "7-evaluation", "8": "8-official-code",
    "9": "9-re-implementation",
}
_CITATION = re.compile(r"(?:spec|paper\.md) §(\d+(?:\.\d+)?)")


def _paper_link(match: re.Match[str]) -> str:
    number = match.group(1)
    anchor = PAPER_SECTIONS.get(number) or PAPER_SECTIONS.get(number.split(".")[0])
    return f"[paper §{number}](paper.md#{anchor})" if anchor else match.group(0)


def _markdown(text: str) -> str:
    """A docstring or description as markdown: reST literals and roles become code spans,
    paper citations links."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([^`]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    return _CITATION.sub(_paper_link, text)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return _one_line(text).replace("|", "\\|")


# --- the walk ----------------------------------------------------------------------------

def _variants(annotation: Any, field: FieldInfo | None,
              meta: list[Any]) -> list[tuple[str, str, type[BaseModel]]] | None:
    """For a union of two or more models: (discriminator, tag, model) per member; None
    otherwise."""
    if not _is_union(annotation):
        return None
    members = [_unwrap(m)[0] for m in get_args(annotation) if m is not type(None)]
    models = [m for m in members if _is_model(m) and not issubclass(m, SpecBase)]
    if len(models) < 2:  # X | None around one model is no choice of variant
        return None
    disc = getattr(field, "discriminator", None) if field is not None else None
    for m in meta:
        disc = getattr(m, "discriminator", None) or disc
    disc = disc if isinstance(disc, str) else "kind"
    out = []
    for model in models:
        tag_field = model.model_fields.get(disc)
        tags = get_args(_unwrap(tag_field.annotation)[0]) if tag_field is not None else ()
        out.append((disc, str(tags[0]) if len(tags) == 1 else model.__name__, model))
    return out


def _nested(annotation: Any, field: FieldInfo | None,
            path: str) -> Iterator[tuple[str, type[BaseModel], str]]:
    """The models a field holds, each with the path prefix of its keys and its variant."""
    annotation, meta = _unwrap(annotation)
    variants = _variants(annotation, field, meta)
    if variants is not None:
        for disc, tag, model in variants:
            yield path, model, f"{path}.{disc}: {tag}"
        return
    if _is_union(annotation):  # X | None around one model, list, dict...
        for member in get_args(annotation):
            if member is not type(None):
                yield from _nested(member, None, path)
        return
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        for item in get_args(annotation):
            if item is not Ellipsis:
                yield from _nested(item, None, f"{path}[]")
    elif origin is dict and len(get_args(annotation)) == 2:
        yield from _nested(get_args(annotation)[1], None, f"{path}.<name>")
    elif _is_model(annotation) and not issubclass(annotation, SpecBase):
        yield path, annotation, ""


def field_rows(model: type[BaseModel], prefix: str = "", *, defaults: Any = None,
               skip: frozenset[str] = frozenset(), when: str = "",
               _seen: tuple[type[BaseModel], ...] = ()) -> list[Row]:
    """Every key of ``model``, nested keys after their parent, as table rows.

    ``defaults`` is the parent's default instance of ``model``, when it has one: a parent
    may default a nested model to other values than the nested class does (eval's
    ``decoding`` is ``DecodingConfig(max_new_tokens=256)``), and its keys show those.
    """
    rows: list[Row] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        path = f"{prefix}{name}"
        value = _default_value(field)
        if defaults is not None and not field.is_required():
            value = getattr(defaults, name, value)
        annotation, meta = _unwrap(field.annotation)
        kind = type_name(annotation)
        variants = _variants(*_optional_inner(annotation), field, meta)
        if variants:
            tags = " | ".join(json.dumps(tag) for _, tag, _ in variants)
            kind = f"object ({variants[0][0]}: {tags})" + (" | null" if "null" in kind else "")
        bounds = _constraints([*field.metadata, *meta])
        description = field.description or ""
        nested = list(_nested(field.annotation, field, path))
        if not description and len(nested) == 1:
            description = _first_paragraph(nested[0][1].__doc__)
        rows.append(Row(path, kind + (f" ({bounds})" if bounds else ""),
                        _default_text(value, field.is_required()),
                        _cell(_markdown(description)), when))
        for sub_prefix, sub, variant in nested:
            if sub in _seen:  # a recursive model: its keys are listed once, above
                continue
            sub_defaults = value if isinstance(value, sub) else None
            sub_rows = field_rows(sub, f"{sub_prefix}.", defaults=sub_defaults,
                                  when=variant or when, _seen=(*_seen, model))
            if variant:  # the discriminator first: it says which variant the keys belong to
                tag_path = f"{sub_prefix}.{variant.split(': ')[0].rsplit('.', 1)[-1]}"
                sub_rows.sort(key=lambda r: r.path != tag_path)
            rows.extend(sub_rows)
    return rows


def _optional_inner(annotation: Any) -> tuple[Any]:
    """``X`` for ``X | None`` where X is itself a (wrapped) union; else the annotation."""
    if _is_union(annotation):
        members = [m for m in get_args(annotation) if m is not type(None)]
        if len(members) == 1:
            return (_unwrap(members[0])[0],)
    return (annotation,)


def _table(rows: list[Row]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for r in rows:
        key = f"`{r.path}`" + (f" (when `{r.when}`)" if r.when else "")
        lines.append(f"| {key} | `{_cell(r.type)}` | {r.default} | {r.description} |")
    return lines


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def render(models: Mapping[str, type[BaseModel]] | None = None) -> str:
    """The spec reference page: the keys every spec shares, then one table per kind.

    ``models`` maps kind names to spec classes; by default, every registered kind and
    ``pipeline`` (:func:`pf_ray.jobs.registry.spec_models`, which loads the built-in kinds).
    """
    if models is None:
        from pf_ray.jobs.registry import spec_models

        models = spec_models()
    shared = frozenset(SpecBase.model_fields)
    titles = [SHARED, *(f"kind: {name}" for name in models)]
    out = [
        "# Spec reference",
        "",
        f"<!-- Generated by `{COMMAND}` from the spec models' field descriptions; "
        "do not edit by hand. -->",
        "",
        "Every key of every job spec, generated from the pydantic models that `pf-ray "
        "validate` checks specs against: the type, the default and the description each "
        "field carries in code. Unknown keys are errors. Paths: `a.b` is key `b` inside "
        "`a`; `a[].b` is key `b` of each item of the list `a`; `a.<name>.b` is key `b` of "
        "each entry of the mapping `a`; \"when `engine.kind: http`\" marks a key of one "
        "variant of a union. \"computed\": the default depends on other keys (see the "
        "description). What the kinds do: the stage pages under [docs/](./); how specs "
        f"run: [jobs.md](jobs.md). Regenerate with `{COMMAND}`.",
        "",
        *(f"- [{t}](#{_anchor(t)})" for t in titles),
        "",
        f"## {SHARED}",
        "",
        "`name`, `storage`, `ray` and `faults` exist in every spec (a pipeline passes its "
        "own `storage` and `faults` to jobs that set none).",
        "",
        *_table(field_rows(SpecBase)),
    ]
    for name, model in models.items():
        out += ["", f"## kind: {name}", ""]
        doc = _markdown(_first_paragraph(model.__doc__))
        if doc:
            out += [doc, ""]
        out += _table(field_rows(model, skip=shared))
    return "\n".join(out) + "\n"


# --- the CLI command ---------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``pf-ray spec-reference`` (registered by :mod:`pf_ray.cli`)."""
    parser.add_argument("--output", metavar="FILE", default=None,
                        help="write the page here (default: print it); the committed page "
                             "is docs/spec-reference.md")


def run(args: argparse.Namespace) -> int:
    page = render()
    if args.output is None:
        sys.stdout.write(page)
        return 0
    Path(args.output).write_text(page, encoding="utf-8")
    print(f"{args.output}: written ({page.count(chr(10))} lines)")
    return 0
