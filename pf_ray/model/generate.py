"""Batched generation with a KV cache: greedy, sampling, beam search, stop strings.

One call decodes a whole batch of prompts (token id lists from :mod:`pf_ray.model.prompts`)
with their images:

1. Images are deduplicated by content (sha1 of the pixels, or of the PIL image's bytes) and
   each unique image is preprocessed and encoded once; samples index into the latents.
2. Prompts are left-padded; position ids count real tokens only, so a padded row computes
   what it computes alone.
3. Prefill runs the whole prompt once with ``use_cache``; each decoding step feeds one
   token per row, with the image latents and the number of ``<image>`` tokens already in
   the cache (``past_images``), so cross-attention stays the one of a full forward:
   ``next_image`` decode steps see no image, ``previous_image`` ones see the last image.
   The cache grows by doubling (:mod:`pf_ray.model.kv_cache`), not by a copy per step.
4. Rows that finish (EOS, a stop string, their token budget) leave the batch (the cache is
   index-selected), so the rest decode at the size still needed.

``<image>`` and the pad token are never generated (a generated ``<image>`` would have no
image, and would change which image earlier ``next_image`` tokens should have seen).

Beam search keeps ``num_beams`` rows per prompt; a hypothesis ends at EOS or a stop string
and is scored by its summed log-probability / length ** length_penalty; a prompt is done
when it has ``num_beams`` finished hypotheses (HF's ``early_stopping=True``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from pf_ray.model.kv_cache import growing_cache

if TYPE_CHECKING:  # annotations only: the hf_vlm family's code imports this module without
    # the Flamingo model (open_clip), as in the vLLM venv
    from pf_ray.model.flamingo import FlamingoModel

ImageLike = Image.Image | torch.Tensor  # PIL image, or a preprocessed (C, H, W) tensor
FinishReason = Literal["eos", "stop", "length"]


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    num_beams: int = 1
    length_penalty: float = 1.0
    stop_strings: tuple[str, ...] = ()
    eos_token_ids: tuple[int, ...] | None = None  # default: the model's eos
    seed: int | None = None  # sampling generator seed
    image_batch_size: int = 64  # images per vision forward

    def __post_init__(self) -> None:
        errors = []
        if self.max_new_tokens < 1:
            errors.append(f"max_new_tokens: received {self.max_new_tokens}; allowed: >= 1")
        if self.num_beams < 1:
            errors.append(f"num_beams: received {self.num_beams}; allowed: >= 1")
        if self.num_beams > 1 and self.do_sample:
            errors.append("num_beams > 1 with do_sample: beam sampling is not supported")
        if self.do_sample and self.temperature <= 0:
            errors.append(f"temperature: received {self.temperature}; allowed: > 0")
        if not 0 < self.top_p <= 1:
            errors.append(f"top_p: received {self.top_p}; allowed: (0, 1]")
        if self.top_k < 0:
            errors.append(f"top_k: received {self.top_k}; allowed: >= 0")
        if errors:
            raise ValueError("generation config: " + "; ".join(errors))


@dataclass
class Generation:
    token_ids: list[int]  # generated tokens (EOS excluded; a stop string's tokens included)
    text: str  # decoded, cut before the first stop string
    finish_reason: FinishReason
    score: float | None = None  # beam search: the length-normalised log-probability
    logits: torch.Tensor | None = None  # (steps, vocab) with output_logits (greedy/sampling)


# --------------------------------------------------------------------------- images


def image_key(image: ImageLike) -> str:
    """A content hash: equal pixels -> equal key (whatever the object identity)."""
    h = hashlib.sha1()
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu().contiguous()
        h.update(f"t{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    else:
        h.update(f"p{image.mode}{image.size}".encode())
        h.update(image.tobytes())
    return h.hexdigest()


def encode_unique_images(model: FlamingoModel, images: Sequence[Sequence[ImageLike]],
                         batch_size: int = 64) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, int]:
    """Encode each distinct image once and lay the latents out per sample.

    Returns:
        media ``(b, T_img, n, D_v)`` (None if no sample has images), image_mask
        ``(b, T_img)``, images-per-sample ``(b,)``, the number of unique images encoded.
    """
    keys: dict[str, int] = {}
    uniques: list[ImageLike] = []
    rows: list[list[int]] = []
    for sample in images:
        row = []
        for img in sample:
            k = image_key(img)
            if k not in keys:
                keys[k] = len(uniques)
                uniques.append(img)
            row.append(keys[k])
        rows.append(row)
    b = len(images)
    counts = torch.tensor([len(r) for r in rows], dtype=torch.long)
    t_img = int(counts.max()) if b else 0
    if not uniques:
        return None, torch.zeros(b, 0, dtype=torch.bool), counts, 0
    device = model.perceiver.latents.device
    latents = []
    for start in range(0, len(uniques), batch_size):
        chunk = uniques[start:start + batch_size]
        pixels = torch.stack([img if isinstance(img, torch.Tensor) else model.preprocess(img)
                              for img in chunk]).to(device)
        latents.append(model.encode_images(pixels))  # (u, n, D_v)
    lat = torch.cat(latents)
    index = torch.zeros(b, t_img, dtype=torch.long)
    mask = torch.zeros(b, t_img, dtype=torch.bool)
    for i, r in enumerate(rows):
        index[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = True
    media = lat[index.to(device)]  # (b, T_img, n, D_v)
    return media, mask.to(device), counts, len(uniques)


# --------------------------------------------------------------------------- sampling


def _filter_logits(logits: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    """Temperature, top-k, top-p on ``(rows, vocab)`` logits."""
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= cfg.top_p  # keep the smallest set reaching p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def _pick(logits: torch.Tensor, cfg: GenerationConfig,
          generator: torch.Generator | None) -> torch.Tensor:
    if not cfg.do_sample:
        return logits.argmax(-1)
    probs = _filter_logits(logits.float(), cfg).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------- state


@dataclass
class _Batch:
    """The rows still decoding (all tensors share the row order)."""

    rows: list[int]  # row -> batch item (or beam slot)
    attention_mask: torch.Tensor  # (r, past)
    positions: torch.Tensor  # (r,) position of the last fed token
    past_images: torch.Tensor  # (r,)
    media: torch.Tensor | None  # (r, T_img, n, D_v)
    image_mask: torch.Tensor  # (r, T_img)
    cache: Any

    def select(self, idx: torch.Tensor) -> None:
        self.rows = [self.rows[i] for i in idx.tolist()]
        self.attention_mask = self.attention_mask[idx]
        self.positions = self.positions[idx]
        self.past_images = self.past_images[idx]
        self.media = None if self.media is None else self.media[idx]
        self.image_mask = self.image_mask[idx]
        self.cache.reorder_cache(idx)  # index-select on the batch dim (any length)


class _StopChecker:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str]):
        self.tokenizer, self.stops = tokenizer, tuple(s for s in stops if s)
        # every token decodes to >= 1 character, so a stop string spans at most len(s) tokens
        self.window = max((len(s) for s in self.stops), default=0) + 1

    def hit(self, tokens: list[int]) -> bool:
        if not self.stops:
            return False
        tail = self.tokenizer.decode(tokens[-self.window:], skip_special_tokens=False)
        return any(s in tail for s in self.stops)

    def text(self, tokens: list[int]) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=len(text))
        return text[:cut]


def _step(model: FlamingoModel, st: _Batch, input_ids: torch.Tensor,
          position_ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids, media=st.media, image_mask=st.image_mask,
                attention_mask=st.attention_mask, position_ids=position_ids, cache=st.cache,
                use_cache=True, past_images=st.past_images, logits_to_keep=1)
    st.cache, st.past_images = out.cache, out.past_images
    return out.logits[:, -1].float()  # (r, vocab)


def _prefill(model: FlamingoModel, prompts: Sequence[Sequence[int]],
             images: Sequence[Sequence[ImageLike]], cfg: GenerationConfig
             ) -> tuple[_Batch, torch.Tensor]:
    device = model.perceiver.latents.device
    pad = model.config.tokens.pad
    media_id = model.config.tokens.media
    for i, (p, imgs) in enumerate(zip(prompts, images, strict=True)):
        if not p:
            raise ValueError(f"prompt {i} is empty")
        n = sum(t == media_id for t in p)
        if n != len(imgs):
            raise ValueError(f"prompt {i}: {n} <image> token(s) but {len(imgs)} image(s)")
    media, image_mask, _, _ = encode_unique_images(model, images, cfg.image_batch_size)
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), length, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, length - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    st = _Batch(rows=list(range(len(prompts))), attention_mask=mask,
                positions=position_ids[:, -1], past_images=torch.zeros(len(prompts), dtype=torch.long,
                                                                       device=device),
                media=media, image_mask=image_mask.to(device), cache=growing_cache())
    logits = _step(model, st, ids, position_ids)
    return st, logits


def _advance(st: _Batch, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append one token per row; returns (input_ids (r, 1), position_ids (r, 1))."""
    st.attention_mask = torch.cat([st.attention_mask, st.attention_mask.new_ones(len(st.rows), 1)], 1)
    st.positions = st.positions + 1
    return tokens[:, None], st.positions[:, None]


