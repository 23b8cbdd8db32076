"""The Flamingo model: vision tower -> perceiver -> gated cross-attention inside a HF causal LM.

Module tree (``state_dict`` keys):

    vision_encoder.*              open_clip VisionTransformer (as OpenFlamingo v1)
    perceiver.*                   PerceiverResampler (as OpenFlamingo v1)
    gated_cross_attn_layers.{i}.* one block before decoder layer i, (i+1) % every == 0
    lang_encoder.*                the Hugging Face causal LM, its own keys untouched
                                  (``model.layers.{i}.*``, ``model.embed_tokens.weight``, ...)

OpenFlamingo v1 kept the blocks inside the LM (``lang_encoder.gated_cross_attn_layers.{i}``)
and wrapped each decoder layer (``lang_encoder.model.layers.{i}.decoder_layer.*``) by
swapping the LM's class at runtime; :mod:`pf_ray.model.checkpoint` maps those keys here.

Shapes through one forward (tiny preset; b=2 samples, T_img=2 images each, t=12 tokens):

    images       (b, T_img, C, H, W)      (2, 2, 3, 64, 64)
    patch tokens (b, T_img, v, D_v)       (2, 2, 16, 64)     v = (64/16)^2
    media        (b, T_img, n, D_v)       (2, 2, 8, 64)      n = perceiver latents
    index        (b, t)                   (2, 12)            image per token, xattn.media_index
    hidden       (b, t, D)                (2, 12, 256)       before each xattn layer
    logits       (b, t, vocab)            (2, 12, 1024)

Only the locations of decoder layers depend on the LM family (:func:`find_decoder_layers`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from packaging.version import Version
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.cache_utils import Cache

from pf_ray.model import xattn
from pf_ray.model.config import FlamingoConfig, ModelConfigError, validate
from pf_ray.model.lora import add_lora
from pf_ray.model.perceiver import PerceiverResampler
from pf_ray.model.trainability import DEFAULT, apply_trainability
from pf_ray.model.vision import build_vision_encoder, patch_tokens

IGNORE_INDEX = -100

# attribute paths of the decoder-layer list, per LM family (first match wins)
DECODER_LAYER_PATHS = ("model.layers", "transformer.h", "transformer.blocks",
                       "gpt_neox.layers", "model.decoder.layers")


def find_decoder_layers(lm: nn.Module) -> tuple[str, nn.ModuleList]:
    """Locate the LM's list of decoder layers; returns (attribute path, list)."""
    for path in DECODER_LAYER_PATHS:
        obj: Any = lm
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return path, obj
    raise ValueError(f"cannot find the decoder layers of {type(lm).__name__}; tried "
                     f"{', '.join(DECODER_LAYER_PATHS)}")


# transformers renamed torch_dtype -> dtype (4.56) and past_key_values -> cache (5.x)
_DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def cache_kwarg(lm: nn.Module) -> str:
    """The name under which this LM's forward takes its KV cache."""
    params = inspect.signature(type(lm).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def build_language_model(config: FlamingoConfig, dtype: torch.dtype) -> PreTrainedModel:
    """The HF causal LM from ``config.lm`` (random, or local weights; no remote code)."""
    hf = dict(config.lm.hf_config)
    model_type = hf.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **hf)
    kw: dict[str, Any] = {_DTYPE_KWARG: dtype, "trust_remote_code": False}
    if config.lm.pretrained is None:
        lm = AutoModelForCausalLM.from_config(hf_config, **kw)
    else:
        lm = AutoModelForCausalLM.from_pretrained(config.lm.pretrained, local_files_only=True, **kw)
        got = {k: getattr(lm.config, k) for k in ("hidden_size", "num_hidden_layers")}
        want = {k: hf[k] for k in got if k in hf}
        if any(got[k] != want[k] for k in want):
            raise ValueError(f"lm.pretrained {config.lm.pretrained}: has {got}, config declares {want}")
        if lm.get_input_embeddings().num_embeddings != config.lm.vocab_size:
            # new rows for <|endofchunk|>, <image>, <PAD> (32000 -> 32003 for LLaMA)
            lm.resize_token_embeddings(config.lm.vocab_size, mean_resizing=False)
    return lm


@contextmanager
def _placement(device: str | torch.device) -> Iterator[None]:
    """Where new parameters and buffers go. On ``meta`` only the parameters go there
    (accelerate's ``init_empty_weights``): buffers that no state dict holds, such as the
    LM's rotary frequencies, are computed for real, so a model materialised later with
    ``to_empty`` needs only its state dict."""
    if torch.device(device).type != "meta":
        with torch.device(device):
            yield
        return
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        yield


@dataclass
class FlamingoOutput:
    logits: torch.Tensor  # (b, t, vocab) (or (b, k, vocab) with logits_to_keep=k)
    loss: torch.Tensor | None  # mean token cross-entropy over labels != -100
    cache: Cache | None  # the LM's KV cache (use_cache=True)
    past_images: torch.Tensor  # (b,) <image> tokens seen so far, for the next cached call


