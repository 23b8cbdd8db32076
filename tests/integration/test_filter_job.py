"""The PF-1M filter chain on local Ray: tiny CLIP / NLI / reward models, the real MiniLM.

One job over a rewrite dataset of every task (module fixture); then the dataset card, the
PF-1M JSON export (round trip) and ``datasets.load_dataset("parquet")`` on its output.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tiny_filter_models import build_classifier, build_tiny_clip, case_rows, write_rewrite_dataset

from pf_ray.cli import main
from pf_ray.config import parse_spec
from pf_ray.data.io import Dataset
from pf_ray.export.pf1m_json import read_pf1m_json
from pf_ray.filters.registry import reasons as drop_reasons
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
QA, CAPTIONS = ("vqa", "multiple_choice"), ("captions", "region_caption")


@pytest.fixture(scope="module")
def filtered(ray_session: str, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[list[dict[str, Any]], Dataset, Path]:
    tmp = tmp_path_factory.mktemp("filter_job")
    rows = case_rows(3)  # 27 rows, 5 sources, 6 tasks
    write_rewrite_dataset(str(tmp / "rewrite"), rows, rows_per_shard=9)
    clip = build_tiny_clip(tmp / "clip.pt")
    scores = [-1e9]  # pick a CLIP threshold between this tiny model's paragraph scores
    spec = parse_spec({
        "kind": "filter", "inputs": [str(tmp / "rewrite")], "output": {"path": str(tmp / "pf1m")},
        "ray": {"progress": False},
        "pool": {"device": "cpu", "batch_size": 8, "num_cpus": 0.5},
        "clip": {"model_name": "pf-tiny-vit", "pretrained": str(clip), "threshold": scores[0]},
        "nli": {"model": str(build_classifier(tmp / "nli", 3, seed=5))},
        "reward": {"model": str(build_classifier(tmp / "reward", 1, seed=6))}})
    _mid_threshold(spec, rows)
    [result] = run_job(spec)
    assert result.written == 3
    return rows, Dataset(str(tmp / "pf1m"), StorageConfig()), tmp


def _mid_threshold(spec: Any, rows: list[dict[str, Any]]) -> None:
    """Set clip.threshold between the two paragraph scores of the first multi-paragraph row,
    so that the job drops a paragraph and keeps one (random tiny CLIP: scores unknown)."""
    from pf_ray.filters.clipscore import ParagraphCLIPScore
    from pf_ray.scorers.clip import paragraphs

    r = next(r for r in rows if "\n\n" in r["output"])
    step = ParagraphCLIPScore("pf-tiny-vit", spec.clip.pretrained, device="cpu")
    from pf_ray.data.images import ImageLoader

    s = step.score_paragraphs(ImageLoader().load(None, r["image_bytes"]),
                              paragraphs(r["output"]))
    spec.clip.threshold = sum(s) / 2


def test_rows_in_equal_kept_plus_rejects_per_source(filtered: Any) -> None:
    rows, ds, _ = filtered
    kept = ds.read().to_pylist()
    rejects = ds.read("rejects").to_pylist()
    ids = [r["id"] for r in kept] + [r["id"] for r in rejects]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # each id exactly once
    src_in = Counter(r["source"] for r in rows)
    src_out = Counter(r["source"] for r in kept) + Counter(
        json.loads(r["row"])["source"] for r in rejects)
    assert src_out == src_in
    manifest = ds.read_manifest()
    summary = manifest["summary"]
    assert summary["rows"]["in"]["source"] == dict(src_in)
    assert summary["rows"]["kept"]["source"] == dict(Counter(r["source"] for r in kept))
    assert {r["reason"] for r in rejects} <= set(drop_reasons())
    reasons = Counter(r["reason"] for r in rejects)
    assert reasons["filter_length_short"] == 3 and reasons["filter_unchanged"] == 3
    assert reasons["filter_sts"] == 3  # the real MiniLM: an unrelated "caption"
    for f, reason in (("length", "filter_length_short"), ("sts", "filter_sts")):
        assert summary["filters"][f]["dropped"] == reasons[reason]
    for name in ("length", "rouge_score", "reward"):
        s = summary["scores"]["scored"][name]
        assert s["count"] >= len(kept) and s["min"] <= s["p50"] <= s["max"]


def test_scores_on_kept_rows_and_in_rejects(filtered: Any) -> None:
    _, ds, _ = filtered
    kept = ds.read().to_pylist()
    assert kept
    for r in kept:
        assert r["length"] >= 3 and r["rouge_score"] < 1.0 and r["reward"] is not None
        assert (r["sts_similarity"] is not None) == (r["task"] in CAPTIONS)
        assert r["sts_similarity"] is None or r["sts_similarity"] >= 0.4
        assert (r["nli_similarity"] is not None) == (r["task"] in QA)
        if r["nli_similarity"] is not None:  # kept: argmax is not contradiction
            assert len(r["nli_similarity"]) == 3
            assert max(r["nli_similarity"]) != r["nli_similarity"][0]
    multi = [r for r in kept if r["paragraph_clip_scores"]]
    assert multi, "the threshold keeps one paragraph of each multi-paragraph caption"
    for r in multi:
        assert "\n\n" not in r["output"] and len(r["filtered_paragraphs"]) == 1
        low, high = sorted(r["paragraph_clip_scores"])
        assert r["filtered_paragraphs"][0]["score"] == low < high
    for rej in ds.read("rejects").to_pylist():
        row = json.loads(rej["row"])
        if rej["reason"] == "filter_sts":
            assert row["sts_similarity"] < 0.4 and row["rouge_score"] is not None
            assert "sts_similarity" in rej["detail"]
        if rej["reason"] == "filter_nli_contradiction":
            assert max(row["nli_similarity"]) == row["nli_similarity"][0]


def test_dataset_card(filtered: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, ds, tmp = filtered
    assert main(["report", ds.root, "--out", str(tmp / "card")]) == 0
    card = (tmp / "card" / "README.md").read_text()
    for text in ("## Rows per source", "vqav2", "filter_sts", "## Drops per reason",
                 "## Scores before and after filtering", "sts_similarity",
                 "rows_per_source.png", "drops_per_reason.png", "output_lengths.png"):
        assert text in card, text
    pngs = sorted(p.name for p in (tmp / "card").glob("*.png"))
    assert {"rows_per_source.png", "drops_per_reason.png", "output_lengths.png",
            "score_reward.png", "score_sts_similarity.png"} <= set(pngs)
    assert all((tmp / "card" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_pf1m_json_round_trip(filtered: Any) -> None:
    _, ds, tmp = filtered
    out = tmp / "export" / "PF-1M.json"
    assert main(["export", ds.root, "--format", "pf1m-json", "--out", str(out)]) == 0
    samples = json.loads(out.read_text())
    kept = ds.read().to_pylist()
    assert len(samples) == len(kept)
    first = samples[0]
    assert first["input"].startswith("<img_path>") and first["input"].count("<img_path>") == 2
    back = {r["id"]: r for r in read_pf1m_json(out)}
    for r in kept:
        b = back[r["id"]]
        for f in ("instruction", "output", "original", "rouge_score", "reward",
                  "nli_similarity", "sts_similarity", "filtered_paragraphs",
                  "paragraph_clip_scores"):
            assert b[f] == r[f], f
        assert (tmp / "export" / "images" / b["image"]).read_bytes() == r["image_bytes"]
        sample = next(s for s in samples if s["id"] == r["id"])
        assert ("nli_similarity" in sample) == (r["task"] in QA)
        assert ("sts_similarity" in sample) == (r["task"] in CAPTIONS)


def test_shards_load_with_hf_datasets(filtered: Any, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    _, ds, _ = filtered
    hf = datasets.load_dataset("parquet", data_files=ds.shard_files(), split="train",
                               cache_dir=str(tmp_path / "cache"))
    kept = ds.read().to_pylist()
    assert hf.num_rows == len(kept)
    assert sorted(hf["id"]) == sorted(r["id"] for r in kept)
    assert set(hf.column_names) >= {"output", "rouge_score", "nli_similarity",
                                    "filtered_paragraphs", "reward"}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", *os.environ.get("PYTEST_ARGS", "").split()]))
