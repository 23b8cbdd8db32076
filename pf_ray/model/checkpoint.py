"""Model folders (HF style) and the released OpenFlamingo / Polite / Clever Flamingo files.

A model folder::

    config.json                 FlamingoConfig.to_dict()
    model.safetensors           every non-LoRA weight under its canonical name (LoRA-wrapped
                                linears saved as plain ``q_proj.weight``; tied weights once)
    adapter/                    peft adapter folder (adapter_config.json, adapter_model.safetensors)
    tokenizer/                  the tokenizer, when one was given
    _export.json                a training export's completion marker, written last
                                (pf_ray.train.export); loading ignores it

Released files are pickled state dicts, read with ``torch.load(weights_only=True)``. Their
keys follow OpenFlamingo v1's runtime-wrapped module tree; :func:`map_released_key` renames
them to ours:

    released key                                                    ours
    perceiver.*                                                     perceiver.*
    vision_encoder.*                                                vision_encoder.*
    lang_encoder.gated_cross_attn_layers.{i}.*                      gated_cross_attn_layers.{i}.*
    lang_encoder.model.layers.{i}.gated_cross_attn_layer.*          (alias of the line above)
    lang_encoder.model.layers.{i}.decoder_layer.*                   lang_encoder.model.layers.{i}.*
    lang_encoder.old_decoder_blocks.{i}.*                           (alias of the line above)
    lang_encoder.model.embed_tokens.weight, lang_encoder.lm_head.*  unchanged
    *.rotary_emb.inv_freq                                           ignored (old transformers buffer)

LoRA keys (``...q_proj.lora_A.default.weight``) keep their names; a base weight
``...q_proj.weight`` lands in peft's ``q_proj.base_layer.weight``. Aliases (the same tensor
saved under two names by v1's module sharing) must be equal.

Each release has a :data:`LAYOUTS` entry: parts it must contain in full (missing keys are
errors) and parts it may contain. Keys that map to no parameter are errors. With
``strict=True`` (the default) any error raises, naming every key; ``strict=False`` loads what
matches and returns the same report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from pf_ray.faults import ModelUnavailable
from pf_ray.model.config import FlamingoConfig
from pf_ray.model.flamingo import FlamingoModel, build_flamingo
from pf_ray.model.lora import is_lora_name, load_adapter, save_adapter
from pf_ray.model.tokenizer import check_tokenizer, load_tokenizer
from pf_ray.model.trainability import PARTS, part_of

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class Layout:
    """Parts a released file must contain in full, and parts it may contain."""

    required: frozenset[str]
    optional: frozenset[str] = frozenset()


LAYOUTS: dict[str, Layout] = {
    # OpenFlamingo-9B checkpoint.pt: what OF v1 trained (perceiver, xattn, input embeddings);
    # the frozen vision tower / LM may be there too.
    "openflamingo": Layout(frozenset({"perceiver", "xattn_attn", "xattn_ffn", "lm_embeddings"}),
                           frozenset({"vision", "lm_full"})),
    # polite_flamingo.pt / polite_flamingo_gen2.pt: LoRA + input embeddings (291M, paper.md §3)
    "polite_flamingo": Layout(frozenset({"lm_lora", "lm_embeddings"})),
    # clever_flamingo.pt: everything Clever Flamingo tuned, plus possibly frozen parts
    "clever_flamingo": Layout(frozenset({"perceiver", "xattn_attn", "xattn_ffn", "lm_lora",
                                         "lm_embeddings"}), frozenset({"vision", "lm_full"})),
    # a complete state dict in OpenFlamingo's naming
    "full": Layout(frozenset(PARTS)),
}

# model.safetensors of a model folder: everything but LoRA (that is in adapter/)
FOLDER_LAYOUT = Layout(frozenset(PARTS) - {"lm_lora"})

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^lang_encoder\.gated_cross_attn_layers\.(\d+)\.(.+)$"),
     r"gated_cross_attn_layers.\1.\2"),
    (re.compile(r"^lang_encoder\.model\.layers\.(\d+)\.gated_cross_attn_layer\.(.+)$"),
     r"gated_cross_attn_layers.\1.\2"),
    (re.compile(r"^lang_encoder\.model\.layers\.(\d+)\.decoder_layer\.(.+)$"),
     r"lang_encoder.model.layers.\1.\2"),
    (re.compile(r"^lang_encoder\.old_decoder_blocks\.(\d+)\.(.+)$"),
     r"lang_encoder.model.layers.\1.\2"),
)
_IGNORED = re.compile(r"\.rotary_emb\.inv_freq$")


def map_released_key(key: str) -> str | None:
    """A released (OpenFlamingo v1 layout) key -> our canonical key; None = ignored."""
    if _IGNORED.search(key):
        return None
    for pattern, repl in _RULES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return key


def canonical_name(name: str) -> str:
    """Our key without peft's wrapper level: ``q_proj.base_layer.weight`` -> ``q_proj.weight``."""
    return name.replace(".base_layer.", ".")


