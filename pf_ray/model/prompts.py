"""The pinned prompt formats, shared by training and inference.

Chat (Clever Flamingo; paper.md §6). The first turn carries the Guanaco system message, later
turns don't; every assistant response ends with EOS (``</s>``)::

    <s>{SYSTEM}\\n### Human: {human 1}\\n### Assistant: {response 1}</s>\\n### Human: {human 2}\\n### Assistant: {response 2}</s>

Rewriter (Polite Flamingo; paper.md §1, Fig. 3, with the image marker of the chat format), the
``prompt_format`` ``"paper"``::

    <s>{SYSTEM}\\n### Human: {instruction}\\n### Assistant: (Drafted Response) {draft} (Revised Response) {revised}</s>

and ``"released"``, the prompt the released Polite Flamingo weights document in their README
(``get_prompt(mode='polite_flamingo')``; "Assistent" and the colons as there)::

    <s>{SYSTEM}\\n### Human: {instruction}\\n### Assistent: (Drafted Response): {draft}\\n (Revised Response): {revised}</s>

Image markers inside a human message depend on the cross-attention mask mode (text must
sit where its tokens can see the image, see :mod:`pf_ray.model.xattn`):

    next_image      {text}<image><|endofchunk|>     (released v1 models; one pair per image)
    previous_image  <image>{text}                   (one <image> per image)

Tokenisation is per segment (as the released training code): ``[bos]``, then each prompt
segment (system + human + ``\\n### Assistant: `` + for the rewriter the drafted part) and
each response are tokenised on their own (``add_special_tokens=False``), EOS appended to
each response. Loss is on responses + their EOS only (labels -100 elsewhere and on
``<image>``). A generation prompt is the same token sequence up to a response's start, so
the model continues exactly where training taught it to (the prompt ends with the space of
``"### Assistant: "``, ``"(Revised Response) "`` or ``"(Revised Response): "``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from pf_ray.model.config import MaskMode
from pf_ray.model.tokenizer import ENDOFCHUNK_TOKEN, MEDIA_TOKEN

SYSTEM_MESSAGE = ("A chat between a curious human and an artificial intelligence assistant. "
                  "The assistant gives helpful, detailed, and polite answers to the user's "
                  "questions.")
HUMAN = "\n### Human: "
ASSISTANT = "\n### Assistant: "
DRAFTED = "(Drafted Response) "
REVISED = " (Revised Response) "
RewriteFormat = Literal["paper", "released"]
# prompt_format -> (assistant header, before the draft, between draft and revised response)
REWRITE_FORMATS: dict[str, tuple[str, str, str]] = {
    "paper": (ASSISTANT, DRAFTED, REVISED),
    "released": ("\n### Assistent: ", "(Drafted Response): ", "\n (Revised Response): "),
}
# generation stops at EOS, or when the model starts the next turn by itself
STOP_STRINGS: tuple[str, ...] = ("\n### Human:", "\n### Assistant:")
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Turn:
    human: str
    assistant: str | None = None  # None: the turn to generate (must be the last)
    images: int = 0  # images attached to this human message


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]  # same length; IGNORE_INDEX where no loss
    num_images: int  # <image> tokens in input_ids (images to pass, in order)


def with_images(text: str, images: int, mode: MaskMode) -> str:
    """Place ``images`` image markers around ``text`` for the mask mode.

    One image: after the text (``next_image``: the text attends to it) or before it
    (``previous_image``). Several images (a change caption's before and after): each is
    named in the text and marked where it is named, the layout of the released
    multi-image instruction data (instruct_flamingo's LEVIR-CC converter writes
    ``"{instruction}\nEarlier image: <img_path>A<img_path>, Later image: <img_path>B<img_path>"``
    and its loader turns each path into ``<image><|endofchunk|>``), so under the next-image
    mask each name attends to its own image::

        next_image:      {text}\nImage 1: <image><|endofchunk|>, Image 2: <image><|endofchunk|>
        previous_image:  Image 1: <image>, Image 2: <image>\n{text}
    """
    if mode not in ("next_image", "previous_image"):
        raise ValueError(f"mask mode: received {mode!r}; allowed: 'next_image', "
                         "'previous_image'")
    if images <= 1:
        return text + (MEDIA_TOKEN + ENDOFCHUNK_TOKEN) * images if mode == "next_image" \
            else MEDIA_TOKEN * images + text
    if mode == "next_image":
        return text + "\n" + ", ".join(f"Image {k}: {MEDIA_TOKEN}{ENDOFCHUNK_TOKEN}"
                                       for k in range(1, images + 1))
    return ", ".join(f"Image {k}: {MEDIA_TOKEN}" for k in range(1, images + 1)) + "\n" + text


def _segments_chat(turns: Sequence[Turn], mode: MaskMode,
                   system: str) -> list[tuple[str, bool]]:
    """(text, is_response) pieces; responses are followed by EOS."""
    if not turns:
        raise ValueError("a chat needs at least one turn")
    pieces: list[tuple[str, bool]] = []
    for i, turn in enumerate(turns):
        head = system if i == 0 else ""
        pieces.append((head + HUMAN + with_images(turn.human, turn.images, mode) + ASSISTANT, False))
        if turn.assistant is None:
            if i != len(turns) - 1:
                raise ValueError(f"turn {i}: only the last turn may lack an assistant response")
        else:
            pieces.append((turn.assistant, True))
    return pieces


def chat_text(turns: Sequence[Turn], mode: MaskMode, system: str = SYSTEM_MESSAGE,
              bos: str = "<s>", eos: str = "</s>") -> str:
    """The chat as one string (for reading; encode with :func:`encode_chat`)."""
    return bos + "".join(t + (eos if r else "") for t, r in _segments_chat(turns, mode, system))


def rewrite_text(instruction: str, draft: str, revised: str | None = None, *, images: int = 1,
                 mode: MaskMode = "next_image", system: str = SYSTEM_MESSAGE,
                 prompt_format: RewriteFormat = "paper", bos: str = "<s>",
                 eos: str = "</s>") -> str:
    """The rewriter sample as one string (for reading; encode with :func:`encode_rewrite`)."""
    prompt, response = _segments_rewrite(instruction, draft, revised, images, mode, system,
                                         prompt_format)
    return bos + prompt + ("" if response is None else response + eos)


def _segments_rewrite(instruction: str, draft: str, revised: str | None, images: int,
                      mode: MaskMode, system: str,
                      prompt_format: RewriteFormat) -> tuple[str, str | None]:
    if prompt_format not in REWRITE_FORMATS:
        raise ValueError(f"prompt_format: received {prompt_format!r}; allowed: "
                         f"{', '.join(map(repr, REWRITE_FORMATS))}")
    assistant, drafted, revised_header = REWRITE_FORMATS[prompt_format]
    prompt = (system + HUMAN + with_images(instruction, images, mode) + assistant + drafted
              + draft + revised_header)
    return prompt, revised


def _encode(tokenizer: PreTrainedTokenizerBase, pieces: list[tuple[str, bool]],
            max_length: int | None) -> Encoded:
    ids = [tokenizer.bos_token_id]
    labels = [IGNORE_INDEX]
    for text, is_response in pieces:
        tok = tokenizer(text, add_special_tokens=False).input_ids if text else []
        if is_response:
            tok = [*tok, tokenizer.eos_token_id]
        ids += tok
        labels += tok if is_response else [IGNORE_INDEX] * len(tok)
    media = tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
    labels = [IGNORE_INDEX if i == media else lab for i, lab in zip(ids, labels, strict=True)]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(input_ids=ids, labels=labels, num_images=sum(i == media for i in ids))


def encode_chat(tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], mode: MaskMode,
                *, system: str = SYSTEM_MESSAGE, max_length: int | None = None) -> Encoded:
    """Token ids and labels of a (multi-turn) chat; loss on assistant responses + EOS.

    With the last turn's ``assistant=None`` this is the generation prompt (no labels).
    ``max_length`` truncates (the last turn may be cut; ``num_images`` counts what is left).
    """
    return _encode(tokenizer, _segments_chat(turns, mode, system), max_length)


def encode_rewrite(tokenizer: PreTrainedTokenizerBase, instruction: str, draft: str,
                   revised: str | None = None, *, images: int = 1,
                   mode: MaskMode = "next_image", system: str = SYSTEM_MESSAGE,
                   prompt_format: RewriteFormat = "paper",
                   max_length: int | None = None) -> Encoded:
    """Token ids and labels of a rewriter sample; loss on the revised response + EOS.

    With ``revised=None`` this is the generation prompt. ``prompt_format``: ``"paper"``
    (Fig. 3) or ``"released"`` (the released weights' prompt, module doc).
    """
    prompt, response = _segments_rewrite(instruction, draft, revised, images, mode, system,
                                         prompt_format)
    pieces = [(prompt, False)] + ([] if response is None else [(response, True)])
    return _encode(tokenizer, pieces, max_length)


def clean_response(text: str) -> str:
    """A generated response without anything from a turn the model started by itself."""
    for stop in STOP_STRINGS:
        text = text.split(stop, 1)[0]
    return text.strip()


def rewrite_stops(prompt_format: str) -> tuple[str, ...]:
    """Where a revised response ends besides EOS: the model starting a new turn (the
    released prompt's assistant header is spelt "Assistent")."""
    return STOP_STRINGS + (("\n### Assistent:",) if prompt_format == "released" else ())