def _banned(model: FlamingoModel, eos: Sequence[int]) -> list[int]:
    t = model.config.tokens
    return [i for i in {t.media, t.pad} if i not in eos]


# --------------------------------------------------------------------------- entry point


@torch.no_grad()
def generate(model: FlamingoModel, tokenizer: PreTrainedTokenizerBase,
             prompts: Sequence[Sequence[int]], images: Sequence[Sequence[ImageLike]] | None = None,
             config: GenerationConfig | None = None, *,
             output_logits: bool = False) -> list[Generation]:
    """Generate a continuation of each prompt (token ids, e.g. ``encode_chat(...).input_ids``).

    ``images[i]`` are prompt i's images, in the order of its ``<image>`` tokens.
    """
    cfg = config or GenerationConfig()
    if not prompts:
        return []
    images = images if images is not None else [[] for _ in prompts]
    if len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
    was_training = model.training
    model.eval()
    try:
        if cfg.num_beams > 1:
            return _beam_search(model, tokenizer, prompts, images, cfg)
        return _greedy_or_sample(model, tokenizer, prompts, images, cfg, output_logits)
    finally:
        model.train(was_training)


def _greedy_or_sample(model: FlamingoModel, tokenizer: PreTrainedTokenizerBase,
                      prompts: Sequence[Sequence[int]], images: Sequence[Sequence[ImageLike]],
                      cfg: GenerationConfig, output_logits: bool) -> list[Generation]:
    eos = set(cfg.eos_token_ids or (model.config.tokens.eos,))
    banned = _banned(model, tuple(eos))
    stops = _StopChecker(tokenizer, cfg.stop_strings)
    generator = None
    if cfg.do_sample:
        generator = torch.Generator(device=model.perceiver.latents.device)
        generator.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    st, logits = _prefill(model, prompts, images, cfg)
    out_tokens: list[list[int]] = [[] for _ in prompts]
    out_logits: list[list[torch.Tensor]] = [[] for _ in prompts]
    reasons: list[FinishReason] = ["length"] * len(prompts)
    for step in range(cfg.max_new_tokens):
        if output_logits:  # the model's logits, before banning tokens
            for r, item in enumerate(st.rows):
                out_logits[item].append(logits[r].cpu().clone())
        if banned:
            logits[:, banned] = float("-inf")
        tokens = _pick(logits, cfg, generator)
        keep = []
        for r, (item, tok) in enumerate(zip(st.rows, tokens.tolist(), strict=True)):
            if tok in eos:
                reasons[item] = "eos"
                continue
            out_tokens[item].append(tok)
            if stops.hit(out_tokens[item]):
                reasons[item] = "stop"
                continue
            keep.append(r)
        if not keep or step == cfg.max_new_tokens - 1:
            break
        if len(keep) < len(st.rows):
            idx = torch.tensor(keep, device=tokens.device)
            st.select(idx)
            tokens = tokens[idx]
        logits = _step(model, st, *_advance(st, tokens))
    return [Generation(token_ids=out_tokens[i], text=stops.text(out_tokens[i]),
                       finish_reason=reasons[i],
                       logits=torch.stack(out_logits[i]) if output_logits and out_logits[i] else None)
            for i in range(len(prompts))]


