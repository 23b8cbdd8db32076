"""Where a training stage's model comes from and where it goes: a preset or a model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pf_ray.model.config import FlamingoConfig
from pf_ray.storage import is_uri, local_copy


def _is_preset(model: str) -> bool:
    from pf_ray.model.presets import PRESETS

    return model in PRESETS and not is_uri(model) and not Path(model).exists()


def model_config(model: str) -> FlamingoConfig:
    from pf_ray.model.checkpoint import read_config
    from pf_ray.model.presets import get_preset

    return get_preset(model) if _is_preset(model) else read_config(local_copy(model))


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
    return load_pretrained(local_copy(model))
