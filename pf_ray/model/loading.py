"""Where a training stage's model comes from and where it goes: a preset or a model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pf_ray.faults import ModelUnavailable
from pf_ray.model.config import FlamingoConfig
from pf_ray.storage import is_uri, local_copy


def _is_preset(model: str) -> bool:
    from pf_ray.model.presets import PRESETS

    return model in PRESETS and not is_uri(model) and not Path(model).exists()


def model_config(model: str) -> FlamingoConfig:
    from pf_ray.model.checkpoint import read_config
    from pf_ray.model.presets import get_preset

    if _is_preset(model):
        return get_preset(model)
    try:
        return read_config(_local(model))
    except ModelUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreadable config: the model is unusable
        raise ModelUnavailable(f"model {model!r}: config.json cannot be read "
                               f"({type(exc).__name__}: {exc})") from exc


def model_tokenizer(model: str, config: FlamingoConfig | None = None) -> Any:
    from pf_ray.model.checkpoint import load_folder_tokenizer
    from pf_ray.model.tokenizer import load_tokenizer

    if _is_preset(model):
        config = config or model_config(model)
        return load_tokenizer(config.tokenizer, mode=config.tokenizer_mode)
    return load_folder_tokenizer(local_copy(model))


def build_model(model: str, seed: int = 0) -> Any:
    """A fresh preset (random weights, seeded) or a saved model folder."""
    import torch

    from pf_ray.model.checkpoint import load_pretrained
    from pf_ray.model.flamingo import build_flamingo
    from pf_ray.model.presets import get_preset

    if _is_preset(model):
        torch.manual_seed(seed)
        return build_flamingo(get_preset(model))
    return load_pretrained(_local(model))


def _local(model: str) -> str:
    """A local copy of a model folder, or :class:`ModelUnavailable` (a store that is down,
    a folder that is not there: every row would fail alike)."""
    try:
        return local_copy(model)
    except Exception as exc:  # noqa: BLE001 - whatever stops the copy: the model is not there
        raise ModelUnavailable(f"model {model!r}: cannot be copied or found "
                               f"({type(exc).__name__}: {exc})") from exc


def is_preset(model: str) -> bool:
    """Whether ``model`` names a preset (and no folder or URI of that name exists)."""
    return _is_preset(model)


def model_folder(model: str) -> str:
    """A local path of a model folder (a cached copy of a URI), or ModelUnavailable."""
    return _local(model)