class FlamingoModel(nn.Module):
    def __init__(self, config: FlamingoConfig, *, device: str | torch.device = "cpu"):
        super().__init__()
        errors = validate(config)
        if errors:
            raise ModelConfigError(errors)
        self.config = config
        dtype = getattr(torch, config.dtype)
        with _placement(device):
            tower = build_vision_encoder(config.vision, device=device)
            self.vision_encoder = tower.encoder
            self.preprocess, self.preprocess_train = tower.preprocess, tower.preprocess_train
            dim_v = config.vision.width
            self.perceiver = PerceiverResampler(dim_v, config.perceiver)
            self.lang_encoder = build_language_model(config, dtype)
            dim = config.lm.hidden_size
            self.gated_cross_attn_layers = xattn.build_blocks(
                dim, dim_v, config.xattn, config.lm.num_layers)
            if config.lora is not None:
                add_lora(self.lang_encoder, config.lora)
        if torch.device(device).type == "meta":
            # init_empty_weights re-creates every registered parameter, so an output head
            # tied to the embeddings got its own: tie them again
            self.lang_encoder.tie_weights()
        self.to(dtype)  # one dtype throughout (LoRA included); autocast is the trainer's choice
        self.decoder_layers_path, layers = find_decoder_layers(self.lang_encoder)
        if len(layers) != config.lm.num_layers:
            raise ValueError(f"lm has {len(layers)} decoder layers; config declares "
                             f"{config.lm.num_layers}")
        self._hooks = xattn.attach(layers)
        self._cache_kwarg = cache_kwarg(self.lang_encoder)
        apply_trainability(self, DEFAULT)

    # ------------------------------------------------------------------ images

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images to perceiver latents.

        Args:
            pixels: ``(b, T_img, C, H, W)`` or ``(n, C, H, W)`` preprocessed images.

        Returns:
            ``(b, T_img, n_latents, D_v)`` or ``(n, n_latents, D_v)``.
        """
        pixels = pixels.to(self.perceiver.latents.dtype)
        return self.perceiver(patch_tokens(self.vision_encoder, pixels))

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor | None = None,
        *,
        media: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        past_images: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> FlamingoOutput:
        """Next-token logits of text interleaved with images.

        Args:
            input_ids: ``(b, t)``; ``<image>`` tokens mark where images go.
            images: ``(b, T_img, C, H, W)`` preprocessed images (or pass ``media``).
            media: ``(b, T_img, n, D_v)`` latents from :meth:`encode_images`, e.g. computed
                once and reused for every decoding step.
            image_mask: ``(b, T_img)`` bool, False for padding images (default: all real).
            attention_mask: ``(b, past + t)``, 0 on padding (left padding for generation).
            position_ids: ``(b, t)``; default: the LM's (positions count from the cache).
            labels: ``(b, t)`` target ids, -100 = no loss; shifted inside (predict t+1 from t).
            cache, use_cache: the LM's KV cache.
            past_images: ``(b,)`` ``<image>`` tokens already in the cache (returned by the
                previous call as ``past_images``).
            logits_to_keep: if > 0, logits of the last k positions only.
        """
        if images is not None and media is not None:
            raise ValueError("pass images or media, not both")
        if labels is not None and logits_to_keep:
            raise ValueError("labels need the logits of every position: logits_to_keep must be 0")
        if images is not None:
            media = self.encode_images(images)
        num_media = 0 if media is None else media.shape[1]
        locations = input_ids == self.config.tokens.media
        index = xattn.media_index(locations, self.config.xattn.mask, past_images)
        index = xattn.restrict_to_available(index, image_mask, num_media)
        ctx = xattn.CrossAttentionInputs(self.gated_cross_attn_layers, media, index)
        kwargs: dict[str, Any] = {xattn.XATTN_KWARG: ctx, self._cache_kwarg: cache}
        if logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep
        out = self.lang_encoder(input_ids=input_ids, attention_mask=attention_mask,
                                position_ids=position_ids, use_cache=use_cache, **kwargs)
        seen = locations.long().sum(-1)
        if past_images is not None:
            seen = seen + past_images.to(seen.device)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(),
                                   labels[:, 1:].flatten().to(out.logits.device),
                                   ignore_index=IGNORE_INDEX)
        new_cache = out.cache if hasattr(out, "cache") else out.past_key_values
        return FlamingoOutput(logits=out.logits, loss=loss, cache=new_cache, past_images=seen)

    # ------------------------------------------------------------------ helpers

    @property
    def decoder_layers(self) -> nn.ModuleList:
        return find_decoder_layers(self.lang_encoder)[1]

    def num_parameters(self, prefix: str = "") -> int:
        return sum(p.numel() for n, p in self.named_parameters() if n.startswith(prefix))


def build_flamingo(config: FlamingoConfig | dict[str, Any],
                   device: str | torch.device = "cpu") -> FlamingoModel:
    """Build the model from a config (or its dict); ``device="meta"`` allocates no parameter
    (buffers are real: see :func:`_placement`)."""
    if isinstance(config, dict):
        config = FlamingoConfig.from_dict(config)
    return FlamingoModel(config, device=device)
