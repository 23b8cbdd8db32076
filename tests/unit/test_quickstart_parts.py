"""The quickstart's measuring parts on hand-made cases: answer reading, fact recall,
rewriter baselines, the summary table, and the training options it relies on."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pf_ray.config import SpecError, parse_spec
from pf_ray.data.schema import SAMPLE_SCHEMA, to_table
from pf_ray.data.synthetic import generate
from pf_ray.eval.facts import fact_recall, states_fact
from pf_ray.eval.rewriter import copy_baseline, mean_rouge
from pf_ray.eval.vqa import Question, accuracy, is_correct, questions_from_rows, read_answer
from pf_ray.quickstart.summary import table
from pf_ray.specs import StorageConfig
from pf_ray.train.data import read_units


@pytest.mark.parametrize(("text", "qtype", "want"), [
    ("The circle in the image is red. It is a small shape.", "color", "red"),
    ("It is blue, not red.", "color", "blue"),
    ("There are three shapes in the image.", "count", "3"),
    ("I count 2 shapes.", "count", "2"),
    ("The green object is a triangle.", "shape", "triangle"),
    ("No, there is no red square.", "exists", "no"),
    ("Reddish things", "color", None),  # whole words only
    ("", "shape", None),
])
def test_read_answer_takes_the_first_answer_word(text, qtype, want):
    assert read_answer(text, qtype) == want


def test_accuracy_counts_first_mentions():
    qs = [Question("a", "What colour is the circle?", "red", "color"),
          Question("b", "How many shapes are there in the image?", "3", "count")]
    assert is_correct("The circle is red.", qs[0])
    assert accuracy(["The circle is red.", "There are two shapes."], qs) == 0.5
    assert accuracy([], []) == 0.0


def test_questions_come_from_synthetic_vqa_rows_with_their_truth():
    batch = generate(1, 0, 90)
    rows = [{k: batch[k][i] for k in batch} for i in range(90)]
    qs = questions_from_rows(rows)
    assert len(qs) == 10  # one row in nine is a vqa row
    for q in qs:
        row = next(r for r in rows if r["id"] == q.id)
        meta = json.loads(row["meta"])
        assert (q.answer, q.type) == (meta["answer"], meta["question_type"])
        assert row["conversations"][1]["content"] == q.answer  # the raw short answer
        assert q.image_bytes


def test_fact_recall_checks_vqa_classification_and_choices():
    mc = {"answer": "B", "choices": ["red", "blue", "green", "orange"]}
    rows = [
        {"task": "vqa", "meta": json.dumps({"answer": "red", "question_type": "color"}),
         "output": "The square is red."},
        {"task": "vqa", "meta": json.dumps({"answer": "2", "question_type": "count"}),
         "output": "There are three shapes."},
        {"task": "classification", "meta": json.dumps({"answer": "circle"}),
         "output": "This is a circle."},
        {"task": "multiple_choice", "meta": json.dumps(mc), "output": "The answer is blue (B)."},
        {"task": "captions", "meta": json.dumps({}), "output": "Shapes."},  # nothing to check
    ]
    assert fact_recall(rows) == (0.75, 4)
    assert states_fact("Shapes.", "captions", {}) is None
    assert fact_recall([rows[-1]]) == (None, 0)


def test_copy_baseline_and_rouge_per_family():
    pairs = [{"family": "augment", "original": "a red circle", "distorted": "a red circle"},
             {"family": "boxes", "original": "a red circle", "distorted": "blue square"}]
    copy = copy_baseline(pairs)
    assert copy == {"overall": 0.5, "augment": 1.0, "boxes": 0.0}
    assert mean_rouge(pairs, ["a red circle", "a red circle"])["boxes"] == 1.0


def test_summary_table_puts_each_number_beside_its_baseline():
    from pf_ray.quickstart.summary import interval, paired, wins

    right, blind = [1.0] * 48 + [0.0] * 32, [1.0] * 24 + [0.0] * 56
    text = table({
        "preset": "tiny", "wall_s": 600.0,
        "rewriter": {"heldout_rougeL": 0.7, "copy_baseline_rougeL": 0.5,
                     "untrained_rougeL": 0.01, "pairs": 40,
                     "per_family": {"augment": {"trained": 0.8, "copy": 0.6, "untrained": 0.0,
                                                "pairs": 40}}},
        "pf1m": {"kept": 90, "rows_in": 100, "rewrite_rejects": 2, "filter_drops": 8,
                 "fact_recall": 0.9, "fact_recall_interval": interval([1.0] * 9 + [0.0]),
                 "fact_recall_before_filters": interval([1.0] * 6 + [0.0] * 4),
                 "fact_recall_raw_ceiling": 1.0},
        "clever": {"questions": 80, "heldout_accuracy": {"base": 0.0, "s1": 0.3, "s2": 0.5,
                                                         "s3": 0.6, "blind": 0.3},
                   "accuracy_intervals": {"s3": interval(right)},
                   "differences": {"s3_minus_blind": paired(right, blind)},
                   "reward_win_rate": {"s3_vs_raw": wins([2.0] * 80, [1.0] * 80)}}})
    line = next(x for x in text.splitlines() if x.startswith("rewriter"))
    assert "0.700" in line and "copy draft 0.500" in line and "untrained 0.010" in line
    line = next(x for x in text.splitlines() if x.startswith("Clever: held-out"))
    assert "(n=80)" in line and "0.600 [" in line and "image withheld 0.300" in line
    line = next(x for x in text.splitlines() if "S3 - image withheld" in x)
    assert "0.300 [" in line  # the paired difference, with its interval
    line = next(x for x in text.splitlines() if x.startswith("PF-1M: fact recall"))
    assert "0.900 [" in line and "before the filters 0.600 [" in line and "ceiling" in line
    line = next(x for x in text.splitlines() if "win rate S3 vs raw" in x)
    assert "1.000 [1.000, 1.000]" in line


def test_heldout_keeps_only_unseen_targets_and_images():
    from pf_ray.data.synthetic import image_png, make_scene, render
    from pf_ray.eval.vqa import Question
    from pf_ray.quickstart.heldout import (
        pixel_digest,
        training_targets,
        unseen_by_image,
        unseen_pairs,
    )

    rows = [{"conversations": [{"role": "user", "content": "q"},
                               {"role": "assistant", "content": "A triangle has three sides."}]}]
    targets = training_targets(rows, [{"original": "Seen original. "}])
    pairs = [{"original": "A triangle has three sides."}, {"original": "Seen original."},
             {"original": "Something new."}]
    kept, removed = unseen_pairs(pairs, targets)
    assert (kept, removed) == ([{"original": "Something new."}], 2)
    # the same pixels count as the same image, whatever the encoding
    seen = {pixel_digest(render(make_scene(0, 5), 64))}
    qs = [Question("a", "q", "red", "color", image_bytes=image_png(0, 5, 64)),
          Question("b", "q", "red", "color", image_bytes=image_png(1, 5, 64))]
    kept_q, removed_q = unseen_by_image(qs, seen)
    assert [q.id for q in kept_q] == ["b"] and removed_q == 1


def _train(**extra):
    return {"kind": "train", "stage": "rewriter", "model": "tiny", "data": [{"path": "x"}],
            "storage_path": "/tmp/runs", "run_name": "r", **extra}


def test_trainable_overrides_the_stage_assignment_and_names_bad_parts():
    spec = parse_spec(_train(trainable={"lm_full": True, "lm_lora": False}))
    parts = spec.trainability()
    assert parts.lm_full and parts.lm_embeddings and not parts.lm_lora
    assert parse_spec(_train()).trainability().trainable_parts == ("lm_lora", "lm_embeddings")
    with pytest.raises(SpecError, match=r"trainable.*lm_ful: unknown part.*allowed: vision"):
        parse_spec(_train(trainable={"lm_ful": True}))


def _shard(path, rows):
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    pq.write_table(to_table(cols, SAMPLE_SCHEMA), path)


def test_read_units_keeps_only_the_selected_sources(tmp_path):
    batch = generate(0, 0, 18)
    rows = [{k: batch[k][i] for k in batch} for i in range(18)]
    _shard(tmp_path / "a.parquet", rows)
    clean = [r["id"] for r in rows if r["source"] == "synthetic_llava"]
    unit = {"source": [0], "path": [str(tmp_path / "a.parquet")], "rows": [len(clean)],
            "keep": [len(clean)]}
    out = read_units(unit, columns=["id", "conversations", "image", "image_bytes"],
                     storage=StorageConfig(), seed=0, select=[["synthetic_llava"]])
    assert out["id"] == clean
    with pytest.raises(ValueError, match="rows, its dataset's marker says"):
        read_units({**unit, "rows": [18], "keep": [18]}, columns=["id"], storage=StorageConfig(),
                   seed=0, select=[["synthetic_llava"]])


def test_a_pf1m_shard_is_read_as_one_turn_conversations(tmp_path):
    table_ = pa.table({"id": ["p:1"], "source": ["vqav2"], "instruction": ["What colour?"],
                       "output": ["It is red."], "image": [None], "image_bytes": [None]})
    pq.write_table(table_, tmp_path / "pf.parquet")
    out = read_units({"source": [0], "path": [str(tmp_path / "pf.parquet")], "rows": [1],
                      "keep": [1]}, columns=["id", "conversations", "image", "image_bytes"],
                     storage=StorageConfig(), seed=0)
    assert out["conversations"] == [[{"role": "user", "content": "What colour?"},
                                     {"role": "assistant", "content": "It is red."}]]


def test_one_epoch_holds_the_stage_steps_in_the_data_proportions(tmp_path):
    """flow.one_epoch: the fractions grow by one whole factor until an epoch holds the
    stage's max_steps (5% spare), so the Ray Data pipeline starts once per stage."""
    import time

    from pf_ray.data.io import Dataset
    from pf_ray.data.schema import (
        REJECT_DETAIL,
        REJECT_REASON,
        REJECT_STAGE,
        SAMPLE_OUTPUT,
        UNIT,
        UNIT_ROWS,
        UNIT_T0,
    )
    from pf_ray.jobs.shard import write_unit
    from pf_ray.quickstart.flow import one_epoch
    from pf_ray.train.data import data_files, epoch_counts

    def dataset(name: str, n: int) -> str:  # one committed unit of n synthetic rows
        batch = dict(generate(0, 0, n))
        batch.update({UNIT: ["u0"] * n, UNIT_ROWS: [n] * n, UNIT_T0: [time.time()] * n,
                      REJECT_STAGE: [None] * n, REJECT_REASON: [None] * n,
                      REJECT_DETAIL: [None] * n})
        write_unit(batch, Dataset(str(tmp_path / name), StorageConfig()), "abc", SAMPLE_OUTPUT)
        return str(tmp_path / name)

    a, b = dataset("a", 36), dataset("b", 18)
    spec = {"kind": "train", "stage": "clever_s1", "model": "tiny", "batch_size": 4,
            "max_steps": 50, "storage_path": str(tmp_path / "runs"), "run_name": "r"}
    data = one_epoch(spec, [{"path": a}, {"path": b, "fraction": 0.5}])
    # 36 + 9 = 45 examples an epoch; 50 steps x 4 x 1.05 = 210 -> 5 times
    assert [d["fraction"] for d in data] == [5.0, 2.5]
    train = parse_spec({**spec, "data": data})
    counts = epoch_counts(train, [sum(r for _, r in f) for f in data_files(train)])
    assert counts == [180, 45] and sum(counts) >= 50 * 4
    # a stage whose data already hold its steps is left as it is
    assert one_epoch({**spec, "max_steps": 5}, [{"path": a}]) == [{"path": a, "fraction": 1.0}]
