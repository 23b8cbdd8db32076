"""The paper's instruction templates for raw vision-language annotations (paper.md §4).

The raw annotation becomes the assistant turn (the rewriter later rewrites it); the user
turn comes from one of these templates. Choices that vary per sample (which of the 16
caption requests) are made from the record's key by :func:`~pf_ray.data.sources.fields.pick`,
so a rerun writes the same bytes.
"""

from __future__ import annotations

import string

# The requests of LLaVA's detailed descriptions: the 16 of the LLaVA paper's list (its
# `detail_describe_instructions`) and those the released detail_23k.json actually uses.
DETAIL_PROMPTS = (
    "Describe the following image in detail.",
    "Provide a detailed description of the given image.",
    "Give an elaborate explanation of the image you see.",
    "Share a comprehensive rundown of the presented image.",
    "Offer a thorough analysis of the image.",
    "Explain the various aspects of the image before you.",
    "Clarify the contents of the displayed image with great detail.",
    "Characterize the image using a well-detailed description.",
    "Break down the elements of the image in a detailed manner.",
    "Walk through the important details of the image.",
    "Portray the image with a rich, descriptive narrative.",
    "Narrate the contents of the image with precision.",
    "Analyze the image in a comprehensive and detailed manner.",
    "Illustrate the image through a descriptive explanation.",
    "Examine the image closely and share its details.",
    "Write an exhaustive depiction of the given image.",
    # detail_23k.json's own wording
    "What do you see happening in this image?",
    "What's happening in the scene?",
    "What is this photo about'?",
    "Can you elaborate on the elements of the picture provided?",
    "What are the key elements in this picture?",
    "What do you think is going on in this snapshot?",
    "Explain the visual content of the image in great detail.",
    "Can you describe the main features of this image for me?",
    "Write a detailed description of the given image.",
    "Describe the following image.",
)


# Captions: one of LLaVA's 16 detailed-description requests (the paper's "16 LLaVA-style
# requests", e.g. "Describe the following image in detail").
CAPTION_PROMPTS: tuple[str, ...] = DETAIL_PROMPTS[:16]
assert len(CAPTION_PROMPTS) == 16 and CAPTION_PROMPTS[0].startswith("Describe the following")

# ELEVATER classification: "What is this?" -> CLIP's "a photo of a {class}."
CLASSIFY_PROMPT = "What is this?"
CLASS_ANSWER = "a photo of a {label}."

# RefCOCOg: the region is drawn onto the image (pf_ray.data.draw).
REGION_BOX_PROMPT = "Describe the object inside this green bounding box."


def with_choices(question: str, choices: list[str]) -> str:
    """Rationale VQA: the question with lettered choices appended, one per line::

        What is the man holding?
        Options:
        A. a kite
        B. a bat
    """
    lines = [f"{string.ascii_uppercase[i]}. {c}" for i, c in enumerate(choices)]
    return question + "\nOptions:\n" + "\n".join(lines)


def answer_with_reason(answer: str, reason: str) -> str:
    """Rationale VQA raw text: ``"Answer: {a}. {rationale}"`` (no doubled full stop; a
    blank rationale leaves ``"Answer: {a}."``)."""
    return f"Answer: {answer.rstrip('.')}. {reason.strip()}".rstrip()


# Change captioning (Spot-the-Diff, LEVIR-CC; Image-Editing-Requests asks for the edit): two
# images per row, the "before" first. The paper does not print its change-captioning
# instruction; this wording is ours.
CHANGE_PROMPTS: tuple[str, ...] = (
    "What are the differences between these two images?",
    "What has changed from the first image to the second?",
    "Describe the differences between the two images.",
    "Compare the two images and describe what is different in the second one.",
    "The second image was taken after the first. What changed?",
    "Point out what is different between the first image and the second image.",
)
# Image-Editing-Requests: the answer is the request an editor was given, so the question
# asks for the edit that turns the first image into the second (our wording too).
EDIT_REQUEST_PROMPTS: tuple[str, ...] = (
    "What edit turns the first image into the second?",
    "The second image is an edited version of the first. What edit was requested?",
    "Write the editing request that turns the first image into the second.",
    "How was the first image edited to produce the second one?",
    "Which edit was asked for to turn the first image into the second?",
)

# Remote-sensing detection releases (DIOR, DOTA, HRRSD): the raw answer before the boxes,
# the repr of a dict label -> count (Table 6: "boxes, preceded by `Object Count: {...}`";
# the exact rendering is our reading of it).
OBJECT_COUNT_ANSWER = "Object Count: {counts}"

# PointQA (LocalQA, LookTwice-QA): a red arrow is drawn at the point the question is about
# (pf_ray.data.draw); the question, as released, names no object or says "these".
POINT_ARROW_COLOR = "red"
POINT_QUESTION = "{question} (The question is about the object the red arrow points at.)"
