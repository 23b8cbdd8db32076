"""The training mixture: per-source targets, the epoch plan, and the paper's stage sizes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pf_ray.config import SpecError, load_spec, parse_spec
from pf_ray.data.io import Dataset
from pf_ray.data.schema import REJECT_SCHEMA, SAMPLE_SCHEMA, to_table
from pf_ray.specs import StorageConfig
from pf_ray.train.data import epoch_counts, epoch_plan, read_units, shuffle_rows, source_files
from pf_ray.train.spec import TrainSpec

JOBS = Path(__file__).resolve().parents[2] / "jobs"
COLUMNS = ["id", "conversations", "image", "image_bytes"]


def train(data: list[dict[str, Any]], **extra: Any) -> TrainSpec:
    return parse_spec({"kind": "train", "stage": "clever_s1", "model": "tiny", "data": data,
                       "storage_path": "runs", "run_name": "r", **extra})


@pytest.mark.parametrize(("data", "extra", "message"), [
    ([{"path": "a", "ratio": 1, "samples": 5}], {}, "data.0: ratio and samples: give one of"),
    ([{"path": "a", "samples": 5, "fraction": 0.5}], {}, "samples and fraction"),
    ([{"path": "a", "samples": 5}, {"path": "b", "ratio": 2}], {}, "data.1.ratio: a relative"),
    ([{"path": "a"}, {"path": "b", "fraction": 0.1}], {}, "data.0: give samples or fraction"),
    ([{"path": "a", "samples": 5}], {"samples_per_epoch": 9}, "samples_per_epoch: the data"),
    ([{"path": "a", "samples": 5}], {"sampling": "sqrt"}, "sampling: 'sqrt' weighs ratios"),
])
def test_mixing_relative_and_absolute_counts_is_an_error(data: list[dict[str, Any]],
                                                         extra: dict[str, Any],
                                                         message: str) -> None:
    with pytest.raises(SpecError) as err:
        train(data, **extra)
    assert any(message in p for p in err.value.problems), err.value.problems


def test_epoch_counts_from_targets_or_ratios() -> None:
    targets = train([{"path": "a", "samples": 700}, {"path": "b", "fraction": 0.1},
                     {"path": "c", "fraction": 2.5}])
    assert epoch_counts(targets, [1000, 975_782, 40]) == [700, 97_578, 100]
    ratios = train([{"path": "a"}, {"path": "b", "ratio": 3}], samples_per_epoch=1001)
    assert epoch_counts(ratios, [10, 10]) == [250, 751]  # shares add up to the epoch
    assert epoch_counts(train([{"path": "a"}, {"path": "b"}]), [10, 30]) == [20, 20]
    with pytest.raises(ValueError, match="data.0: a holds no committed rows"):
        epoch_counts(targets, [0, 10, 40])


def write_source(root: Path, name: str, shard_rows: list[int]) -> str:
    """A pf-ray samples dataset ``root/name`` with one shard per entry of ``shard_rows``."""
    ds = Dataset(str(root / name), StorageConfig())
    empty = to_table({c.name: [] for c in REJECT_SCHEMA}, REJECT_SCHEMA)
    start = 0
    for k, n in enumerate(shard_rows):
        ids = [f"{name}:{i}" for i in range(start, start + n)]
        rows = to_table({
            "id": ids, "source": [name] * n, "task": ["text_instruction"] * n,
            "image": [None] * n, "image_bytes": [None] * n, "boxes": [None] * n,
            "meta": ["{}"] * n,
            "conversations": [[{"role": "user", "content": f"[{i}] question"},
                               {"role": "assistant", "content": f"answer {i}"}] for i in ids],
        }, SAMPLE_SCHEMA)
        ds.write_data(f"u{k:03d}.parquet", rows, empty)
        ds.commit(f"u{k:03d}", {"files": [f"u{k:03d}.parquet"], "rows": n})
        start += n
    return str(root / name)


def read_epoch(spec: TrainSpec, seed: int | None = None) -> list[str]:
    """The ids of one epoch, in stream order (the pipeline of build_dataset, without Ray)."""
    files = [source_files(d.path, spec.storage) for d in spec.data]
    counts = epoch_counts(spec, [sum(r for _, r in f) for f in files])
    ids: list[str] = []
    for unit in epoch_plan(files, counts, spec.seed if seed is None else seed):
        batch = {"source": [unit.source], "path": [unit.path], "rows": [unit.rows],
                 "keep": [unit.keep]}
        ids += read_units(batch, columns=COLUMNS, storage=spec.storage, seed=spec.seed)["id"]
    return ids


def test_each_source_gives_exactly_its_target_per_epoch(tmp_path: Path) -> None:
    big = write_source(tmp_path, "big", [400, 400, 250])  # 1050 rows, sampled down
    small = write_source(tmp_path, "small", [30, 10])  # 40 rows, repeated 3.25 times
    tenth = write_source(tmp_path, "tenth", [500, 500])  # a tenth of 1000 rows
    spec = train([{"path": big, "samples": 300}, {"path": small, "samples": 130},
                  {"path": tenth, "fraction": 0.1}])
    ids = read_epoch(spec)
    per_source = Counter(i.split(":")[0] for i in ids)
    assert per_source == {"big": 300, "small": 130, "tenth": 100}
    copies = Counter(i for i in ids if i.startswith("small:"))
    assert set(copies.values()) == {3, 4} and len(copies) == 40  # every row, 3 or 4 times
    assert sum(v == 4 for v in copies.values()) == 10
    assert len({i for i in ids if i.startswith("big:")}) == 300  # a sample: no repeats
    big_shards = Counter(int(i.split(":")[1]) // 400 for i in ids if i.startswith("big:"))
    assert [big_shards[k] for k in range(3)] == [114, 114, 72]  # in proportion to the shards
    assert read_epoch(spec) == ids  # seeded
    assert read_epoch(spec, seed=1) != ids
    # the sources are interleaved over the epoch, each spread from start to end
    thirds = [Counter(i.split(":")[0] for i in ids[k * len(ids) // 3:(k + 1) * len(ids) // 3])
              for k in range(3)]
    assert all(set(t) == {"big", "small", "tenth"} for t in thirds), thirds


def test_shuffled_windows_mix_sources_in_every_batch(tmp_path: Path) -> None:
    a = write_source(tmp_path, "a", [200, 200])
    b = write_source(tmp_path, "b", [200, 200])
    c = write_source(tmp_path, "c", [200])
    spec = train([{"path": a, "samples": 400}, {"path": b, "samples": 400},
                  {"path": c, "samples": 200}])
    ids = read_epoch(spec)
    window = 512
    mixed: list[str] = []
    for k in range(0, len(ids), window):
        mixed += shuffle_rows({"id": ids[k:k + window]}, seed=0)["id"]
    assert sorted(mixed) == sorted(ids)
    batches = [mixed[k:k + 64] for k in range(0, len(mixed) - 63, 64)]
    assert all(len({i.split(":")[0] for i in b}) >= 2 for b in batches)


# The paper's sizes (paper.md §6, paper §4.3, Table 4, Fig. 6), per dataset path under the bucket.
PAPER_S1_TOTAL = 772_000
PAPER_S1 = {
    "pf1m/filtered": 97_000,  # "10% samples (97k) from PF-1M"
    "clean/llava_instruct": 177_000,  # "LLaVA-instruction-177k"
    "clean/sharegpt": 52_000,  # Fig. 6: ShareGPT (52k)
    "clean/oasst1": 9_000,  # Fig. 6: OASST1 (9k)
    "clean/alpaca_gpt4": 52_000,  # Fig. 6: Alpaca-GPT4 (52k)
}
# Named by the paper without a size: the releases' sizes, taken whole
RELEASES = {"clean/gpteacher": 18_194, "clean/instructionwild": 52_000}
PAPER_S2_TOTAL = 1_070_000  # Table 4


def stage_sizes(job: TrainSpec) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for d in job.data:
        assert d.samples is not None, f"{d.path}: stage sizes must be absolute"
        sizes["/".join(d.path.split("/")[-2:])] = d.samples
    return sizes


def test_train_clever_yaml_has_the_papers_mixture() -> None:
    pipeline = load_spec(JOBS / "train_clever.yaml", env={})
    jobs = {job.stage: job for job in pipeline.jobs}
    s1, s2, s3 = (stage_sizes(jobs[f"clever_s{k}"]) for k in (1, 2, 3))
    assert s1 == s3  # stage 3 revisits the stage 1 data
    assert abs(sum(s1.values()) - PAPER_S1_TOTAL) <= 0.01 * PAPER_S1_TOTAL
    for name, paper in PAPER_S1.items():
        assert abs(s1[name] - paper) <= 0.01 * paper, (name, s1[name], paper)
    assert {k: s1[k] for k in RELEASES} == RELEASES
    text_only = set(s1) - {"pf1m/filtered", "clean/llava_instruct"}
    assert text_only == {"clean/ultrachat", "clean/sharegpt", "clean/oasst1",
                         "clean/alpaca_gpt4", "clean/gpteacher", "clean/instructionwild"}
    assert abs(sum(s2.values()) - PAPER_S2_TOTAL) <= 0.01 * PAPER_S2_TOTAL
    assert set(s2) == {"pf1m/filtered"}
    steps = {k: sum(stage_sizes(j).values()) * j.epochs
             // (j.batch_size * j.grad_accum * j.scaling.num_workers) for k, j in jobs.items()}
    assert steps == {"clever_s1": 3015, "clever_s2": 3134, "clever_s3": 3015}  # batch 256/1024
