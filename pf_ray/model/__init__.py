"""The Flamingo model (OpenFlamingo v1 layout) used by Polite Flamingo and Clever Flamingo.

vision.py (open_clip tower) -> perceiver.py (resampler) -> xattn.py (gated cross-attention,
masks) inside a Hugging Face causal LM (flamingo.py), LoRA through peft (lora.py),
tokenizer.py / prompts.py (special tokens, pinned formats), trainability.py (parts and
stages), checkpoint.py / convert.py (model folders, released files), generate.py (batched
decoding) and presets.py (tiny / 9B / 1B configurations). Import the modules directly.
"""