def _beam_search(model: FlamingoModel, tokenizer: PreTrainedTokenizerBase,
                 prompts: Sequence[Sequence[int]], images: Sequence[Sequence[ImageLike]],
                 cfg: GenerationConfig) -> list[Generation]:
    k = cfg.num_beams
    eos = set(cfg.eos_token_ids or (model.config.tokens.eos,))
    banned = _banned(model, tuple(eos))
    stops = _StopChecker(tokenizer, cfg.stop_strings)
    b = len(prompts)
    st, logits = _prefill(model, prompts, images, cfg)
    # expand every prompt to k beam rows: row = item * k + beam
    idx = torch.arange(b, device=logits.device).repeat_interleave(k)
    st.select(idx)
    st.rows = list(range(b * k))
    logits = logits[idx]
    beams: list[list[int]] = [[] for _ in range(b * k)]
    scores = torch.zeros(b, k, device=logits.device)
    scores[:, 1:] = float("-inf")  # all beams start equal: let only beam 0 expand at step 0
    finished: list[list[tuple[float, list[int], FinishReason]]] = [[] for _ in range(b)]
    done = [False] * b
    dead = float("-inf")
    pad = model.config.tokens.pad

    def norm(score: float, length: int) -> float:
        return score / max(length, 1) ** cfg.length_penalty

    for step in range(cfg.max_new_tokens):
        if banned:
            logits[:, banned] = dead
        vocab = logits.shape[-1]
        logp = logits.log_softmax(-1).view(b, k, vocab) + scores[:, :, None]
        top, flat = logp.view(b, k * vocab).topk(2 * k, dim=-1)  # (b, 2k)
        picked: list[tuple[int, int, float, list[int]]] = []  # (row, token, score, sequence)
        for item in range(b):
            mine: list[tuple[int, int, float, list[int]]] = []
            for rank in range(2 * k):
                score = float(top[item, rank])
                if done[item] or score == dead:
                    break
                beam, tok = divmod(int(flat[item, rank]), vocab)
                row = item * k + beam
                if tok in eos:
                    hyp, reason = beams[row], "eos"
                    length = len(hyp) + 1
                else:
                    hyp = [*beams[row], tok]
                    reason = "stop" if stops.hit(hyp) else ""
                    length = len(hyp)
                if reason:
                    if rank < k:  # as HF: an ended hypothesis counts only from the top k
                        finished[item].append((norm(score, length), hyp, reason))
                else:
                    mine.append((row, tok, score, hyp))
                if len(mine) == k:
                    break
            if len(finished[item]) >= k or not mine:
                done[item] = True
            if done[item]:
                mine = []
            # dead rows keep the item * k + beam layout; their -inf score never wins
            mine += [(item * k, pad, dead, [])] * (k - len(mine))
            picked += mine
        beams = [p[3] for p in picked]
        scores = torch.tensor([p[2] for p in picked], device=logits.device).view(b, k)
        if all(done) or step == cfg.max_new_tokens - 1:
            break
        st.select(torch.tensor([p[0] for p in picked], device=logits.device))
        st.rows = list(range(b * k))
        tokens = torch.tensor([p[1] for p in picked], device=logits.device)
        logits = _step(model, st, *_advance(st, tokens))
    for item in range(b):
        if not done[item]:  # out of budget: live beams compete with the ended ones
            for beam in range(k):
                s = float(scores[item, beam])
                if s > dead:
                    hyp = beams[item * k + beam]
                    finished[item].append((norm(s, len(hyp)), hyp, "length"))
    out = []
    for item in range(b):
        best = max(finished[item], key=lambda h: h[0]) if finished[item] else (0.0, [], "length")
        out.append(Generation(token_ids=best[1], text=stops.text(best[1]), finish_reason=best[2],
                              score=best[0]))
    return out


# --------------------------------------------------------------------------- per-row configs

# One decoding step's news, one entry per row still decoding at that step:
# (batch item, the token it appended or None (EOS), why it finished or None (still going))
StepEvent = tuple[int, int | None, FinishReason | None]
StepCallback = Callable[[list[StepEvent]], None]


@torch.no_grad()
def generate_rows(model: FlamingoModel, tokenizer: PreTrainedTokenizerBase,
                  prompts: Sequence[Sequence[int]],
                  images: Sequence[Sequence[ImageLike]] | None,
                  configs: Sequence[GenerationConfig], *,
                  on_step: StepCallback | None = None) -> list[Generation]:
    """:func:`generate` (greedy / sampling) with one config per prompt, reporting each step.

    A server batches requests that ask for different ``max_new_tokens``, stop strings,
    temperatures and seeds: each row decodes with its own config (greedy rows pick the argmax
    as :func:`generate` does; a sampled row with a ``seed`` draws from its own generator, so
    its tokens do not depend on what else is in the batch). ``on_step`` is called after every
    decoding step with that step's :data:`StepEvent` list (streaming servers forward tokens as
    they come). ``image_batch_size`` is taken from ``configs[0]``; beam search is refused.
    """
    if len(configs) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(configs)} generation configs")
    if any(c.num_beams > 1 for c in configs):
        raise ValueError("generate_rows: num_beams > 1 is not supported; use generate")
    if not prompts:
        return []
    images = images if images is not None else [[] for _ in prompts]
    if len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists")
    was_training = model.training
    model.eval()
    try:
        return _rows(model, tokenizer, prompts, images, configs, on_step)
    finally:
        model.train(was_training)


