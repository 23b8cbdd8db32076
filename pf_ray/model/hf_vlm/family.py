"""Which model family a spec's model is: ``flamingo`` (pf-ray's own OpenFlamingo layout) or
``hf_vlm`` (any transformers image-text-to-text model).

In a spec, ``model:`` is either a string (a Flamingo preset or model folder, as before, or
an ``hf_vlm`` preset name) or a mapping that names the family::

    model: {family: hf_vlm, path: s3://bucket/models/smolvlm-256m}

:func:`split_model_field` turns the mapping into the spec's ``model`` (the path) and
``model_family`` fields, so the rest of the code reads one string as before.

``hf_vlm`` presets are folders written once into the cache (offline, from configs):

``tiny-idefics3``   :func:`pf_ray.model.hf_vlm.tiny.build_tiny_idefics3` with the tiny LM
``smol-vlm``        the same layout over the real SmolLM2-135M-Instruct (SmolVLM-256M's LM)
``tiny-llava``      :func:`pf_ray.model.hf_vlm.tiny.build_tiny_llava` (a second layout)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

Family = Literal["flamingo", "hf_vlm"]
FAMILIES: tuple[str, ...] = typing.get_args(Family)


def _idefics3(lm: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        from pf_ray.model.hf_vlm.tiny import build_tiny_idefics3

        return build_tiny_idefics3(folder, lm=lm)  # type: ignore[arg-type]
    return build


def _llava(folder: Path) -> Path:
    from pf_ray.model.hf_vlm.tiny import build_tiny_llava

    return build_tiny_llava(folder)


HF_VLM_PRESETS: dict[str, Callable[[Path], Path]] = {
    "tiny-idefics3": _idefics3("tiny"),
    "smol-vlm": _idefics3("smollm2"),
    "tiny-llava": _llava,
}


def is_hf_vlm_preset(model: str) -> bool:
    return model in HF_VLM_PRESETS and not Path(model).exists()


def hf_vlm_preset_folder(name: str, root: Path | None = None) -> Path:
    """The cached folder of an ``hf_vlm`` preset, written on first use (to a temporary
    folder, then renamed: concurrent workers never see half a folder)."""
    from pf_ray.model.smol import cache_root

    if name not in HF_VLM_PRESETS:
        raise KeyError(f"hf_vlm preset {name!r}: allowed: {', '.join(HF_VLM_PRESETS)}")
    target = (root or cache_root()) / f"hf-vlm-{name}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".hf-vlm-{name}-", dir=target.parent))
    try:
        HF_VLM_PRESETS[name](tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: the same bytes
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def split_model_field(data: Any, field: str = "model") -> Any:
    """A spec dict's ``model: {family, path}`` as ``model: path`` + ``model_family``; a
    string stays (its family: ``hf_vlm`` for an ``hf_vlm`` preset, else ``flamingo``).
    Errors name the field, what was received and what is allowed."""
    if not isinstance(data, dict) or field not in data:
        return data
    value = data[field]
    key = f"{field}_family" if field != "model" else "model_family"
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"family", "path"})
        if unknown or "path" not in value:
            raise ValueError(f"{field}: received {value!r}; allowed: a string, or a mapping "
                             "with path and family (flamingo | hf_vlm)")
        family = value.get("family", "flamingo")
        if family not in FAMILIES:
            raise ValueError(f"{field}.family: received {family!r}; allowed: "
                             f"{', '.join(FAMILIES)}")
        return {**data, field: value["path"], key: family}
    if isinstance(value, str) and key not in data and is_hf_vlm_preset(value):
        return {**data, key: "hf_vlm"}
    return data


def folder_family(config: dict[str, Any]) -> Family:
    """The family of a model folder's ``config.json``: pf-ray's Flamingo config has
    ``vision`` / ``lm`` / ``tokens``; a transformers one a ``model_type``."""
    if {"vision", "lm", "tokens"} <= set(config):
        return "flamingo"
    if "model_type" in config:
        return "hf_vlm"
    raise ValueError(f"config.json with keys {sorted(config)[:8]} is neither a pf-ray Flamingo "
                     "config (vision, lm, tokens) nor a transformers one (model_type)")


def check_folder_family(folder: str | Path, expected: Family) -> None:
    """Raise when a local model folder is of another family than the spec says, naming both."""
    config = json.loads((Path(folder) / "config.json").read_text())
    found = folder_family(config)
    if found != expected:
        if found == "hf_vlm":
            what = f"config.json model_type {config.get('model_type')!r}"
            hint = "model: {family: hf_vlm, path: ...} (a rewrite engine: kind hf_vlm or vllm)"
        else:
            what, hint = "a pf-ray Flamingo config.json", "model: <path> (family flamingo)"
        raise ValueError(f"model {str(folder)!r} is an {found} model folder ({what}), but "
                         f"the spec's family is {expected!r}; write {hint}")
