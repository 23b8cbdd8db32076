"""Convert released weights into a pf-ray model folder.

    pf-ray convert --preset openflamingo-9b-v1 --out models/clever-flamingo \\
        --lm /weights/llama-7b-hf --vision /weights/ViT-L-14-336/open_clip_pytorch_model.bin \\
        --lora-init /weights/guanaco-7b \\
        --load openflamingo=/weights/OpenFlamingo-9B/checkpoint.pt \\
        --load clever_flamingo=/weights/clever_flamingo/clever_flamingo.pt

The gen-2 rewriter is ``--load clever_flamingo=clever_flamingo.pt --load
polite_flamingo=polite_flamingo_gen2.pt``; the gen-1 rewriter ``--load openflamingo=...
--load polite_flamingo=polite_flamingo.pt``. Files load in the order given (paper.md §6: LoRA
init, then OpenFlamingo-9B, then the Flamingo file), each strictly against its layout
(``--non-strict`` to report and go on). Vision keys in released files are skipped: the
tower comes from ``--vision`` (the paper replaced OpenFlamingo's 224 px ViT with the 336 px
one); ``--vision-from-checkpoint`` loads them instead.

The ``--lora-init`` adapter's own ``adapter_config.json`` wins over the config's LoRA
settings (r, alpha, dropout, target modules): the released code loaded guanaco-7b with
``PeftModel.from_pretrained``, so its models run with the adapter's scaling. Each
differing field is printed; the model folder's config.json records what was used.

Everything is read from local paths; nothing is downloaded, no remote code runs.
Importing this module is cheap (no torch): the CLI builds its parser from
:func:`build_parser` and calls :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

# kept in step with checkpoint.LAYOUTS and presets.PRESETS (tested), so that building the
# parser imports neither
LAYOUT_NAMES = ("openflamingo", "polite_flamingo", "clever_flamingo", "full")
PRESET_NAMES = ("tiny", "tiny-qwen2", "mid", "openflamingo-9b-v1", "flamingo-1b", "smol")
TOKENIZER_MODE_NAMES = ("auto", "llama_v1", "llama_v1_slow")  # config.TOKENIZER_MODES


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The converter's arguments, on a new parser or on ``parser`` (e.g. a CLI subparser)."""
    p = parser or argparse.ArgumentParser(prog="pf-ray convert")
    p.description = __doc__.splitlines()[0]
    p.epilog = "\n".join(__doc__.splitlines()[2:])
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=PRESET_NAMES, help="model configuration")
    src.add_argument("--config", type=Path, help="a config.json (FlamingoConfig) instead")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--lm", help="local HF folder of the language model's weights")
    p.add_argument("--tokenizer", help="local tokenizer folder (default: --lm, or the config's)")
    p.add_argument("--tokenizer-mode", choices=TOKENIZER_MODE_NAMES,
                   help="how to read it (default: the config's; llama_v1_slow: sentencepiece)")
    p.add_argument("--vision", help="local open_clip checkpoint file for the vision tower")
    p.add_argument("--lora-init", help="peft adapter folder to initialise LoRA (e.g. guanaco-7b)")
    p.add_argument("--load", action="append", default=[], metavar="LAYOUT=PATH",
                   help=f"a released .pt file; LAYOUT one of {', '.join(LAYOUT_NAMES)} (repeatable)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="weights dtype (default: the config's)")
    p.add_argument("--vision-from-checkpoint", action="store_true",
                   help="load vision_encoder.* keys from the released files")
    p.add_argument("--non-strict", action="store_true",
                   help="report missing / unexpected keys instead of failing")
    return p


def _parse_loads(items: Sequence[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        layout, sep, path = item.partition("=")
        if not sep or layout not in LAYOUT_NAMES:
            raise ValueError(f"--load: received {item!r}; allowed: LAYOUT=PATH with LAYOUT one of "
                             f"{', '.join(LAYOUT_NAMES)}")
        out.append((layout, Path(path)))
    return out


def convert(args: argparse.Namespace) -> Path:
    """Build, load every file in order, save; returns the folder. Raises on any problem."""
    from pf_ray.model.checkpoint import load_released, save_pretrained
    from pf_ray.model.config import FlamingoConfig
    from pf_ray.model.flamingo import build_flamingo
    from pf_ray.model.lora import load_adapter, read_adapter_settings, settings_differences
    from pf_ray.model.presets import get_preset
    from pf_ray.model.tokenizer import TINY, check_tokenizer, load_tokenizer

    if args.preset:
        config = get_preset(args.preset)
    else:
        config = FlamingoConfig.from_dict(json.loads(args.config.read_text()))
    loads = _parse_loads(args.load)
    for _, path in loads:
        if not path.exists():
            raise FileNotFoundError(f"--load: {path}: no such file")
    tokenizer_src = args.tokenizer or args.lm or config.tokenizer
    if not tokenizer_src:
        raise ValueError(f"preset {config.name!r} needs --tokenizer (or --lm) with a tokenizer")
    config = config.replace(
        vision=replace(config.vision, pretrained=args.vision or config.vision.pretrained),
        lm=replace(config.lm, pretrained=args.lm or config.lm.pretrained),
        tokenizer=TINY if tokenizer_src == TINY else str(tokenizer_src),
        tokenizer_mode=args.tokenizer_mode or config.tokenizer_mode,
        dtype=args.dtype or config.dtype)
    # LLaMA tokenizers pad with <unk> (id 0) in the released models
    pad = "<unk>" if config.tokens.pad == 0 else "<PAD>"
    tokenizer = load_tokenizer(tokenizer_src, pad=pad, mode=config.tokenizer_mode)
    check_tokenizer(tokenizer, config.tokens, config.lm.vocab_size)
    if args.lora_init:
        if config.lora is None:
            raise ValueError("--lora-init given but the config has no lora settings")
        adapter = read_adapter_settings(args.lora_init)
        differences = settings_differences(config.lora, adapter)
        if differences:
            print(f"{args.lora_init}: using the adapter's LoRA settings, not the config's "
                  f"(config -> adapter): {'; '.join(differences)}", file=sys.stderr)
            config = config.replace(lora=adapter)
    model = build_flamingo(config)
    if args.lora_init:
        load_adapter(model.lang_encoder, args.lora_init, strict=not args.non_strict)
        print(f"{args.lora_init}: LoRA initialised")
    exclude = () if args.vision_from_checkpoint else ("vision",)
    for layout, path in loads:
        report = load_released(model, path, layout, strict=not args.non_strict,
                               exclude_parts=exclude)
        print(report.summary())
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
    out = save_pretrained(model, args.out, tokenizer=tokenizer)
    print(f"wrote {out}")
    return out


def run(args: argparse.Namespace) -> int:
    """Convert; on a bad input print what is wrong (every key for weights) and return 2."""
    try:
        convert(args)
    except (KeyError, ValueError, FileNotFoundError) as exc:  # ModelConfigError is a ValueError
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"pf-ray convert: {msg}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
