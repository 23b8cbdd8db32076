"""Where a training stage's model comes from and where it goes: a preset or a model folder.

A model folder in an object store is read no more than a caller needs: its config alone
(:func:`model_config`, one small read, nothing cached), its tokenizer (:func:`model_tokenizer`,
a cached copy of ``config.json`` and ``tokenizer/``), or all of it (:func:`build_model`, a
cached copy of the folder, downloaded once per machine: see :func:`pf_ray.storage.local_copy`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pf_ray.faults import ModelUnavailable
from pf_ray.model.config import FlamingoConfig
from pf_ray.specs import StorageConfig
from pf_ray.storage import is_uri, join, local_copy, read_bytes, resolve

# what a tokenizer needs of a model folder (see pf_ray.model.checkpoint's layout)
_TOKENIZER_PARTS = ("config.json", "tokenizer")


def is_preset(model: str) -> bool:
    """Whether ``model`` names a preset (and no folder or URI of that name exists)."""
    from pf_ray.model.presets import PRESETS

    return model in PRESETS and not is_uri(model) and not Path(model).exists()


def model_config(model: str, storage: StorageConfig | None = None) -> FlamingoConfig:
    """A preset's config, or a model folder's ``config.json`` (a URI's read in place: its
    weights are not copied; ``storage``: the store's endpoint and credentials).
    :class:`ModelUnavailable` when it cannot be read."""
    import json

    from pf_ray.model.checkpoint import CONFIG_NAME, read_config
    from pf_ray.model.presets import get_preset

    if is_preset(model):
        return get_preset(model)
    try:
        if is_uri(model):
            fs, inner = resolve(join(model, CONFIG_NAME), storage)
            return FlamingoConfig.from_dict(json.loads(read_bytes(fs, inner)))
        return read_config(model_folder(model, storage=storage))
    except ModelUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreadable config: the model is unusable
        raise ModelUnavailable(f"model {model!r}: config.json cannot be read "
                               f"({type(exc).__name__}: {exc})") from exc


def model_tokenizer(model: str, config: FlamingoConfig | None = None,
                    storage: StorageConfig | None = None) -> Any:
    """A preset's tokenizer, or a model folder's (of a URI, only ``config.json`` and
    ``tokenizer/`` are copied)."""
    from pf_ray.model.checkpoint import load_folder_tokenizer
    from pf_ray.model.tokenizer import load_tokenizer

    if is_preset(model):
        config = config or model_config(model)
        return load_tokenizer(config.tokenizer, mode=config.tokenizer_mode)
    return load_folder_tokenizer(model_folder(model, parts=_TOKENIZER_PARTS, storage=storage))


def build_model(model: str, seed: int = 0, storage: StorageConfig | None = None) -> Any:
    """A fresh preset (random weights, seeded) or a saved model folder."""
    import torch

    from pf_ray.model.checkpoint import load_pretrained
    from pf_ray.model.flamingo import build_flamingo
    from pf_ray.model.presets import get_preset

    if is_preset(model):
        torch.manual_seed(seed)
        return build_flamingo(get_preset(model))
    return load_pretrained(model_folder(model, storage=storage))


def model_folder(model: str, parts: tuple[str, ...] | None = None,
                 storage: StorageConfig | None = None) -> str:
    """A local copy of a model folder (or of ``parts`` of it), or :class:`ModelUnavailable`
    (a store that is down, a folder that is not there: every row would fail alike)."""
    try:
        return local_copy(model, storage, parts=parts)
    except Exception as exc:  # noqa: BLE001 - whatever stops the copy: the model is not there
        raise ModelUnavailable(f"model {model!r}: cannot be copied or found "
                               f"({type(exc).__name__}: {exc})") from exc

