"""The local cache of model folders copied from an object store: one download per machine
(a file lock), nothing left behind by a failed copy, and only what a caller needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pyarrow.fs as pafs
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from pf_ray.faults import ModelUnavailable
from pf_ray.specs import StorageConfig
from pf_ray.storage import local_copy, resolve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]

# One racer: import first, say it is ready, wait for the start file, copy, report what its
# own copy did (the lines local_copy logs) and where the folder is.
RACER = """
import json, logging, os, sys, time
from pf_ray.storage import local_copy
lines = []
class Keep(logging.Handler):
    def emit(self, record): lines.append(record.getMessage())
logger = logging.getLogger("pf_ray.storage")
logger.addHandler(Keep()); logger.setLevel(logging.INFO)
uri, ready, go = sys.argv[1:4]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
path = local_copy(uri)
print(json.dumps({"path": path, "lines": lines}))
"""


def cache_entries(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


def upload(folder: Path, uri: str) -> None:
    fs, base = resolve(uri, StorageConfig())
    pafs.copy_files(str(folder), base, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)


def fake_model_folder(folder: Path, weight_mb: int) -> dict[str, bytes]:
    """A model folder's layout with random weights; returns relative path -> content."""
    files = {"config.json": b'{"x": 1}', "model.safetensors": os.urandom(weight_mb << 20),
             "adapter/adapter_model.safetensors": os.urandom(1 << 20),
             "tokenizer/tokenizer.json": b'{"t": 1}'}
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def test_two_processes_download_a_folder_once(s3_server, s3_bucket: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    files = fake_model_folder(tmp_path / "model", weight_mb=48)
    uri = f"{s3_bucket}/models/big"
    upload(tmp_path / "model", uri)
    cache = tmp_path / "cache"
    env = {**os.environ, "PF_RAY_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, uri, str(tmp_path / f"ready{i}"),
                               str(tmp_path / "go")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [
            p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both start together
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    downloads = [sum(line.startswith("downloading") for line in r["lines"]) for r in reports]
    waits = [sum(line.startswith("waiting for another") for line in r["lines"]) for r in reports]
    assert sorted(downloads) == [0, 1], reports  # exactly one process downloaded
    # ... while the other waited for it (the two did race: this is not one after the other)
    assert waits[downloads.index(0)] == 1, reports
    assert reports[0]["path"] == reports[1]["path"]
    folder = Path(reports[0]["path"])
    assert {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} == set(files)
    for rel, data in files.items():
        assert (folder / rel).read_bytes() == data, rel
    assert Path(f"{folder}.complete").exists()
    assert not [e for e in cache_entries(cache) if ".tmp-" in e], cache_entries(cache)


class VanishingFS(MemoryFileSystem):
    """An in-memory store whose listed objects named in ``vanished`` are gone when read."""

    protocol = "vanishing"
    store: dict = {}
    pseudo_dirs = [""]
    vanished: set[str] = set()

    @classmethod
    def _strip_protocol(cls, path):  # type: ignore[no-untyped-def]
        return super()._strip_protocol(str(path).removeprefix("vanishing://"))

    def _open(self, path, mode="rb", **kwargs):  # type: ignore[no-untyped-def]
        name = self._strip_protocol(path)
        if "r" in mode and name in self.vanished:
            self.store.pop(name, None)
            raise FileNotFoundError(path)
        return super()._open(path, mode, **kwargs)


def test_a_failed_copy_leaves_nothing_and_the_next_call_retries(tmp_path: Path) -> None:
    fsspec.register_implementation("vanishing", VanishingFS, clobber=True)
    fs = VanishingFS()
    content = {f"/models/m/part{i}.bin": os.urandom(1 << 16) for i in range(6)}
    content["/models/m/tokenizer/tokenizer.json"] = b"{}"
    for name, data in content.items():
        fs.pipe(name, data)
    cache = tmp_path / "cache"
    VanishingFS.vanished = {"/models/m/part3.bin"}  # listed, then gone when read
    with pytest.raises(FileNotFoundError, match="part3"):
        local_copy("vanishing://models/m", cache_dir=str(cache))
    entries = cache_entries(cache)
    assert not [e for e in entries if ".tmp-" in e or e.endswith(".complete")], entries
    assert not [e for e in entries if e.endswith("/m")], entries  # no target either

    VanishingFS.vanished = set()
    fs.pipe("/models/m/part3.bin", content["/models/m/part3.bin"])  # the object is back
    folder = Path(local_copy("vanishing://models/m", cache_dir=str(cache)))
    for name, data in content.items():
        assert (folder / name.removeprefix("/models/m/")).read_bytes() == data
    # what a killed process leaves (a copy never marked complete, a temporary name) is
    # replaced by the next copy
    os.remove(f"{folder}.complete")
    (folder / "junk").write_bytes(b"partial")
    Path(f"{folder}.tmp-1-abcdef").mkdir()
    again = Path(local_copy("vanishing://models/m", cache_dir=str(cache)))
    assert again == folder and not (folder / "junk").exists()
    assert not [e for e in cache_entries(cache) if ".tmp-" in e]

    # parts: only what is asked, cached apart from the whole folder
    part = Path(local_copy("vanishing://models/m", cache_dir=str(cache),
                           parts=("tokenizer", "part0.bin", "absent.json")))
    assert part != folder
    assert sorted(str(p.relative_to(part)) for p in part.rglob("*")) == [
        "part0.bin", "tokenizer", "tokenizer/tokenizer.json"]


def test_config_and_tokenizer_of_an_s3_folder_copy_no_weights(
        s3_server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_config, model_tokenizer

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PF_RAY_CACHE", str(cache))
    model, tok = build_model("tiny"), model_tokenizer("tiny")
    save_pretrained(model, tmp_path / "model", tok)
    uri = f"{s3_bucket}/models/tiny"
    upload(tmp_path / "model", uri)

    assert model_config(uri) == model.config
    assert cache_entries(cache) == []  # read in place: nothing cached
    assert model_tokenizer(uri).get_vocab() == tok.get_vocab()
    entries = cache_entries(cache)
    assert any(e.endswith("tokenizer/tokenizer_config.json") for e in entries), entries
    assert not [e for e in entries if "model.safetensors" in e or "adapter" in e], entries

    with pytest.raises(ModelUnavailable):
        model_config(f"{s3_bucket}/models/absent")
    with pytest.raises(ModelUnavailable):
        model_tokenizer(f"{s3_bucket}/models/absent")
