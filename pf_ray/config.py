"""Spec loading: YAML -> ``${VAR}`` expansion -> overrides -> validation, errors all at once.

A spec file is YAML whose ``kind`` names a registered job kind (:mod:`pf_ray.jobs.registry`;
the built-in ones are listed in :mod:`pf_ray.kinds`) or ``pipeline``. Loading goes: parse
YAML -> expand ``${VAR}`` / ``${VAR:-default}`` in strings -> apply ``dotted.key=value``
overrides -> validate against the registered spec classes. Every problem of a file is
collected and reported at once as a :class:`SpecError`, each line naming the dotted field
path, what was received and what is allowed. The spec classes themselves live beside their
stages (``pf_ray/<stage>/spec.py``) and share :mod:`pf_ray.specs`.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from pf_ray.jobs import registry

# ---------------------------------------------------------------- errors


class SpecError(ValueError):
    """All problems found in one spec, each as ``path: message``."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} error(s)\n{lines}")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through unions, lists, Annotated...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    if get_origin(annotation) is not None or isinstance(annotation, types.UnionType):
        for arg in get_args(annotation):
            found += _models_in(arg)
    return found


def _kind_tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    tags = get_args(field.annotation) if field is not None else ()
    return tags[0] if len(tags) == 1 and isinstance(tags[0], str) else None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the last element of a pydantic error location.

    Walks the spec classes from the root; where a field holds several models (a union
    discriminated on ``kind``), the kind tag that pydantic puts in the location picks one.
    """
    models = registry.spec_models()
    if not loc or loc[0] not in models:
        return None
    candidates: list[type[BaseModel]] = [models[loc[0]]]
    for part in loc[1:-1]:
        tagged = [m for m in candidates if _kind_tag(m) == part]
        if tagged:
            candidates = tagged
            continue
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in candidates:
            field = m.model_fields.get(part)
            if field is not None:
                nxt += _models_in(field.annotation)
        if not nxt:
            return None
        candidates = nxt
    return candidates[0] if candidates else None


def _tags() -> set[str]:
    """Every kind tag a location may hold: job kinds and the kinds of nested unions."""
    tags = set(registry.kind_names())
    todo = list(registry.spec_models().values())
    seen: set[type[BaseModel]] = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        tag = _kind_tag(m)
        if tag:
            tags.add(tag)
        for field in m.model_fields.values():
            todo += _models_in(field.annotation)
    return tags


_WRAPPER_LOC = re.compile(r"^(tagged-union|union|function-\w+|str|json-or-python)\b")


def _clean_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(path shown to users, path for model lookup), without pydantic's union/tag parts."""
    tags = _tags()
    shown: list[Any] = []
    lookup: list[Any] = []
    after_tag_slot = True  # a kind tag may follow the root, a list index, a union part or a field
    for part in loc:
        if isinstance(part, str) and _WRAPPER_LOC.match(part):
            after_tag_slot = True
            continue
        if isinstance(part, str) and after_tag_slot and part in tags and (
                not lookup or _field_is_union(lookup)):
            lookup.append(part)
            after_tag_slot = False
            continue
        shown.append(part)
        lookup.append(part)
        after_tag_slot = True
    return tuple(shown), tuple(lookup)


def _field_is_union(lookup: list[Any]) -> bool:
    """Whether the field at ``lookup`` holds a union of kinds (so a tag may come next)."""
    if isinstance(lookup[-1], int):
        return True
    owner = _model_at(tuple(lookup))
    field = owner.model_fields.get(lookup[-1]) if owner is not None else None
    return field is not None and len(_models_in(field.annotation)) > 1


