"""Contrastive pretraining of the small CLIP tower: it learns, and Flamingo loads it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pf_ray.data.synthetic import CaptionPair, caption_pairs
from pf_ray.model.clip_pretrain import retrieval_at_1, train_clip


def _pairs(seed: int, n: int) -> list[CaptionPair]:
    return caption_pairs(seed, 0, n)


def test_caption_pairs_put_the_full_caption_first():
    (img, caps), = caption_pairs(2, 5, 6)
    assert img.size == (64, 64) and len(caps) >= 4
    assert caps[0].endswith("background") and " on a " in caps[0]


def test_training_beats_the_untrained_tower_and_flamingo_loads_it(tmp_path):
    run = train_clip("pf-tiny-vit", _pairs(2, 512), _pairs(1, 32), tmp_path / "clip.pt",
                     steps=300, batch_size=64)
    assert run.loss_last < run.loss_first
    assert run.chance == pytest.approx(1 / 32)
    assert run.retrieval_at_1 >= max(3 * run.chance, run.retrieval_untrained + 0.05), run

    from pf_ray.model.flamingo import build_flamingo
    from pf_ray.model.presets import tiny

    config = tiny()
    config = dataclasses.replace(config, vision=dataclasses.replace(
        config.vision, pretrained=run.path))
    model = build_flamingo(config)
    saved = torch.load(run.path)
    assert torch.equal(model.vision_encoder.conv1.weight, saved["visual.conv1.weight"])

    # the PF-1M CLIPScore filter loads the same file (the quickstart's filter does): an
    # image's own caption scores above another image's caption, on average
    from pf_ray.filters.clipscore import ParagraphCLIPScore

    scorer = ParagraphCLIPScore("pf-tiny-vit", run.path)
    held = _pairs(1, 32)
    own = [scorer.score_paragraphs(p.image, [p.captions[0]])[0] for p in held]
    other = [scorer.score_paragraphs(p.image, [q.captions[0]])[0]
             for p, q in zip(held, held[1:] + held[:1], strict=True)]
    assert sum(own) / len(own) > sum(other) / len(other) + 20.0, (own, other)


def test_retrieval_of_an_empty_set_and_too_few_pairs(tmp_path):
    import open_clip

    from pf_ray.model.vision import register_tiny_configs

    register_tiny_configs()
    model = open_clip.create_model("pf-tiny-vit", pretrained=None)
    assert retrieval_at_1(model, "pf-tiny-vit", []) == 0.0
    with pytest.raises(ValueError, match="pairs: received 1"):
        train_clip("pf-tiny-vit", _pairs(2, 1), [], tmp_path / "x.pt", steps=1)
