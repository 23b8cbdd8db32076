"""The Flamingo model's configuration: frozen dataclasses that round-trip through JSON.

A :class:`FlamingoConfig` says everything needed to rebuild the model's modules (not its
weights): the open_clip vision tower, the perceiver resampler, the gated cross-attention
blocks, the Hugging Face language model (as a plain config dict, never remote code), the
LoRA settings and the ids of the special tokens. ``config.json`` in a saved model folder is
``FlamingoConfig.to_dict()``.

Unknown keys are errors; every error of one dict is reported at once, each with the key's
dotted path, what was received and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

MaskMode = Literal["next_image", "previous_image"]
MASK_MODES: tuple[str, ...] = typing.get_args(MaskMode)
# how a tokenizer folder is read (see pf_ray.model.tokenizer.load_tokenizer)
TokenizerMode = Literal["auto", "llama_v1", "llama_v1_slow"]
TOKENIZER_MODES: tuple[str, ...] = typing.get_args(TokenizerMode)
DTYPES = ("float32", "bfloat16", "float16")


class ModelConfigError(ValueError):
    """A model config dict that does not match the declared dataclasses."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__(f"{len(errors)} model config error(s):\n  - " + "\n  - ".join(errors))


@dataclass(frozen=True)
class VisionConfig:
    """open_clip image tower.

    ``num_patches = (image_size // patch_size) ** 2`` patch tokens of ``width`` features come
    out of it (the class token is dropped by open_clip's ``output_tokens``).

    ``ln_post_on_tokens``: whether the patch tokens pass through the tower's final LayerNorm
    (``ln_post``). OpenFlamingo v1 (and the released Polite / Clever Flamingo perceivers)
    was trained on the tokens *before* it: the open_clip of its time applied ``ln_post`` to
    the pooled embedding only. Later open_clip (3.x here) applies it to every token unless
    the tower's ``final_ln_after_pool`` is set; False (the default) sets it, True gives the
    newer behaviour. The pooled embedding is the same either way.
    """

    model_name: str  # an open_clip model name, e.g. "ViT-L-14-336"
    width: int  # transformer width: the patch tokens' feature size D_v
    image_size: int
    patch_size: int
    pretrained: str | None = None  # a local open_clip checkpoint file; None = random weights
    # openai CLIP weights were trained with QuickGELU; open_clip only switches it on by itself
    # for the "openai" tag, so a local copy of those weights needs it forced.
    force_quick_gelu: bool = False
    ln_post_on_tokens: bool = False

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class PerceiverConfig:
    """Perceiver resampler; its width is the vision width (OpenFlamingo v1 has no projection)."""

    depth: int = 6
    num_latents: int = 64
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4


