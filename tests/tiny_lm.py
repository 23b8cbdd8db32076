"""A tiny Llama causal LM and tokenizer, built from configs and saved as a HF folder."""

from __future__ import annotations

from pathlib import Path

from pf_ray.data.synthetic import generate
from pf_ray.distort.styles import PREFILL, STYLES, SUMMARISE_REQUEST, SYSTEM_MESSAGE


def corpus() -> list[str]:
    batch = generate(0, 0, 90)
    texts = [t["content"] for conv in batch["conversations"] for t in conv]
    return texts + [SYSTEM_MESSAGE, SUMMARISE_REQUEST, PREFILL] + [s for _, s in STYLES] + [
        '### Human: ### Assistant: " "']


def build_tiny_lm(folder: Path, *, seed: int = 0, hidden: int = 32, heads: int = 4) -> Path:
    """Write a tiny random Llama (~0.1M parameters by default) and a BPE tokenizer trained
    on synthetic text. vLLM's CPU kernels need head_dim 32 or 64: hidden=64, heads=2."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=heads,
                         num_key_value_heads=heads,
                         max_position_embeddings=1024, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder
