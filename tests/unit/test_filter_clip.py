"""Per-paragraph CLIPScore on the tiny open_clip config, the maths checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from tiny_filter_models import build_tiny_clip, png

from pf_ray.data.images import ImageLoader
from pf_ray.data.schema import REJECT_DETAIL, REJECT_REASON
from pf_ray.faults import ModelUnavailable
from pf_ray.filters.clipscore import ParagraphCLIPScore
from pf_ray.scorers.clip import clip_score, paragraphs, sentences

TWO = "A red square. It is bright. \n\nThe sky is blue today.\n\n"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny.pt", seed=0)


def step(weights: Path, threshold: float) -> ParagraphCLIPScore:
    return ParagraphCLIPScore("pf-tiny-vit", str(weights), threshold=threshold, device="cpu",
                              tasks=["captions"])


def test_splitting() -> None:
    assert paragraphs(TWO) == ["A red square. It is bright.", "The sky is blue today."]
    assert sentences("One. Two.. Three", 2) == ["One", "Two"]
    assert sentences("no full stop") == ["no full stop"]
    assert len(sentences(". ".join(str(i) for i in range(15)))) == 10


def test_formula_on_known_vectors() -> None:
    # v = (2, 0) -> (1, 0); t1 = (3, 0) -> (1, 0), t2 = (0, 5) -> (0, 1); mean (0.5, 0.5)
    assert clip_score([2.0, 0.0], [[3.0, 0.0], [0.0, 5.0]]) == pytest.approx(50.0)
    # one sentence along the image: the maximum, 100
    assert clip_score([1.0, 1.0], [[1.0, 1.0]]) == pytest.approx(100.0)


def test_scores_match_a_hand_computation(weights: Path) -> None:
    s = step(weights, threshold=-1e9)
    image = png((200, 30, 30))
    out = s({"id": ["a"], "task": ["captions"], "image": [None], "image_bytes": [image],
             "output": [TWO]})
    # independent forward pass with open_clip itself
    model, _, preprocess = open_clip.create_model_and_transforms("pf-tiny-vit",
                                                                 pretrained=str(weights))
    tok = open_clip.get_tokenizer("pf-tiny-vit")
    img = ImageLoader().load(None, image)
    with torch.no_grad():
        v = model.encode_image(preprocess(img)[None])[0].double().numpy()
        want = []
        for para in paragraphs(TWO):
            t = model.encode_text(tok(sentences(para))).double().numpy()
            t = t / np.linalg.norm(t, axis=1, keepdims=True)
            want.append(100 * float(v / np.linalg.norm(v) @ t.mean(axis=0)))
    assert out["paragraph_clip_scores"][0] == pytest.approx(want, abs=1e-3)
    assert out["filtered_paragraphs"][0] == [] and out[REJECT_REASON] == [None]
    assert out["output"][0] == "A red square. It is bright.\n\nThe sky is blue today."


def test_drops_low_paragraphs_then_rows(weights: Path) -> None:
    batch = {"id": ["a", "b", "c", "d"], "task": ["captions", "captions", "vqa", "captions"],
             "image": [None, None, None, None],
             "image_bytes": [png((200, 30, 30)), png((200, 30, 30)), None, b"not an image"],
             "output": [TWO, "One paragraph only.", "A\n\nB", "Broken.\n\nImage."]}
    scores = step(weights, -1e9)(batch)["paragraph_clip_scores"][0]
    lo, hi = sorted(scores)
    out = step(weights, (lo + hi) / 2)(batch)
    kept = paragraphs(TWO)[scores.index(hi)]
    dropped = paragraphs(TWO)[scores.index(lo)]
    assert out["output"][0] == kept
    assert out["filtered_paragraphs"][0] == [{"score": lo, "text": dropped}]
    assert out["paragraph_clip_scores"][0] == scores  # every paragraph's score, in order
    assert out["paragraph_clip_scores"][1:3] == [None, None]  # no blank line; not a caption
    assert out[REJECT_REASON] == [None, None, None, "image_not_image"]
    all_low = step(weights, hi + 1)(batch)
    assert all_low[REJECT_REASON][0] == "filter_clip"


def test_missing_weights_are_an_infrastructure_fault(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="absent.pt"):
        step(tmp_path / "absent.pt", 17.0).load()
    with pytest.raises(ModelUnavailable, match="not an open_clip model"):
        ParagraphCLIPScore("no-such-clip", str(tmp_path)).load()


def test_weights_of_another_model_are_an_infrastructure_fault(weights: Path) -> None:
    """Loading the tiny checkpoint into another architecture fails the load (no row faults)."""
    with pytest.raises(ModelUnavailable, match="clip weights"):
        ParagraphCLIPScore("ViT-B-32", str(weights), device="cpu").load()


class ByColour(ParagraphCLIPScore):
    """A CLIP stand-in: paragraph k scores 30 against an image of colour k, else 10."""

    def __init__(self, colours: list[tuple[int, int, int]], threshold: float) -> None:
        self.threshold, self.tasks, self.loader = threshold, None, ImageLoader()
        self.colours = colours

    def score_paragraphs(self, image, paras):  # type: ignore[no-untyped-def]
        c = image.getpixel((0, 0))
        return [30.0 if k < len(self.colours) and self.colours[k] == c else 10.0
                for k in range(len(paras))]


def test_a_row_with_two_images_keeps_each_paragraph_on_its_best_image() -> None:
    """Paragraph 1 describes the before image (red), paragraph 2 the after image (blue):
    scored against both, each keeps its own image's score; against the first image alone
    paragraph 2 would be dropped."""
    red, blue = (200, 30, 30), (30, 60, 200)
    s = ByColour([red, blue], threshold=20.0)
    batch = {"id": ["two", "one"], "task": ["change_caption"] * 2,
             "image": [None, None], "image_bytes": [png(red), png(red)],
             "extra_images": [[{"image": None, "image_bytes": png(blue)}], None],
             "output": [TWO, TWO]}
    out = s(batch)
    assert out["paragraph_clip_scores"] == [[30.0, 30.0], [30.0, 10.0]]
    assert out["output"][0] == "A red square. It is bright.\n\nThe sky is blue today."
    assert out["output"][1] == "A red square. It is bright."  # one image: paragraph 2 dropped
    assert out["filtered_paragraphs"][1] == [{"score": 10.0, "text": "The sky is blue today."}]
    # an unreadable second image is the row's reject, naming it
    batch["extra_images"][0] = [{"image": None, "image_bytes": b"not an image"}]
    out = s(batch)
    assert out[REJECT_REASON][0] == "image_not_image"
    assert out[REJECT_DETAIL][0].startswith("image 2 of 2: ")
