"""What every engine takes and gives: a prompt in every form, one generated text, one result.

A stage's engine returns one :class:`Result` per request: the text (cut before the first
stop string) and why generation ended (``eos``, ``stop``, ``length``), or a reject decided
for that row alone (``prompt_too_long``, ``http_400``, ...). Infrastructure faults are
raised, never returned (:mod:`pf_ray.faults`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pf_ray.engines.prompting import DEFAULT_STOP


@dataclass(frozen=True)
class GenParams:
    """Decoding settings as every engine takes them (temperature 0: greedy)."""
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = DEFAULT_STOP
    seed: int = 0

    def sampling_fields(self) -> dict[str, Any]:
        """The decoding fields of an OpenAI-style request body, which are also vLLM's
        ``SamplingParams`` names (``top_k`` is a vLLM extension, sent only when set)."""
        fields: dict[str, Any] = {"max_tokens": self.max_new_tokens,
                                  "temperature": self.temperature, "top_p": self.top_p,
                                  "stop": list(self.stop), "seed": self.seed}
        if self.top_k:
            fields["top_k"] = self.top_k
        return fields


@dataclass(frozen=True)
class Completion:
    """A generated text cut at the first stop string, and why generation ended: ``eos``
    (the model ended it), ``stop`` (a stop string) or ``length`` (the token budget)."""

    text: str
    finish_reason: str


@dataclass(frozen=True)
class Result:
    """One request's outcome: a text and why it ended, or a row reject ``(reason, detail)``."""

    text: str = ""
    finish_reason: str = ""  # eos | stop | length ("" when rejected)
    reject: tuple[str, str] | None = None


@dataclass(frozen=True)
class Prompt:
    """One request as every engine can take it: the stage fills each form from its own
    prompt, and the engine uses the form it speaks.

    * chat APIs: an optional ``system`` message, then a user message of the images (their
      stored encodings, ``image_bytes``, as ``image_url`` parts) and ``user``;
    * completions APIs: ``text(mode)``, the whole prompt in pf-ray's format with its
      ``<image>`` markers placed for the cross-attention ``mode``, images sent beside it;
    * pf-ray's model: ``encode(tokenizer, mode)``, the token ids, and the decoded
      ``images`` in marker order;
    * ``hf_vlm`` models (pf-ray's generator, vLLM): ``messages()``, the chat messages with
      one ``{"type": "image"}`` part per image (a final assistant message is a prefill the
      model continues), rendered by the model's own chat template.
    """

    user: str
    system: str | None = None
    text: Callable[[str], str] | None = None
    encode: Callable[[Any, Any], list[int]] | None = None
    images: tuple[Any, ...] = ()
    image_bytes: tuple[bytes, ...] = ()
    stops: tuple[str, ...] = ()
    messages: Callable[[], list[dict[str, Any]]] | None = None


class Generator(Protocol):
    """An engine: one :class:`Result` per prompt, in order. Row faults come back as
    rejects; infrastructure faults are raised (:mod:`pf_ray.faults`)."""

    def generate(self, prompts: Sequence[Prompt]) -> list[Result]: ...