@dataclass(frozen=True)
class CrossAttentionConfig:
    """Gated cross-attention blocks, inserted before decoder layers with ``(i+1) % every == 0``."""

    every: int = 4
    heads: int = 8
    dim_head: int = 64
    ffn: bool = True  # the gated feed-forward after the cross-attention (polite-flamingo's xattn_no_ffn = not ffn)
    ff_mult: int = 4
    mask: MaskMode = "next_image"

    def layer_indices(self, num_layers: int) -> list[int]:
        return [i for i in range(num_layers) if (i + 1) % self.every == 0]


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the language model's linear layers (peft). Paper: r 64, alpha 16, dropout 0.1."""

    r: int = 64
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LanguageConfig:
    """The Hugging Face causal LM: ``hf_config`` is a ``config.json``-style dict with
    ``model_type`` (built with ``AutoConfig.for_model``); ``pretrained`` an optional local
    folder of weights (loaded with ``trust_remote_code=False``)."""

    hf_config: dict[str, Any]
    pretrained: str | None = None

    @property
    def model_type(self) -> str:
        return str(self.hf_config["model_type"])

    @property
    def num_layers(self) -> int:
        return int(self.hf_config["num_hidden_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.hf_config["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.hf_config["vocab_size"])


@dataclass(frozen=True)
class TokenIds:
    """Ids of the special tokens the model itself needs (see :mod:`pf_ray.model.tokenizer`)."""

    media: int  # "<image>"
    endofchunk: int  # "<|endofchunk|>"
    pad: int
    bos: int
    eos: int


@dataclass(frozen=True)
class FlamingoConfig:
    vision: VisionConfig
    lm: LanguageConfig
    tokens: TokenIds
    tokenizer: str  # "tiny-bpe" or a local tokenizer folder (see tokenizer.load_tokenizer)
    tokenizer_mode: TokenizerMode = "auto"  # how the folder is read (tokenizer.load_tokenizer)
    perceiver: PerceiverConfig = field(default_factory=PerceiverConfig)
    xattn: CrossAttentionConfig = field(default_factory=CrossAttentionConfig)
    lora: LoraSettings | None = None
    dtype: str = "float32"
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlamingoConfig:
        errors: list[str] = []
        out = _build(cls, data, "", errors)
        if errors:
            raise ModelConfigError(errors)
        return out

    def replace(self, **changes: Any) -> FlamingoConfig:
        return dataclasses.replace(self, **changes)

    def without_pretrained(self) -> FlamingoConfig:
        """This config with no pretrained paths: for a model whose weights come from
        elsewhere (a model folder, a rank that broadcasts them), so they are not read."""
        return self.replace(vision=dataclasses.replace(self.vision, pretrained=None),
                            lm=dataclasses.replace(self.lm, pretrained=None))

    @property
    def xattn_layers(self) -> list[int]:
        return self.xattn.layer_indices(self.lm.num_layers)


# --------------------------------------------------------------------------- validation


def validate(config: FlamingoConfig) -> list[str]:
    """Semantic checks beyond types; returns the errors (empty when fine)."""
    errors = []
    if config.xattn.mask not in MASK_MODES:
        errors.append(f"xattn.mask: received {config.xattn.mask!r}; allowed: {MASK_MODES}")
    if config.tokenizer_mode not in TOKENIZER_MODES:
        errors.append(f"tokenizer_mode: received {config.tokenizer_mode!r}; allowed: "
                      f"{TOKENIZER_MODES}")
    if config.dtype not in DTYPES:
        errors.append(f"dtype: received {config.dtype!r}; allowed: {DTYPES}")
    if config.xattn.every < 1 or config.xattn.every > config.lm.num_layers:
        errors.append(f"xattn.every: received {config.xattn.every}; allowed: 1..{config.lm.num_layers}")
    if "model_type" not in config.lm.hf_config:
        errors.append("lm.hf_config.model_type: missing (e.g. 'llama', 'qwen2')")
    vocab = config.lm.vocab_size
    for name in ("media", "endofchunk", "pad", "bos", "eos"):
        value = getattr(config.tokens, name)
        if not 0 <= value < vocab:
            errors.append(f"tokens.{name}: received {value}; allowed: 0..{vocab - 1} (lm vocab_size)")
    if config.vision.image_size % config.vision.patch_size:
        errors.append(f"vision.image_size: {config.vision.image_size} is not a multiple of "
                      f"patch_size {config.vision.patch_size}")
    return errors


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _build(cls: type, data: Any, path: str, errors: list[str]) -> Any:
    where = path.rstrip(".") or "config"
    if not isinstance(data, dict):
        errors.append(f"{where}: received {type(data).__name__}; allowed: a mapping")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    for key in unknown:
        errors.append(f"{path}{key}: unknown key (received {data[key]!r}); allowed keys: "
                      f"{', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.append(f"{path}{name}: missing (required)")
            continue
        kwargs[name] = _convert(hints[name], data[name], f"{path}{name}", errors)
    if errors:
        return None
    return cls(**kwargs)


def _convert(hint: Any, value: Any, path: str, errors: list[str]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path, errors)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path + ".", errors)
    if origin is Literal:
        if value not in args:
            errors.append(f"{path}: received {value!r}; allowed: {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            errors.append(f"{path}: received {value!r}; allowed: a list of strings")
            return value
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: received {value!r}; allowed: a mapping")
        return dict(value) if isinstance(value, dict) else value
    if hint is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: received {value!r}; allowed: true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: received {value!r}; allowed: an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: received {value!r}; allowed: a number")
            return value
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            errors.append(f"{path}: received {value!r}; allowed: a string")
        return value
    return value