# --------------------------------------------------------------------------- load report


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)  # our keys
    missing: list[str] = field(default_factory=list)  # our keys a required part lacks
    unexpected: list[str] = field(default_factory=list)  # source keys that map to nothing
    mismatched: list[str] = field(default_factory=list)  # "key: file shape vs model shape"
    conflicting: list[str] = field(default_factory=list)  # aliases with different values
    ignored: list[str] = field(default_factory=list)  # source keys dropped on purpose
    loaded_by_part: dict[str, int] = field(default_factory=dict)  # number of tensors

    @property
    def problems(self) -> list[str]:
        return ([f"missing key {k!r}" for k in self.missing]
                + [f"unexpected key {k!r}" for k in self.unexpected]
                + [f"shape mismatch {k}" for k in self.mismatched]
                + [f"conflicting aliases {k}" for k in self.conflicting])

    def raise_if_problems(self) -> None:
        if self.problems:
            shown = self.problems[:50]
            more = len(self.problems) - len(shown)
            raise KeyError(f"{self.source}: {len(self.problems)} problem(s) loading weights:\n  "
                           + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else ""))

    def summary(self) -> str:
        parts = ", ".join(f"{p} {n}" for p, n in self.loaded_by_part.items() if n)
        return (f"{self.source}: loaded {len(self.loaded)} tensors ({parts}); "
                f"{len(self.ignored)} ignored, {len(self.problems)} problem(s)")


def _model_tensors(model: FlamingoModel) -> dict[str, torch.Tensor]:
    """Canonical name -> parameter / persistent buffer (tied duplicates under each name)."""
    sd = model.state_dict(keep_vars=True)
    return {canonical_name(k): v for k, v in sd.items()}


def _embedding_names(model: FlamingoModel) -> set[str]:
    weight = model.lang_encoder.get_input_embeddings().weight
    return {canonical_name(k) for k, v in model.state_dict(keep_vars=True).items() if v is weight}


