"""The vision tower: an open_clip image transformer that returns patch tokens.

OpenFlamingo v1 keeps open_clip's ``VisionTransformer`` as ``vision_encoder`` and reads its
token output (the last transformer block's output, class token dropped): ``ViT-L-14-336``
gives ``(336 / 14) ** 2 = 576`` tokens of width 1024. We keep the same module under the
same name, so released ``vision_encoder.*`` keys load as they are.

Whether those tokens pass through the final LayerNorm ``ln_post`` is
``VisionConfig.ln_post_on_tokens``. The open_clip that OpenFlamingo was trained with
applied ``ln_post`` to the pooled embedding only; later open_clip (3.x included) applies
it to the tokens too unless the tower is built with ``final_ln_after_pool`` (a field of
open_clip's own ``vision_cfg``, which we set). The pooled embedding is the same either way.

Tiny configs for tests and the offline quickstart live in ``open_clip_configs/`` and are
registered with open_clip on import of this module.

Preprocessing is open_clip's own transform for the model (resize, centre crop, normalise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from pf_ray.model.config import VisionConfig

CONFIG_DIR = Path(__file__).with_name("open_clip_configs")
_registered = False


def register_tiny_configs() -> None:
    """Make the configs in ``open_clip_configs/`` (e.g. ``pf-tiny-vit``) known to open_clip."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@dataclass
class VisionTower:
    """What :func:`build_vision_encoder` returns: the module and open_clip's transforms."""

    encoder: nn.Module  # open_clip VisionTransformer, output_tokens=True
    preprocess: Callable[[Any], torch.Tensor]  # PIL image -> (C, H, W) float, for inference
    preprocess_train: Callable[[Any], torch.Tensor]  # open_clip's training augmentation


def build_vision_encoder(cfg: VisionConfig, device: str | torch.device = "cpu") -> VisionTower:
    """Build the open_clip model ``cfg.model_name``, keep its image tower.

    Weights come from ``cfg.pretrained`` (a local file) or are random when it is None. The
    declared width / image size / patch size must match open_clip's config for the name.
    """
    register_tiny_configs()
    oc = open_clip.get_model_config(cfg.model_name)
    if oc is None:
        raise ValueError(f"vision.model_name: received {cfg.model_name!r}; allowed: an open_clip "
                         f"model name (open_clip.list_models()) or one in {CONFIG_DIR}")
    vc = oc["vision_cfg"]
    declared = {"width": cfg.width, "image_size": cfg.image_size, "patch_size": cfg.patch_size}
    actual = {k: vc.get(k) for k in declared}
    if declared != actual:
        raise ValueError(f"vision: declared {declared} but open_clip's {cfg.model_name!r} has {actual}")
    if cfg.pretrained is not None:
        from pf_ray.storage import local_copy

        cfg = replace(cfg, pretrained=local_copy(cfg.pretrained))  # s3://... -> local cache
    if cfg.pretrained is not None and not Path(cfg.pretrained).is_file():
        # open_clip would take a non-file as a hub tag and try to download it
        raise FileNotFoundError(f"vision.pretrained: {cfg.pretrained}: no such file (a local "
                                f"open_clip checkpoint is required; nothing is downloaded)")
    if vc.get("attentional_pool") and not cfg.ln_post_on_tokens:
        raise ValueError(f"vision: {cfg.model_name!r} pools with attention, where open_clip "
                         f"ignores final_ln_after_pool; set ln_post_on_tokens: true")
    # the tokens before ln_post (OpenFlamingo's) are open_clip's final_ln_after_pool
    vision_cfg = {**vc, "final_ln_after_pool": not cfg.ln_post_on_tokens}
    quiet = _DropRandomInitWarning()
    logging.getLogger().addFilter(quiet)  # open_clip warns on the root logger
    try:
        model, preprocess_train, preprocess = open_clip.create_model_and_transforms(
            cfg.model_name, pretrained=cfg.pretrained, device=device,
            force_quick_gelu=cfg.force_quick_gelu, weights_only=True, vision_cfg=vision_cfg)
    finally:
        logging.getLogger().removeFilter(quiet)
    encoder = model.visual
    encoder.output_tokens = True
    return VisionTower(encoder=encoder, preprocess=preprocess, preprocess_train=preprocess_train)


def patch_tokens(encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Patch tokens of images; any leading dims are kept.

    Args:
        encoder: an open_clip VisionTransformer with ``output_tokens = True``.
        pixels: ``(b, T_img, C, H, W)`` (or ``(n, C, H, W)``) preprocessed images.

    Returns:
        ``(b, T_img, v, D_v)`` (or ``(n, v, D_v)``): v = (H / patch) * (W / patch) patch
        tokens of the tower's width D_v; before ``ln_post`` when the tower was built with
        ``ln_post_on_tokens = False`` (see :func:`build_vision_encoder`).
    """
    lead = pixels.shape[:-3]
    out = encoder(pixels.reshape(-1, *pixels.shape[-3:]))
    if not isinstance(out, tuple):
        raise TypeError("vision encoder returned a pooled embedding only: set output_tokens = True")
    tokens = out[1]  # (n, v, D_v)
    return tokens.reshape(*lead, *tokens.shape[1:])
