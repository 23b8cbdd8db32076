"""The batched generator over pf-ray's own model, shared by every stage that calls it.

Rewrite (the rewriter), eval (answer sources, the quickstart's rewriter and VQA scores)
and serve load a model folder the same way (:func:`load_model`: a missing or broken
model raises :class:`~pf_ray.faults.ModelUnavailable`, an infrastructure fault that fails
the unit, never rejects) and generate with :class:`FlamingoGenerator`: each stage encodes
its own prompts with the generator's tokenizer and cross-attention mask mode
(``encode_rewrite``, ``encode_chat``), the generator runs one batched
:func:`pf_ray.model.generate.generate` per batch (greedy, sampling or beam search; left
padding; each distinct image, by pixel content, encoded once; finished rows leave the
batch) and rejects prompts longer than the model's context (``prompt_too_long``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from pf_ray.engines.base import Prompt, Result
from pf_ray.engines.config import DecodingConfig, FlamingoEngineConfig, FlamingoModelFields
from pf_ray.engines.registry import EngineDef
from pf_ray.faults import ModelUnavailable
from pf_ray.specs import StorageConfig
from pf_ray.storage import local_copy


def load_model(source: str, *, storage: StorageConfig | None = None, device: str = "auto",
               dtype: str = "auto", num_threads: int | None = None,
               merge_lora: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a pf-ray model folder or URI, in eval mode on ``device``.

    ``merge_lora``: fold LoRA adapters into the weights (generation only: one matmul per
    layer instead of three). Raises :class:`~pf_ray.faults.ModelUnavailable` when the
    folder is missing, is not a pf-ray model, or cannot be loaded.
    """
    import torch

    from pf_ray.model.checkpoint import CONFIG_NAME, load_folder_tokenizer, load_pretrained
    from pf_ray.model.hf_vlm.family import check_folder_family

    try:
        folder = local_copy(source, storage)
    except (FileNotFoundError, OSError) as exc:
        raise ModelUnavailable(f"model {source!r}: {exc}") from exc
    if not os.path.exists(os.path.join(folder, CONFIG_NAME)):
        raise ModelUnavailable(f"model {source!r}: no {CONFIG_NAME} there (a pf-ray model "
                               "folder: pf-ray convert, or a training export)")
    try:
        check_folder_family(folder, "flamingo")
    except (ValueError, OSError) as exc:  # an hf_vlm folder: say which family it is
        raise ModelUnavailable(f"model {source!r}: {exc}") from exc
    if num_threads:
        torch.set_num_threads(num_threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = load_pretrained(folder, device=device)
        tok = load_folder_tokenizer(folder)
    except ModelUnavailable:
        raise
    except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
        raise ModelUnavailable(f"model {source!r}: cannot load: "
                               f"{type(exc).__name__}: {exc}"[:2000]) from exc
    if dtype != "auto":
        model = model.to(getattr(torch, dtype))
    if merge_lora and model.config.lora is not None:
        from pf_ray.model.lora import merge_for_inference

        merge_for_inference(model.lang_encoder)
    return model.eval(), tok


class FlamingoGenerator:
    """pf-ray's model behind one batched ``generate`` (loaded on first use, once per actor).

    Give ``source`` (a folder or URI, loaded lazily) or an already loaded ``model`` and
    ``tokenizer`` (the quickstart's in-memory models).
    """

    @classmethod
    def of(cls, fields: FlamingoModelFields, decoding: DecodingConfig,
           storage: StorageConfig | None) -> FlamingoGenerator:
        """The generator of a spec's model block (a rewrite engine, an eval source)."""
        return cls(fields.model, decoding=decoding, device=fields.device, dtype=fields.dtype,
                   num_threads=fields.num_threads, max_prompt_tokens=fields.max_prompt_tokens,
                   storage=storage)

    def __init__(self, source: str | None = None, *, decoding: DecodingConfig | None = None,
                 device: str = "auto", dtype: str = "auto", num_threads: int | None = None,
                 max_prompt_tokens: int | None = None, storage: StorageConfig | None = None,
                 model: Any = None, tokenizer: Any = None):
        if (source is None) == (model is None):
            raise ValueError("FlamingoGenerator: give exactly one of source or model")
        self.source, self.decoding = source, decoding or DecodingConfig()
        self.device, self.dtype, self.num_threads = device, dtype, num_threads
        self.max_prompt_tokens, self.storage = max_prompt_tokens, storage
        self._model, self._tok = model, tokenizer

    def load(self) -> None:
        """Load the model and tokenizer once (no-op when loaded)."""
        if self._model is None:
            assert self.source is not None
            self._model, self._tok = load_model(
                self.source, storage=self.storage, device=self.device, dtype=self.dtype,
                num_threads=self.num_threads)

    @property
    def model(self) -> Any:
        """The loaded model (loaded on first use)."""
        self.load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (loaded on first use)."""
        self.load()
        return self._tok

    @property
    def mask_mode(self) -> Any:
        """The model's cross-attention mask mode (how prompts mark their images)."""
        return self.model.config.xattn.mask

    def prompt_limit(self) -> int:
        """The longest prompt (tokens) that leaves room for ``max_new_tokens``."""
        if self.max_prompt_tokens is not None:
            return self.max_prompt_tokens
        positions = self.model.config.lm.hf_config.get("max_position_embeddings", 2048)
        return max(1, int(positions) - self.decoding.max_new_tokens)

    def generate(self, prompts: Sequence[Prompt]) -> list[Result]:
        """The :class:`~pf_ray.engines.base.Generator` protocol: each prompt encoded for
        this model (``prompt.encode``), its decoded images; one batched call per distinct
        set of stop strings."""
        results: list[Result | None] = [None] * len(prompts)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, p in enumerate(prompts):
            if p.encode is None:
                raise ValueError("a prompt for pf-ray's model needs encode(tokenizer, mode)")
            groups.setdefault(tuple(p.stops), []).append(i)
        for stops, idx in groups.items():
            ids = [prompts[i].encode(self.tokenizer, self.mask_mode) for i in idx]  # type: ignore[misc]
            for i, r in zip(idx, self.generate_ids(ids, [list(prompts[i].images) for i in idx],
                                                   stops), strict=True):
                results[i] = r
        return results  # type: ignore[return-value]

    def generate_ids(self, prompts: Sequence[Sequence[int]], images: Sequence[Sequence[Any]],
                     stops: Sequence[str], *, batch_size: int | None = None) -> list[Result]:
        """One :class:`Result` per prompt (token ids; ``images[i]`` in the order of prompt
        i's image markers), texts cut before the first stop string.

        Prompts over :meth:`prompt_limit` are ``prompt_too_long`` rejects; the others run
        in batches of ``batch_size`` (None: all at once).
        """
        import torch

        from pf_ray.model.generate import GenerationConfig, generate

        d = self.decoding
        limit = self.prompt_limit()
        results: list[Result | None] = [None] * len(prompts)
        keep = []
        for i, ids in enumerate(prompts):
            if len(ids) > limit:
                results[i] = Result(reject=("prompt_too_long", f"{len(ids)} prompt tokens > "
                                            f"{limit} (max_prompt_tokens)"))
            else:
                keep.append(i)
        cfg = GenerationConfig(max_new_tokens=d.max_new_tokens, do_sample=d.do_sample,
                               temperature=d.temperature, top_k=d.top_k, top_p=d.top_p,
                               num_beams=d.num_beams, length_penalty=d.length_penalty,
                               stop_strings=tuple(stops),
                               seed=d.seed if d.do_sample else None)
        size = batch_size or max(1, len(keep))
        for start in range(0, len(keep), size):
            chunk = keep[start:start + size]
            with torch.no_grad():
                outs = generate(self.model, self.tokenizer, [prompts[i] for i in chunk],
                                [images[i] for i in chunk], cfg)
            for i, g in zip(chunk, outs, strict=True):
                results[i] = Result(g.text, g.finish_reason)
        return [r if r is not None else Result(reject=("exception", "no result"))
                for r in results]


def _build(cfg: FlamingoEngineConfig, decoding: DecodingConfig,
           storage: StorageConfig) -> FlamingoGenerator:
    return FlamingoGenerator.of(cfg, decoding, storage)


ENGINE = EngineDef("flamingo", FlamingoEngineConfig, _build, beams=True,
                   description="pf-ray's Flamingo model, batched in an actor pool")