def _format_error(err: Mapping[str, Any]) -> str:
    shown, lookup = _clean_loc(tuple(err["loc"]))
    path = ".".join(str(p) for p in shown)
    where = path or "<root>"
    kind, ctx = err["type"], err.get("ctx") or {}
    received = _short(err.get("input"))
    if kind == "extra_forbidden":
        model = _model_at(lookup)
        allowed = sorted(model.model_fields) if model else []
        return f"{where}: unknown key (received {received}); allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        return f"{where}: required field is missing"
    prefix = f"{path}.kind" if path else "kind"
    if kind == "union_tag_invalid":
        return f"{prefix}: unknown kind {ctx.get('tag')!r}; allowed: {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        allowed = ", ".join(registry.kind_names()) if prefix == "kind" else ctx.get(
            "expected_tags", "")
        return f"{prefix}: required field is missing; allowed: {allowed}"
    if kind == "literal_error":
        return f"{where}: received {received}; allowed: {ctx.get('expected')}"
    if kind in ("model_type", "model_attributes_type", "dict_type") and shown and shown[0] == "jobs":
        return f"{where}: expected a spec file path or a job mapping (received {received})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return msg and f"{where}: {msg}" + ("" if "received" in msg else f" (received {received})")


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per pydantic error: dotted path, what was received, what is allowed."""
    lines: list[str] = []
    for err in exc.errors():
        # A pipeline entry that is neither a path nor a job yields one error per union arm;
        # the string arm's "not a string" error only adds noise.
        if err["type"] == "string_type" and "str" in err["loc"]:
            continue
        line = _format_error(err)
        if line not in lines:
            lines.append(line)
    return lines


# ---------------------------------------------------------------- loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, env: Mapping[str, str] | None = None, *, _path: str = "",
               _problems: list[str] | None = None) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of ``data``.

    An unset variable without a default is an error naming its path (collected in
    ``_problems`` when given, raised otherwise).
    """
    env = os.environ if env is None else env
    top = _problems is None
    problems: list[str] = [] if top else _problems  # type: ignore[assignment]

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        problems.append(f"{_path or '<root>'}: environment variable {name} is not set "
                        f"(write ${{{name}:-default}} to give a default)")
        return match.group(0)

    if isinstance(data, str):
        out: Any = _VAR.sub(sub, data)
    elif isinstance(data, dict):
        out = {k: expand_env(v, env, _path=f"{_path}.{k}" if _path else str(k),
                             _problems=problems) for k, v in data.items()}
    elif isinstance(data, list):
        out = [expand_env(v, env, _path=f"{_path}.{i}" if _path else str(i),
                          _problems=problems) for i, v in enumerate(data)]
    else:
        out = data
    if top and problems:
        raise SpecError("spec", problems)
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; values are parsed as YAML (``n=5`` is an int).

    List items are addressed by index (``jobs.0.seed=3``). Missing dict levels are created.
    """
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {item!r}: expected dotted.key=value")
            continue
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        parts = key.split(".")
        node: Any = data
        try:
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
            last = parts[-1]
            if isinstance(node, list):
                node[int(last)] = value
            elif isinstance(node, dict):
                node[last] = value
            else:
                raise TypeError(f"{type(node).__name__} has no keys")
        except (ValueError, IndexError, TypeError) as exc:
            problems.append(f"override {key}: cannot set ({exc})")
    if problems:
        raise SpecError("overrides", problems)
    return data


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML spec file into a dict (errors name the file and line)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise SpecError(str(path), [f"<root>: expected a mapping with a 'kind' key, "
                                    f"received {type(data).__name__}"])
    return data


def parse_spec(data: dict[str, Any], *, source: str = "spec", base_dir: Path | None = None,
               env: Mapping[str, str] | None = None) -> Any:
    """Expand variables, validate, and (for pipelines) load and validate referenced files.

    Raises :class:`SpecError` with every problem found, nested files included.
    """
    problems: list[str] = []
    data = expand_env(data, env, _problems=problems)
    job = None
    try:
        job = registry.spec_adapter().validate_python(data)
    except ValidationError as exc:
        problems.extend(format_validation_error(exc))
    if job is not None and registry.is_pipeline(job):
        resolved = []
        for i, entry in enumerate(job.jobs):
            if isinstance(entry, str):
                ref = Path(entry)
                if not ref.is_absolute() and base_dir is not None:
                    ref = base_dir / ref
                try:
                    sub = parse_spec(read_spec_file(ref), source=str(ref),
                                     base_dir=ref.parent, env=env)
                except FileNotFoundError:
                    problems.append(f"jobs.{i}: spec file not found (received {entry!r})")
                    continue
                except SpecError as exc:
                    problems.extend(f"jobs.{i} ({entry}): {p}" for p in exc.problems)
                    continue
                if registry.is_pipeline(sub):
                    resolved.extend(sub.jobs)
                else:
                    resolved.append(sub)
            else:
                resolved.append(entry)
        job = job.model_copy(update={"jobs": resolved})
    if problems:
        raise SpecError(source, problems)
    return job


def load_spec(path: str | Path, overrides: list[str] | None = None,
              env: Mapping[str, str] | None = None) -> Any:
    """Read, override, expand and validate a spec file."""
    path = Path(path)
    data = read_spec_file(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_spec(data, source=str(path), base_dir=path.parent, env=env)
