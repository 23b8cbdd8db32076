"""``pf-ray quickstart`` end to end: one run per test session, every test reads its outputs.

The numbers in ``summary.json`` must be this run's, recomputed from what it wrote: a stale
summary planted in the workdir is replaced, stage counts equal the manifests, the copy
baseline is recomputed from the held-out pairs, and the trained rewriter's and the S3
model's scores are reproduced by loading the exported models again (greedy decoding).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pf_ray.data.io import Dataset
from pf_ray.specs import StorageConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quickstart_run(ray_session: str, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    workdir = tmp_path_factory.mktemp("quickstart") / "qs"
    workdir.mkdir()
    (workdir / "summary.json").write_text(json.dumps({"stale": True, "wall_s": -1}))
    env = {**os.environ, "RAY_ADDRESS": ray_session, "RAY_AUTH_MODE": "disabled"}
    out = subprocess.run([sys.executable, "-m", "pf_ray.cli", "quickstart", "--workdir",
                          str(workdir), "--no-progress"], env=env, capture_output=True,
                         text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return workdir, out


@pytest.fixture(scope="module")
def summary(quickstart_run: tuple[Path, Any]) -> dict[str, Any]:
    return json.loads((quickstart_run[0] / "summary.json").read_text())


def _rows(path: Path | str) -> list[dict[str, Any]]:
    return Dataset(str(path), StorageConfig()).read().to_pylist()


@pytest.mark.timeout(1600)
def test_console_ends_with_the_summary_table(quickstart_run):
    _, out = quickstart_run
    assert "quickstart done" in out.stdout
    assert "1800 row(s)" in out.stdout
    tail = out.stdout[out.stdout.index("summary ->"):]
    for label in ("rewriter: held-out ROUGE-L", "copy draft", "Clever: held-out VQA accuracy",
                  "image withheld", "wall time"):
        assert label in tail


def test_summary_has_every_key_and_is_this_runs(summary):
    assert "stale" not in summary
    assert 0 < summary["wall_s"] <= 1500
    for key in ("heldout_rougeL", "copy_baseline_rougeL", "untrained_rougeL", "per_family"):
        assert key in summary["rewriter"]
    assert set(summary["clever"]["heldout_accuracy"]) == {"base", "s1", "s2", "s3", "blind"}
    for stage in ("synthetic", "distort", "flamingo_pretrain", "rewriter", "clever_s1",
                  "clever_s2", "clever_s3"):
        assert summary["stages"][stage]["output"], stage
    for key in ("heldout_retrieval_at_1", "untrained_retrieval_at_1", "chance", "file"):
        assert key in summary["vision"]


def test_the_image_tower_is_pretrained_and_its_retrieval_is_recomputed(summary):
    import open_clip

    from pf_ray.data.synthetic import caption_pairs
    from pf_ray.model.clip_pretrain import retrieval_at_1
    from pf_ray.model.vision import register_tiny_configs
    from pf_ray.quickstart.flow import CLIP_HELDOUT, HELDOUT_SEED

    vision = summary["vision"]
    register_tiny_configs()
    model = open_clip.create_model(vision["model"], pretrained=vision["file"])
    held = caption_pairs(HELDOUT_SEED, 0, CLIP_HELDOUT)
    assert vision["heldout_retrieval_at_1"] == pytest.approx(
        retrieval_at_1(model, vision["model"], held))
    assert vision["heldout_retrieval_at_1"] > 10 * vision["chance"]
    assert vision["heldout_retrieval_at_1"] > vision["untrained_retrieval_at_1"]


def test_stage_counts_are_the_manifests(quickstart_run, summary):
    workdir, _ = quickstart_run
    for stage, folder in (("synthetic", "synthetic"), ("distort", "distort")):
        totals = json.loads((workdir / folder / "_manifest.json").read_text())["totals"]
        record = summary["stages"][stage]
        assert (record["rows"], record["rejects"]) == (totals["rows"], totals["rejects"])
        assert record["output"] == str(workdir / folder)
    assert summary["stages"]["synthetic"]["rows"] == 1800


def test_rewriter_beats_copying_and_its_numbers_are_recomputed(quickstart_run, summary):
    from pf_ray.eval.rewriter import copy_baseline, mean_rouge, revise
    from pf_ray.model.checkpoint import load_folder_tokenizer, load_pretrained
    from pf_ray.quickstart.flow import HELDOUT_PAIRS

    workdir, _ = quickstart_run
    rw = summary["rewriter"]
    held = _rows(workdir / "heldout" / "pairs")[:HELDOUT_PAIRS]
    copy = copy_baseline(held)
    assert rw["copy_baseline_rougeL"] == pytest.approx(copy["overall"])
    for family, scores in rw["per_family"].items():
        assert scores["copy"] == pytest.approx(copy[family])
        assert scores["pairs"] == sum(p["family"] == family for p in held)
    model_dir = summary["stages"]["rewriter"]["output"]
    again = mean_rouge(held, revise(load_pretrained(model_dir), load_folder_tokenizer(model_dir),
                                    held))
    assert rw["heldout_rougeL"] == pytest.approx(again["overall"])
    assert rw["heldout_rougeL"] > rw["copy_baseline_rougeL"] > rw["untrained_rougeL"]


def test_clever_uses_the_image_and_its_accuracy_is_recomputed(quickstart_run, summary):
    from pf_ray.eval.vqa import accuracy, answer_questions, questions_from_rows
    from pf_ray.model.checkpoint import load_folder_tokenizer, load_pretrained

    workdir, _ = quickstart_run
    acc = summary["clever"]["heldout_accuracy"]
    questions = questions_from_rows(_rows(workdir / "heldout" / "synthetic"))
    assert summary["clever"]["questions"] == len(questions) >= 60
    model_dir = summary["stages"]["clever_s3"]["output"]
    model, tok = load_pretrained(model_dir), load_folder_tokenizer(model_dir)
    assert acc["s3"] == pytest.approx(accuracy(answer_questions(model, tok, questions),
                                               questions))
    assert acc["blind"] == pytest.approx(accuracy(answer_questions(model, tok, questions,
                                                                   blind=True), questions))
    # issue 9's bar: the vision path matters (measured 0.512 vs 0.300 on 2 CPUs)
    assert acc["s3"] >= acc["blind"] + 0.10, acc


def test_pf1m_counts_balance_and_fact_recall_is_recomputed(quickstart_run, summary):
    from pf_ray.eval.facts import fact_recall

    workdir, _ = quickstart_run
    pf = summary["pf1m"]
    rewrite = json.loads((workdir / "pf1m" / "rewritten" / "_manifest.json").read_text())
    kept = json.loads((workdir / "pf1m" / "filtered" / "_manifest.json").read_text())
    raw = sum(r["source"] == "synthetic_vl" for r in _rows(workdir / "synthetic"))
    not_selected = rewrite["totals"]["rejects_per_reason"].get("not_selected", 0)
    assert not_selected == 1800 - raw  # the clean rows: not raw annotations
    assert pf["rows_in"] == raw == rewrite["totals"]["rows"] + pf["rewrite_rejects"]
    assert pf["rewrite_rejects"] == rewrite["totals"]["rejects"] - not_selected
    assert pf["rewritten"] == rewrite["totals"]["rows"] == kept["totals"]["rows"] + \
        kept["totals"]["rejects"]
    assert pf["kept"] == kept["totals"]["rows"] > 0
    recall, checked = fact_recall(_rows(workdir / "pf1m" / "filtered"))
    assert (pf["fact_recall"], pf["fact_checked"]) == (pytest.approx(recall), checked)
    assert set(pf["scorers"]) == {"sts", "clip", "nli", "reward"}


def test_the_served_model_answered_through_the_openai_client(summary):
    serve = summary["serve"]
    assert serve["ok"], serve
    assert serve["answer"] and 0 < serve["first_token_s"] <= serve["total_s"]


def test_eval_compares_raw_rewriter_and_clever_on_the_same_items(quickstart_run, summary):
    """``eval.*``: the eval job's numbers, recomputed from the answers it committed."""
    import statistics

    from pf_ray.eval.aggregate import pair_counts
    from pf_ray.eval.facts import states_fact
    from pf_ray.metrics.rouge import rouge_l

    workdir, out = quickstart_run
    ev = summary["eval"]
    rows = _rows(workdir / "eval")
    items: dict[str, set] = {}
    for r in rows:
        items.setdefault(r["answerer"], set()).add((r["set"], r["item"]))
    assert set(items) == {"raw", "rewriter", "clever"}
    assert items["raw"] == items["rewriter"] == items["clever"]  # the same questions
    assert len(items["raw"]) == ev["sets"]["VQA"]["taken"] + ev["sets"]["Captions"]["taken"]
    for source in items:
        mine = [r for r in rows if r["answerer"] == source]
        facts = [f for r in mine if r["set"] == "VQA" and (
            f := states_fact(r["output"], r["task"], json.loads(r["meta"]))) is not None]
        assert ev["answer_accuracy"][source] == pytest.approx(sum(facts) / len(facts))
        caps = [rouge_l(r["output"], r["references"]) for r in mine if r["set"] == "Captions"]
        assert ev["captions_rougeL"][source] == pytest.approx(statistics.fmean(caps))
    assert ev["answer_accuracy"]["raw"] == 1.0  # the raw annotations are the ground truth
    reward = {a: {(r["set"], r["item"]): r["reward"] for r in rows if r["answerer"] == a}
              for a in items}
    assert ev["reward_win_rate"]["clever_vs_raw"] == pytest.approx(
        pair_counts(reward["clever"], reward["raw"])["win_rate"])
    assert "random" in ev["reward_model"]
    assert (workdir / "eval" / "tables.md").read_text().count("| clever |") >= 2
    assert "eval: VQA answer accuracy" in out.stdout[out.stdout.index("summary ->"):]
