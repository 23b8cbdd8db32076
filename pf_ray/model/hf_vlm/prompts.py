"""The rewriter's and the chat's prompts for ``hf_vlm`` models, through the processor's own
chat template (shared by training, pf-ray's generator, the vLLM engines and Serve).

Messages are OpenAI-style: a user message's content is a list of parts, the images first
(``{"type": "image"}``, one per image, in order) then ``{"type": "text"}``. The rewriter
(Polite Flamingo's Drafted / Revised format, paper.md §1 Fig. 3, on the model's template)::

    system     SYSTEM_MESSAGE
    user       [image]... "{instruction}\\n(Drafted Response) {draft}"
    assistant  "(Revised Response) " + revised          (a prefill the model continues)

Training tokenises a conversation segment by segment (:func:`segments`): each prompt
segment is the template's rendering up to where a response starts, each response is the
response text plus the template's turn end, and loss is on responses only. A generation
prompt is the first segment(s) rendered the same way, so generation continues exactly where
training taught it to; vLLM gets the same prompt string and images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pf_ray.model.prompts import SYSTEM_MESSAGE, Turn

REVISED_PREFIX = "(Revised Response) "
DRAFTED = "\n(Drafted Response) "
IGNORE_INDEX = -100
Message = dict[str, Any]


def user_message(text: str, images: int) -> Message:
    """A user message: ``images`` image parts, then the text."""
    return {"role": "user",
            "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}


def rewrite_messages(instruction: str, draft: str, images: int, revised: str | None = None,
                     *, system: str = SYSTEM_MESSAGE) -> list[Message]:
    """The rewriter's conversation; without ``revised`` it ends in the open prefill."""
    return [{"role": "system", "content": system},
            user_message(instruction + DRAFTED + draft, images),
            {"role": "assistant", "content": REVISED_PREFIX + (revised or "")}]


def chat_messages(turns: Sequence[Turn], *, system: str | None = SYSTEM_MESSAGE) -> list[Message]:
    """A (multi-turn) chat; the last turn's ``assistant=None`` leaves it open for generation."""
    out: list[Message] = [{"role": "system", "content": system}] if system else []
    for i, t in enumerate(turns):
        out.append(user_message(t.human, t.images))
        if t.assistant is not None:
            out.append({"role": "assistant", "content": t.assistant})
        elif i != len(turns) - 1:
            raise ValueError(f"turn {i}: only the last turn may lack an assistant response")
    return out


def render(processor: Any, messages: Sequence[Message]) -> str:
    """The prompt text: the template with the generation prompt, or, when the last message
    is the assistant's, with that message left open (a prefill continued)."""
    prefill = messages[-1]["role"] == "assistant"
    return processor.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=not prefill,
                                         continue_final_message=prefill)


def segments(processor: Any, messages: Sequence[Message],
             prefill: str = "") -> list[tuple[str, bool]]:
    """``(text, is_response)`` pieces of a conversation whose assistant messages are the
    responses to learn: each prompt piece ends where a response starts (after ``prefill``,
    e.g. :data:`REVISED_PREFIX`, which is prompt, not response), each response piece runs
    through the template's turn end. Their concatenation is the template's rendering."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        text = str(m["content"])
        if not text.startswith(prefill):
            raise ValueError(f"message {k}: an assistant message must start with {prefill!r}")
        opened = list(messages[:k]) + [{"role": "assistant", "content": prefill}] if prefill \
            else list(messages[:k])
        prompt = render(processor, opened)
        whole = processor.apply_chat_template(list(messages[:k + 1]), tokenize=False)
        if not (prompt.startswith(done) and whole.startswith(prompt)):
            raise ValueError("the chat template does not render a conversation as the "
                             "concatenation of its turns; pf-ray cannot place the loss")
        pieces.append((prompt[len(done):], False))
        pieces.append((whole[len(prompt):], True))
        done = whole
    return pieces


def encode_segments(processor: Any, pieces: Sequence[tuple[str, bool]],
                    images: Sequence[Any], max_length: int | None = None) -> dict[str, Any]:
    """Token ids and labels of ``pieces`` (loss on responses), each piece through the
    processor with the images its markers name, in order; returns ``input_ids``,
    ``labels`` (lists) and ``image_inputs``: the processor's image tensors per piece.

    ``max_length`` truncates; a cut that would split an image's tokens raises instead
    (the caller skips such an example, never truncates an image).
    """
    tok = processor.tokenizer
    image_token = getattr(processor, "image_token", "<image>")
    ids: list[int] = []
    labels: list[int] = []
    image_inputs: list[dict[str, Any]] = []
    used = 0
    for text, is_response in pieces:
        n = text.count(image_token)
        if n:
            out = processor(text=[text], images=[list(images[used:used + n])],
                            add_special_tokens=False)
            used += n
            piece = list(out["input_ids"][0])
            image_inputs.append({k: v for k, v in out.items()
                                 if k not in ("input_ids", "attention_mask")})
        else:
            piece = tok(text, add_special_tokens=False).input_ids
        ids += piece
        labels += piece if is_response else [IGNORE_INDEX] * len(piece)
    if used != len(images):
        raise ValueError(f"{len(images)} images given, the prompt marks {used}")
    if max_length is not None and len(ids) > max_length:
        image_ids = set(tok.convert_tokens_to_ids([image_token]))
        if any(i in image_ids for i in ids[max_length:]):
            raise ValueError(f"{len(ids)} tokens > max_length {max_length} would cut an image")
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels, "image_inputs": image_inputs}


def stop_token_ids(processor: Any) -> list[int]:
    """Where generation ends: the template's turn end (``<end_of_utterance>``, ``<|im_end|>``)
    when the tokenizer has one, and EOS."""
    tok = processor.tokenizer
    out = []
    for name in ("<end_of_utterance>", "<|im_end|>", "<|eot_id|>"):
        i = tok.convert_tokens_to_ids(name)
        if isinstance(i, int) and i != tok.unk_token_id and i is not None:
            out.append(i)
    if tok.eos_token_id is not None and tok.eos_token_id not in out:
        out.append(tok.eos_token_id)
    return out
