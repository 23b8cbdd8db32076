"""What every engine takes and gives: decoding parameters, one generated text, one result.

A stage's engine returns one :class:`Result` per request: the text (cut before the first
stop string) and why generation ended (``eos``, ``stop``, ``length``), or a reject decided
for that row alone (``prompt_too_long``, ``http_400``, ...). Infrastructure faults are
raised, never returned (:mod:`pf_ray.faults`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pf_ray.engines.prompting import DEFAULT_STOP


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = DEFAULT_STOP
    seed: int = 0


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
