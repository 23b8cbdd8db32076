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
    """README command 1's run when CI made one (``.ci/run`` exports its workdir and console
    log), else a run of our own; either way one quickstart per test session."""
    given = os.environ.get("PF_RAY_QUICKSTART_WORKDIR")
    if given:
        log = Path(os.environ.get("PF_RAY_QUICKSTART_LOG") or Path(given).with_suffix(".log"))
        assert (Path(given) / "summary.json").is_file(), f"{given}: no summary.json"
        return Path(given), subprocess.CompletedProcess(["pf-ray", "quickstart"], 0,
                                                         log.read_text(), "")
    workdir = tmp_path_factory.mktemp("quickstart") / "qs"
    workdir.mkdir()
    (workdir / "summary.json").write_text(json.dumps({"stale": True, "wall_s": -1}))
    env = {**os.environ, "RAY_ADDRESS": ray_session, "RAY_AUTH_MODE": "disabled"}
    out = subprocess.run([sys.executable, "-m", "pf_ray.cli", "quickstart", "--workdir",
                          str(workdir), "--no-progress"], env=env, capture_output=True,
                         text=True, timeout=2400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return workdir, out


@pytest.fixture(scope="module")
def summary(quickstart_run: tuple[Path, Any]) -> dict[str, Any]:
    return json.loads((quickstart_run[0] / "summary.json").read_text())


def _rows(path: Path | str) -> list[dict[str, Any]]:
    return Dataset(str(path), StorageConfig()).read().to_pylist()


@pytest.mark.timeout(2500)
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
    assert 0 < summary["wall_s"] <= 2400  # a hang guard (README gives the measured time)
    for key in ("heldout_rougeL", "copy_baseline_rougeL", "untrained_rougeL", "per_family"):
        assert key in summary["rewriter"]
    assert set(summary["clever"]["heldout_accuracy"]) == {"base", "s1", "s2", "s3", "blind"}
    assert summary["heldout"]["split"] == "test" and summary["heldout"]["seed"] == 1
    for key in ("rewriter_pairs", "vqa_questions"):
        assert summary["heldout"][key]["used"] > 0, key
    # the summary's table is the console's: the report renders it
    assert [list(r) for r in summary["table"]][0][0].startswith("base: image tower")
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


def _training_targets(workdir: Path) -> set[str]:
    from pf_ray.quickstart.heldout import training_targets

    return training_targets(_rows(workdir / "synthetic"), _rows(workdir / "distort"))


def test_rewriter_beats_copying_and_its_numbers_are_recomputed(quickstart_run, summary):
    from pf_ray.eval.rewriter import copy_baseline, mean_rouge, revise
    from pf_ray.model.checkpoint import load_folder_tokenizer, load_pretrained
    from pf_ray.quickstart.flow import HELDOUT_PAIRS

    workdir, _ = quickstart_run
    rw = summary["rewriter"]
    targets = _training_targets(workdir)
    candidates = _rows(workdir / "heldout" / "pairs")
    unseen = [p for p in candidates if p["original"].strip() not in targets]
    held = unseen[:HELDOUT_PAIRS]
    # held out means unseen: no target of a held-out pair is a training target
    assert summary["heldout"]["rewriter_pairs"] == {
        "candidates": len(candidates), "used": len(held),
        "removed_target_seen_in_training": len(candidates) - len(unseen)}
    assert len(candidates) > len(unseen)  # the generator's fixed texts do recur
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
    gain = rw["intervals"]["trained_minus_copy"]
    assert gain["low"] <= gain["value"] <= gain["high"] and gain["n"] == len(held)
    assert gain["value"] == pytest.approx(rw["heldout_rougeL"] - rw["copy_baseline_rougeL"],
                                          abs=1e-3)


def test_stand_in_scorers_are_trained_and_accurate(summary):
    from pf_ray.scorers.classifier import load
    from pf_ray.scorers.nli import NLI_LABELS

    for name, labels in (("nli", 3), ("reward", 1)):
        sc = summary["scorers"][name]
        assert "stand-in" in sc["kind"] and sc["steps"] > 0
        # issue 19's bar (measured 0.933 NLI, 0.996 reward; README)
        assert sc["heldout_accuracy"]["value"] >= 0.8, (name, sc)
        load(name, sc["folder"], labels, labels=NLI_LABELS if labels == 3 else None)
    assert summary["pf1m"]["scorers"]["nli"].startswith("stand-in")


def _heldout_questions(workdir: Path, summary: dict[str, Any]) -> list[Any]:
    """The held-out VQA questions whose image no stage trained on (recomputed here)."""
    from pf_ray.data.synthetic import caption_pairs
    from pf_ray.eval.vqa import questions_from_rows
    from pf_ray.model.loading import model_config
    from pf_ray.quickstart.flow import CLIP_SEED
    from pf_ray.quickstart.heldout import pixel_digest
    from pf_ray.quickstart.settings import SETTINGS

    seen = {pixel_digest(r["image_bytes"]) for r in _rows(workdir / "synthetic")
            if r["image_bytes"]}
    cfg = SETTINGS[summary["preset"]]
    size = model_config(summary["preset"]).vision.image_size  # the tower's corpus size
    seen |= {pixel_digest(p.image) for p in caption_pairs(CLIP_SEED, 0, cfg.clip_images, size)}
    questions = questions_from_rows(_rows(workdir / "heldout" / "synthetic"))
    return [q for q in questions if pixel_digest(q.image_bytes) not in seen]


def test_clever_uses_the_image_and_its_accuracy_is_recomputed(quickstart_run, summary):
    from pf_ray.eval.vqa import accuracy, answer_questions
    from pf_ray.model.checkpoint import load_folder_tokenizer, load_pretrained

    workdir, _ = quickstart_run
    cl = summary["clever"]
    acc = cl["heldout_accuracy"]
    questions = _heldout_questions(workdir, summary)
    assert cl["questions"] == len(questions) == summary["heldout"]["vqa_questions"]["used"]
    assert len(questions) >= 120
    model_dir = summary["stages"]["clever_s3"]["output"]
    model, tok = load_pretrained(model_dir), load_folder_tokenizer(model_dir)
    assert acc["s3"] == pytest.approx(accuracy(answer_questions(model, tok, questions),
                                               questions))
    assert acc["blind"] == pytest.approx(accuracy(answer_questions(model, tok, questions,
                                                                   blind=True), questions))
    for tag, iv in cl["accuracy_intervals"].items():
        assert iv["low"] <= acc[tag] <= iv["high"] and iv["n"] == len(questions), tag
    # The vision path matters, and the stages beat where they started (issue 19's bars).
    # The Clever stages are not reproducible run to run (README "Reruns"): at these
    # settings S3 - image withheld measured +0.200, +0.150, +0.119 (+0.094 with a 200-step
    # base), S3 - base +0.131, +0.081, +0.044 (paired 95% interval [-0.031, 0.119] in the
    # last: 160 questions do not separate S3 from the base every run), while the best of
    # S1-S3 beat the base by +0.131 to +0.150. After issue 21 two fresh-clone runs of one
    # commit (same rewriter, same PF-1M) gave S1 0.362 / 0.444, S2 0.388 / 0.525, S3 0.375
    # / 0.500 against the base's 0.350, S3 - withheld +0.094 / +0.219: the best stage
    # +0.038 in the first, inside the noise of 160 questions. So: S3 clearly uses the image,
    # it does not fall below the base, and some stage is above the base (by how much
    # varies run to run: README "Reruns").
    assert acc["s3"] >= acc["blind"] + 0.05, acc
    assert max(acc["s1"], acc["s2"], acc["s3"]) > acc["base"], acc
    assert acc["s3"] >= acc["base"] - 0.02, acc


def test_politeness_is_measured_stage_by_stage(summary):
    cl = summary["clever"]
    assert set(cl["median_reward"]) == {"raw", "base", "s1", "s2", "s3", "blind"}
    rates = cl["reward_win_rate"]
    assert {"s3_vs_raw", "s3_vs_s2"} <= set(rates)
    for iv in rates.values():
        assert 0 <= iv["low"] <= iv["value"] <= iv["high"] <= 1 and iv["n"] == cl["questions"]
    # the paper's headline claim, on the stand-in reward model: S3 answers beat raw ones
    assert rates["s3_vs_raw"]["value"] >= 0.6, rates


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
    before, _ = fact_recall(_rows(workdir / "pf1m" / "rewritten"))
    assert pf["fact_recall_before_filters"]["value"] == pytest.approx(before, abs=1e-4)
    # the filters do their job: the kept rewrites state the fact more often than before
    # (issue 19's bar: >= 0.8 and above the rewrites before the filters; README)
    assert pf["fact_recall"] >= 0.8 and pf["fact_recall"] > before, pf
    dropped = pf["dropped_per_filter"]
    assert sum(d["rows"] for d in dropped.values()) == pf["filter_drops"]
    assert dropped.get("filter_nli_contradiction", {}).get("rows", 0) > 0, dropped
    for reason in ("filter_nli_contradiction", "filter_nli_not_entailed"):
        if reason in dropped:  # what the NLI filter drops states the fact far less often
            assert dropped[reason]["fact_recall"] < pf["fact_recall"] - 0.3, dropped


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
        assert ev["answer_accuracy"][source]["value"] == pytest.approx(
            sum(facts) / len(facts), abs=1e-4)
        assert ev["answer_accuracy"][source]["n"] == len(facts)
        caps = [rouge_l(r["output"], r["references"]) for r in mine if r["set"] == "Captions"]
        assert ev["captions_rougeL"][source]["value"] == pytest.approx(statistics.fmean(caps),
                                                                       abs=1e-4)
    # the raw annotations are the ground truth: a ceiling, and called one
    assert ev["answer_accuracy"]["raw"]["value"] == 1.0 and "answer_accuracy.raw" in \
        ev["ceilings"]
    reward = {a: {(r["set"], r["item"]): r["reward"] for r in rows if r["answerer"] == a}
              for a in items}
    assert ev["reward_win_rate"]["clever_vs_raw"]["value"] == pytest.approx(
        pair_counts(reward["clever"], reward["raw"])["win_rate"], abs=1e-4)
    assert "stand-in" in ev["reward_model"]
    assert (workdir / "eval" / "tables.md").read_text().count("| clever |") >= 2
    assert "eval: VQA answer accuracy" in out.stdout[out.stdout.index("summary ->"):]


def test_the_report_shows_the_headline_table(quickstart_run, summary):
    workdir, _ = quickstart_run
    page = (workdir / "report.html").read_text()
    assert "Headline numbers" in page
    for measure, _value, _detail in summary["table"]:
        assert measure.strip().split(" (")[0].replace("&", "&amp;") in page, measure