def _pick_rows(logits: torch.Tensor, rows: list[int], configs: Sequence[GenerationConfig],
               generators: list[torch.Generator | None]) -> torch.Tensor:
    """Next token of each row ``(r,)`` from ``(r, vocab)`` logits, each row by its own config."""
    tokens = logits.argmax(-1)
    sampled = [r for r, item in enumerate(rows) if configs[item].do_sample]
    if not sampled:
        return tokens
    groups: dict[tuple[float, int, float], list[int]] = {}
    for r in sampled:
        c = configs[rows[r]]
        groups.setdefault((c.temperature, c.top_k, c.top_p), []).append(r)
    for group in groups.values():
        idx = torch.tensor(group, device=logits.device)
        probs = _filter_logits(logits[idx].float(), configs[rows[group[0]]]).softmax(-1)
        for j, r in enumerate(group):  # (1, vocab) draws: a seeded row as generate alone
            tokens[r] = torch.multinomial(probs[j:j + 1], 1,
                                          generator=generators[rows[r]]).squeeze()
    return tokens


def _rows(model: FlamingoModel, tokenizer: PreTrainedTokenizerBase,
          prompts: Sequence[Sequence[int]], images: Sequence[Sequence[ImageLike]],
          configs: Sequence[GenerationConfig], on_step: StepCallback | None) -> list[Generation]:
    device = model.perceiver.latents.device
    eos = [set(c.eos_token_ids or (model.config.tokens.eos,)) for c in configs]
    banned = [_banned(model, tuple(e)) for e in eos]
    stops = [_StopChecker(tokenizer, c.stop_strings) for c in configs]
    shared: torch.Generator | None = None
    generators: list[torch.Generator | None] = []
    for c in configs:
        if not c.do_sample:
            generators.append(None)
        elif c.seed is not None:
            generators.append(torch.Generator(device=device).manual_seed(c.seed))
        else:
            if shared is None:
                shared = torch.Generator(device=device)
                shared.manual_seed(torch.seed())
            generators.append(shared)
    st, logits = _prefill(model, prompts, images, configs[0])
    out_tokens: list[list[int]] = [[] for _ in prompts]
    reasons: list[FinishReason] = ["length"] * len(prompts)
    while True:
        same = all(b == banned[st.rows[0]] for b in (banned[i] for i in st.rows))
        if same and banned[st.rows[0]]:
            logits[:, banned[st.rows[0]]] = float("-inf")
        elif not same:
            for r, item in enumerate(st.rows):
                if banned[item]:
                    logits[r, banned[item]] = float("-inf")
        tokens = _pick_rows(logits, st.rows, configs, generators)
        keep: list[int] = []
        events: list[StepEvent] = []
        for r, (item, tok) in enumerate(zip(st.rows, tokens.tolist(), strict=True)):
            if tok in eos[item]:
                reasons[item] = "eos"
                events.append((item, None, "eos"))
                continue
            out_tokens[item].append(tok)
            if stops[item].hit(out_tokens[item]):
                reasons[item] = "stop"
            elif len(out_tokens[item]) >= configs[item].max_new_tokens:
                reasons[item] = "length"
            else:
                keep.append(r)
                events.append((item, tok, None))
                continue
            events.append((item, tok, reasons[item]))
        if on_step is not None:
            on_step(events)
        if not keep:
            break
        if len(keep) < len(st.rows):
            idx = torch.tensor(keep, device=tokens.device)
            st.select(idx)
            tokens = tokens[idx]
        logits = _step(model, st, *_advance(st, tokens))
    return [Generation(token_ids=out_tokens[i], text=stops[i].text(out_tokens[i]),
                       finish_reason=reasons[i]) for i in range(len(prompts))]
