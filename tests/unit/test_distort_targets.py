"""Distortion targets (exact, seeded pair counts) and one pair per assistant turn."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pf_ray.config import SpecError, load_spec, parse_spec
from pf_ray.data.conversation import (
    Located,
    candidate_turns,
    expand_turns,
    locate,
    pair_id,
    row_seed,
)
from pf_ray.data.io import Dataset
from pf_ray.data.select import SelectConfig
from pf_ray.distort.pairs import plan_pairs
from pf_ray.distort.spec import MixtureConfig
from pf_ray.distort.targets import Quota, assign, fill, pool_mask, select_key
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

JOBS = Path(__file__).parents[2] / "jobs"


def _conv(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in turns]


def test_every_turn_expands_a_conversation_into_stable_pair_ids() -> None:
    conv = _conv(("system", "Be nice."), ("user", "q1"), ("assistant", "a1"), ("user", "q2"),
                 ("assistant", "a2"))
    batch = {"id": ["s:1", "s:2"], "source": ["s", "s"],
             "conversations": [conv, _conv(("user", "only a question"))]}
    out = expand_turns(batch)
    assert out["id"] == ["s:1#t2", "s:1#t4", "s:2"] and out["turn"] == [2, 4, None]
    assert out["source"] == ["s"] * 3
    assert out["conversations"][0] == conv[:3] and out["conversations"][1] == conv
    pairs = [locate(pid, c, t, 0, 100) for pid, c, t in zip(
        out["id"], out["conversations"], out["turn"], strict=True)]
    assert [(p.instruction, p.original) for p in pairs[:2]] == [("q1", "a1"), ("q2", "a2")]
    assert pairs[2].reason == "no_assistant_turn"
    assert pair_id("llava_instruct:conversation/1#2", 3) == "llava_instruct:conversation/1#2#t3"


def test_one_turn_draws_the_turn_from_the_sample_seed() -> None:
    conv = _conv(("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"))
    drawn = Counter()
    for i in range(400):
        pair = locate(f"s:{i}", conv, None, 7, 100)
        assert isinstance(pair, Located)
        assert pair.turn == random.Random(row_seed(7, f"s:{i}")).choice([1, 3])
        drawn[pair.turn] += 1
    assert 150 < drawn[1] < 250


def test_plan_pairs_every_turn_rows_get_their_own_seed() -> None:
    conv = _conv(("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"))
    batch = expand_turns({"id": ["s:1"], "source": ["s"], "task": ["t"], "image": [None],
                          "image_bytes": [None], "extra_images": [None],
                          "conversations": [conv]})
    out = plan_pairs(batch, seed=0, mixture=MixtureConfig(), select=SelectConfig(),
                     llm_enabled=True, max_chars=100)
    assert out["turn"] == [1, 3] and out["original"] == ["a1", "a2"]
    assert out["seed"] == [row_seed(0, "s:1#t1"), row_seed(0, "s:1#t3")]
    assert out["target"] == ["mixture", "mixture"]


def _brute_force(quotas: list[Quota], cands: list[tuple[int, str, str, bool]]) -> list[str | None]:
    """Targets filled in order by sorting each pool: the definition the thresholds encode."""
    taken: dict[int, str] = {}
    for q in quotas:
        pool = sorted((key, i) for i, (key, s, t, b) in enumerate(cands)
                      if i not in taken and q.holds(s, t, b))
        for _, i in pool[:q.pairs]:
            taken[i] = q.label
    return [taken.get(i) for i in range(len(cands))]


def test_thresholds_reproduce_the_ordered_fill_row_by_row() -> None:
    rng = random.Random(0)
    cands = [(select_key(1, f"p:{i}"), rng.choice("abc"), rng.choice(("detail", "qa")),
              rng.random() < 0.5) for i in range(3000)]
    quotas = [Quota("boxes:a", "boxes", ("a",), ("detail",), 100),
              Quota("llm:a", "llm", ("a",), None, 400),
              Quota("augment:a+b", "augment", ("a", "b"), None, 700),
              Quota("llm:c:qa", "llm", ("c",), ("qa",), 0),
              Quota("llm:c", "llm", ("c",), None, 500)]
    keys = np.array([c[0] for c in cands], dtype=np.uint64)
    masks = np.array([pool_mask(quotas, s, t, b) for _, s, t, b in cands], dtype=np.uint64)
    filled = fill(quotas, keys, masks)
    got = [(q.label if q else None) for q in (assign(filled, *c) for c in cands)]
    assert got == _brute_force(quotas, cands)
    assert Counter(got) == {"boxes:a": 100, "llm:a": 400, "augment:a+b": 700, "llm:c": 500,
                            None: 3000 - 1700}
    assert [q.eligible for q in filled][:2] == [
        sum(1 for _, s, t, b in cands if s == "a" and t == "detail" and b),
        sum(1 for _, s, _, _ in cands if s == "a") - 100]
    with pytest.raises(ValueError, match=r"llm:c: 5000 pairs asked, \d+ eligible"):
        fill(quotas[:4] + [Quota("llm:c", "llm", ("c",), None, 5000)], keys, masks)


def test_targets_spec_validation() -> None:
    base = {"kind": "distort", "inputs": ["x"], "output": {"path": "y"}}
    aug = {"family": "augment", "sources": ["s"], "pairs": 3}
    spec = parse_spec({**base, "targets": [aug]})
    assert spec.pairs_per_conversation == "every_turn" and not spec.llm_reject_longer
    assert spec.targets[0].label == "augment:s"
    for bad, message in [
        ({"targets": [aug], "mixture": {"text": {"augment": 1}}}, "either mixture"),
        ({"targets": [aug, aug]}, "labels must be unique"),
        ({"targets": [{**aug, "family": "llm"}]}, "needs an engine"),
        ({"targets": [{**aug, "family": "boxes"}]}, "needs boxes_from"),
        ({"targets": [{**aug, "pairs": -1}]}, "greater than or equal"),
        ({"pairs_per_conversation": "all"}, "every_turn"),
    ]:
        with pytest.raises(SpecError, match=message):
            parse_spec({**base, **bad})


# ------------------------------------------------------------------ a whole job, in process

TARGETS = [
    {"family": "boxes", "sources": ["synthetic_llava"], "tasks": ["detail"], "pairs": 12},
    {"family": "augment", "sources": ["synthetic_llava"], "pairs": 50},
    {"family": "augment", "sources": ["synthetic_text"], "pairs": 7, "name": "text"},
]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("syn") / "synthetic")
    run_job(parse_spec({"kind": "synthetic", "n": 180, "rows_per_shard": 60,
                        "output": {"path": root}, "ray": {"progress": False}}),
            executor="local")
    return root


def _distort(synthetic: str, out: Path, **extra: object) -> tuple[list[dict], list[dict], dict]:
    spec = parse_spec({"kind": "distort", "inputs": [synthetic], "boxes_from": synthetic,
                       "output": {"path": str(out)}, "images": {"check": False},
                       "ray": {"progress": False}, **extra})
    (res,) = run_job(spec, executor="local")
    ds = Dataset(res.root, StorageConfig())
    return ds.read().to_pylist(), ds.read("rejects").to_pylist(), res.manifest


def test_a_job_with_targets_writes_exactly_the_targeted_counts(synthetic: str,
                                                               tmp_path: Path) -> None:
    rows, rejects, manifest = _distort(synthetic, tmp_path / "a", targets=TARGETS)
    per_cell = Counter((r["family"], r["source"]) for r in rows)
    assert per_cell == {("boxes", "synthetic_llava"): 12, ("augment", "synthetic_llava"): 50,
                        ("augment", "synthetic_text"): 7}
    assert all(r["task"] == "detail" for r in rows if r["family"] == "boxes")
    counts = manifest["totals"]["counts"]
    assert counts["family"] == {"boxes": 12, "augment": 57}
    assert counts["source"] == {"synthetic_llava": 62, "synthetic_text": 7}
    selection = {s["label"]: s for s in manifest["spec"]["selection"]}
    assert {k: s["pairs"] for k, s in selection.items()} == {
        "boxes:synthetic_llava:detail": 12, "augment:synthetic_llava": 50, "text": 7}
    assert selection["boxes:synthetic_llava:detail"]["eligible"] == 20  # 20 detail rows
    assert selection["text"]["eligible"] == 20
    # one pair per assistant turn (conversation rows give 2-3), each id once
    samples = Dataset(synthetic, StorageConfig()).read(columns=["source", "conversations"])
    turns = Counter()
    for source, conv in zip(*(samples.column(c).to_pylist() for c in ("source", "conversations")),
                            strict=True):
        turns[source] += len(candidate_turns(conv))
    ids = [r["id"] for r in rows] + [r["id"] for r in rejects]
    assert len(ids) == len(set(ids)) == sum(turns.values()) > 180
    assert all(i.rsplit("#t", 1)[1].isdigit() for i in ids)
    assert not [r for r in rejects if r["reason"] != "not_selected"]
    beyond = [r for r in rejects if r["detail"].startswith("beyond target")]
    assert len(beyond) == turns["synthetic_llava"] + turns["synthetic_text"] - 12 - 50 - 7
    assert {json.loads(r["row"])["source"] for r in rejects
            if r["detail"].startswith("no target")} == {"synthetic_vl"}
    # the same spec makes the same pairs; another seed other ones, in the same numbers
    again, _, _ = _distort(synthetic, tmp_path / "b", targets=TARGETS)
    assert [(r["id"], r["distorted"]) for r in again] == [(r["id"], r["distorted"]) for r in rows]
    other, _, _ = _distort(synthetic, tmp_path / "c", targets=TARGETS, seed=1)
    assert Counter((r["family"], r["source"]) for r in other) == per_cell
    assert {r["id"] for r in other} != {r["id"] for r in rows}


def test_one_turn_targets_count_samples(synthetic: str, tmp_path: Path) -> None:
    # one pair per sample: 60 LLaVA-style samples, 20 of them detailed descriptions
    targets = [TARGETS[0], {**TARGETS[1], "pairs": 48}, TARGETS[2]]
    rows, rejects, _ = _distort(synthetic, tmp_path / "a", targets=targets,
                                pairs_per_conversation="one_turn")
    assert Counter((r["family"], r["source"]) for r in rows) == {
        ("boxes", "synthetic_llava"): 12, ("augment", "synthetic_llava"): 48,
        ("augment", "synthetic_text"): 7}
    assert len(rows) + len(rejects) == 180 and not any("#t" in r["id"] for r in rows)


def test_not_selected_rejects_are_slim(synthetic: str, tmp_path: Path) -> None:
    """At paper scale most text pairs are not selected: their rejects skip the conversation
    and the image bytes (both stay in the input dataset)."""
    _, rejects, _ = _distort(synthetic, tmp_path / "a", targets=TARGETS)
    for r in rejects:
        row = json.loads(r["row"])
        assert row["conversations"] == [] and row["image_bytes"] is None
        assert row["id"] == r["id"] and row["source"] and row["task"]


# ------------------------------------------------------------------ the paper-scale spec

PAPER = {  # paper.md §1: pairs per family and (group of) sources
    ("boxes", ("llava_instruct",)): 14_000,
    ("llm", ("llava_instruct",)): 133_000,
    ("augment", ("llava_instruct",)): 77_000,
    ("llm", ("sharegpt", "ultrachat")): 76_000,
}


def test_paper_scale_targets_match_the_papers_table() -> None:
    spec = load_spec(JOBS / "distort.yaml", env={})
    assert spec.pairs_per_conversation == "every_turn" and not spec.llm_reject_longer
    sizes: Counter[tuple[str, tuple[str, ...]]] = Counter()
    for t in spec.targets:
        sizes[(t.family, tuple(sorted(t.sources)))] += t.pairs
    assert set(sizes) == set(PAPER)
    for key, paper in PAPER.items():
        assert abs(sizes[key] - paper) <= 0.01 * paper, (key, sizes[key], paper)
    boxes = next(t for t in spec.targets if t.family == "boxes")
    assert boxes.tasks == ["detail"] and spec.targets[0] is boxes  # filled first
    llava = sum(n for (_, src), n in sizes.items() if src == ("llava_instruct",))
    assert abs(llava - 224_000) <= 0.01 * 224_000  # 133k + 77k + 14k LLaVA pairs
    total = sum(sizes.values())
    assert abs(total - 300_000) <= 0.01 * 300_000
    rewriter = load_spec(JOBS / "train_rewriter.yaml", env={})
    assert rewriter.samples_per_epoch == total