def load_state_dict(model: FlamingoModel, state: Mapping[str, torch.Tensor], *,
                    layout: Layout | None = None, strict: bool = True,
                    exclude_parts: Iterable[str] = (), map_keys: bool = True,
                    source: str = "state dict") -> LoadReport:
    """Load ``state`` into ``model`` and report by key.

    Args:
        state: released-layout keys (``map_keys=True``) or our canonical keys.
        layout: which parts must be complete / may appear; None = every part required.
        strict: raise on any problem (missing, unexpected, shape, conflicting aliases).
        exclude_parts: parts whose keys in the file are skipped (reported as ignored), e.g.
            ``{"vision"}`` for OpenFlamingo-9B's 224 px ViT under a 336 px tower.
    """
    layout = layout or Layout(frozenset(PARTS))
    exclude = set(exclude_parts)
    report = LoadReport(source=source)
    targets = _model_tensors(model)
    emb = _embedding_names(model)
    chosen: dict[str, tuple[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = map_released_key(key) if map_keys else key
        if name is None:
            report.ignored.append(key)
            continue
        if name not in targets:
            report.unexpected.append(key)
            continue
        part = part_of(name, emb)
        if part in exclude:
            report.ignored.append(key)
            continue
        if part not in layout.required | layout.optional:
            report.unexpected.append(f"{key} (part {part} is not in this layout)")
            continue
        if tuple(value.shape) != tuple(targets[name].shape):
            report.mismatched.append(f"{key}: file {tuple(value.shape)}, model "
                                     f"{tuple(targets[name].shape)}")
            continue
        if name in chosen:
            if not torch.equal(chosen[name][1], value):
                report.conflicting.append(f"{chosen[name][0]!r} != {key!r}")
            continue
        chosen[name] = (key, value)
    # tied tensors (e.g. an LM head tied to the embeddings) are loaded through any one name
    by_tensor: dict[int, list[str]] = {}
    for name, tensor in targets.items():
        by_tensor.setdefault(id(tensor), []).append(name)
    for name, tensor in targets.items():
        part = part_of(name, emb)
        if part in layout.required and part not in exclude and not any(
                n in chosen for n in by_tensor[id(tensor)]):
            report.missing.append(name)
    if strict:
        report.raise_if_problems()
    counts = dict.fromkeys(PARTS, 0)
    with torch.no_grad():
        for name, (_, value) in chosen.items():
            targets[name].copy_(value)
            report.loaded.append(name)
            counts[part_of(name, emb)] += 1
    report.loaded_by_part = counts
    return report


def read_released(path: str | Path) -> dict[str, torch.Tensor]:
    """A released ``.pt`` state dict (``weights_only=True``; ``model_state_dict`` and DDP's
    ``module.`` prefix unwrapped). ``path`` may be a URI (copied to a local cache)."""
    from pf_ray.storage import local_copy

    state = torch.load(local_copy(str(path)), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model_state_dict" in state:
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_released(model: FlamingoModel, path: str | Path, layout: str, *, strict: bool = True,
                  exclude_parts: Iterable[str] = ()) -> LoadReport:
    """Load a released OpenFlamingo / Polite / Clever Flamingo ``.pt`` file (see LAYOUTS)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout: received {layout!r}; allowed: {', '.join(LAYOUTS)}")
    return load_state_dict(model, read_released(path), layout=LAYOUTS[layout], strict=strict,
                           exclude_parts=exclude_parts, source=str(path))


def to_released_key(name: str) -> str:
    """Our canonical key -> OpenFlamingo v1's (the inverse of :func:`map_released_key`)."""
    m = re.match(r"^gated_cross_attn_layers\.(\d+)\.(.+)$", name)
    if m:
        return f"lang_encoder.gated_cross_attn_layers.{m.group(1)}.{m.group(2)}"
    m = re.match(r"^lang_encoder\.model\.layers\.(\d+)\.(.+)$", name)
    if m:
        return f"lang_encoder.model.layers.{m.group(1)}.decoder_layer.{m.group(2)}"
    return name


def released_state_dict(model: FlamingoModel, parts: Iterable[str]) -> dict[str, torch.Tensor]:
    """The given parts under OpenFlamingo v1 key names (e.g. to hand weights to its code)."""
    wanted = set(parts)
    emb = _embedding_names(model)
    out = {}
    for name, tensor in _model_tensors(model).items():
        if part_of(name, emb) in wanted:
            out[to_released_key(name)] = tensor.detach().clone()
    return out


# --------------------------------------------------------------------------- model folders


def weights_state_dict(model: FlamingoModel) -> dict[str, torch.Tensor]:
    """What ``model.safetensors`` holds: non-LoRA tensors, canonical names, tied ones once."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if is_lora_name(name) or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        out[canonical_name(name)] = tensor.detach().contiguous()
    return out


def save_pretrained(model: FlamingoModel, folder: str | Path,
                    tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Write a model folder (see the module doc); returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    save_file(weights_state_dict(model), str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    if model.config.lora is not None:
        save_adapter(model.lang_encoder, model.config.lora, folder / ADAPTER_DIR)
    if tokenizer is not None:
        check_tokenizer(tokenizer, model.config.tokens, model.config.lm.vocab_size)
        tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    return folder


def read_config(folder: str | Path) -> FlamingoConfig:
    return FlamingoConfig.from_dict(json.loads((Path(folder) / CONFIG_NAME).read_text()))


class CheckpointMismatch(ModelUnavailable, KeyError):
    """A model folder whose weights do not fit its config (missing, unexpected or
    mis-shaped keys). A ``KeyError`` naming the keys, and a :class:`ModelUnavailable`: a
    step that loads it fails its unit instead of rejecting rows one by one."""

    def __str__(self) -> str:  # KeyError would quote the message: keep it readable
        return str(self.args[0]) if self.args else ""


def load_pretrained(folder: str | Path, *, device: str | torch.device = "cpu",
                    strict: bool = True) -> FlamingoModel:
    """Rebuild a model from its folder (local, or a URI copied to a local cache): config,
    weights (every key), LoRA adapter.

    A folder that cannot be read (missing, or a store that is down), a ``config.json`` that
    is not one, a truncated or corrupt ``model.safetensors`` or adapter raise
    :class:`~pf_ray.faults.ModelUnavailable` (an infrastructure fault: retried, then the
    unit fails; never a per-row ``exception`` reject); keys that do not fit raise
    :class:`CheckpointMismatch`.
    """
    from pf_ray.storage import local_copy

    where = str(folder)
    try:
        folder = Path(local_copy(where))
        config = read_config(folder)
    except Exception as exc:  # noqa: BLE001 - whatever stops the read: the model is not there
        raise ModelUnavailable(f"model folder {where}: {CONFIG_NAME} cannot be read "
                               f"({type(exc).__name__}: {exc})") from exc
    # weights come from the folder: don't read the original pretrained paths again
    config = config.without_pretrained()
    model = build_flamingo(config, device=device)
    weights = folder / WEIGHTS_NAME
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelUnavailable(f"{weights}: cannot be loaded ({type(exc).__name__}: {exc}); "
                               "the file is missing, truncated or corrupt") from exc
    try:
        load_state_dict(model, state, layout=FOLDER_LAYOUT, strict=strict, map_keys=False,
                        source=str(weights))
        if config.lora is not None:
            load_adapter(model.lang_encoder, folder / ADAPTER_DIR, strict=strict)
    except KeyError as exc:
        raise CheckpointMismatch(exc.args[0] if exc.args else str(exc)) from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelUnavailable(f"{folder / ADAPTER_DIR}: the LoRA adapter cannot be loaded "
                               f"({type(exc).__name__}: {exc})") from exc
    model.eval()
    return model


def load_folder_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a model folder, else the one its config names."""
    folder = Path(folder)
    config = read_config(folder)
    tok_dir = folder / TOKENIZER_DIR
    tok = load_tokenizer(tok_dir if tok_dir.exists() else config.tokenizer,
                         mode=config.tokenizer_mode)
    check_tokenizer(tok, config.tokens, config.lm.vocab_size)
    return tok
