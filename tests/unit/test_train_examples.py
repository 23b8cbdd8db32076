"""Each rank builds the examples of its own rows of every global batch (train.examples).

Two ranks of one world run in-process over the same raw stream: what each decodes and
tokenises, and that the examples depend on the stream only (not on the rank, the threads or
a resume that skips global batches).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from pf_ray.data.synthetic import generate
from pf_ray.specs import StorageConfig
from pf_ray.train.data import ExampleBuilder
from pf_ray.train.examples import RankExamples

B = 3  # examples per rank per global batch
WORLD = 2
BATCHES = 4


def stream(n: int = B * WORLD * BATCHES) -> list[dict[str, Any]]:
    """Raw rows (most with an image), in stream order."""
    rows = generate(0, 0, n)
    cols = ("id", "conversations", "image", "image_bytes")
    out = [{k: rows[k][i] for k in cols} for i in range(n)]
    assert len({r["id"] for r in out}) == n
    assert sum(r["image"] is not None for r in out) > n // 2
    return out


def global_batches(rows: list[dict[str, Any]], size: int = B * WORLD) -> list[dict[str, Any]]:
    """Dicts of columns of ``size`` rows each (drop_last)."""
    return [{k: [r[k] for r in rows[i:i + size]] for k in rows[0]}
            for i in range(0, len(rows) - size + 1, size)]


class Recorded:
    """A builder whose image loads (a call per row, with or without an image) and example
    builds are recorded (row ids)."""

    def __init__(self, multiturn: bool = True, pad_square: float = 0.0):
        self.builder = ExampleBuilder("tiny", "chat", max_length=512, max_images=3,
                                      multiturn=multiturn, seed=0, storage=StorageConfig(),
                                      pool_size=64, pad_square=pad_square)
        self.decoded: list[str] = []
        self.built: list[str] = []
        images, build = self.builder._images, self.builder.build

        def recorded_images(row: dict[str, Any]) -> Any:
            self.decoded.append(row["id"])  # list.append: safe from the pool's threads
            return images(row)

        def recorded_build(row: dict[str, Any], candidates: Any) -> Any:
            self.built.append(row["id"])
            return build(row, candidates)

        self.builder._images = recorded_images  # type: ignore[method-assign]
        self.builder.build = recorded_build  # type: ignore[method-assign]

    def run(self, batches: list[Any], *, rank: int = 0, world: int = WORLD,
            batch_size: int = B, workers: int = 2, ahead: int = 2,
            skip: int = 0) -> dict[int, dict[str, list[Any]]]:
        with RankExamples(self.builder, rank=rank, world=world, batch_size=batch_size,
                          workers=workers, ahead=ahead) as examples:
            return dict(examples.epoch(batches, skip=skip))


def test_each_rank_decodes_only_its_rows() -> None:
    rows = stream()
    ranks = [Recorded(multiturn=False) for _ in range(WORLD)]
    outs = [r.run(global_batches(rows), rank=k) for k, r in enumerate(ranks)]
    assert [sorted(o) for o in outs] == [list(range(BATCHES))] * WORLD
    decoded = [set(r.decoded) for r in ranks]
    assert not decoded[0] & decoded[1]
    assert decoded[0] | decoded[1] == {r["id"] for r in rows}
    for k, r in enumerate(ranks):  # rank k: rows [k * B, (k + 1) * B) of each global batch
        mine = [rows[g * B * WORLD + k * B + i]["id"] for g in range(BATCHES) for i in range(B)]
        assert sorted(r.decoded) == sorted(mine) and sorted(r.built) == sorted(mine)
        assert all(len(out["input_ids"]) == B for out in outs[k].values())


def test_the_ranks_examples_are_those_of_the_whole_global_batch() -> None:
    """With multi-turn augmentation: each rank builds its own rows only, and side by side the
    ranks' examples are the examples one builder makes of each whole global batch."""
    rows = stream()
    table_batches = [pa.Table.from_pylist(rows[i:i + B * WORLD])  # as Ray Data gives them
                     for i in range(0, len(rows), B * WORLD)]
    ranks = [Recorded() for _ in range(WORLD)]
    outs = [r.run(table_batches, rank=k) for k, r in enumerate(ranks)]
    built = [set(r.built) for r in ranks]
    assert not built[0] & built[1] and built[0] | built[1] == {r["id"] for r in rows}
    assert len(ranks[0].built) == len(rows) // WORLD
    merged = [c for c in ranks[0].decoded if c not in built[0]]
    assert merged  # candidates of the other rank's rows, decoded as later turns
    whole = Recorded().run(global_batches(rows), world=1, batch_size=B * WORLD)
    for g in range(BATCHES):
        for column, values in whole[g].items():
            assert outs[0][g][column] + outs[1][g][column] == values, (g, column)
    assert sum(n > 1 for out in whole.values() for n in out["n_images"]) > 0  # merged images


def test_the_examples_do_not_depend_on_the_threads() -> None:
    batches = global_batches(stream())
    one = Recorded(pad_square=0.5).run(batches, rank=1, workers=1, ahead=0)
    three = Recorded(pad_square=0.5).run(batches, rank=1, workers=3, ahead=2)
    assert one == three


@pytest.mark.parametrize("multiturn", [False, True])
def test_a_resume_builds_nothing_of_the_batches_it_skips(multiturn: bool) -> None:
    rows = stream()
    skipped = {r["id"] for r in rows[:2 * B * WORLD]}
    full = Recorded(multiturn).run(global_batches(rows), rank=1)
    resumed = Recorded(multiturn)
    later = resumed.run(global_batches(rows), rank=1, skip=2)
    assert sorted(later) == [2, 3]
    assert later == {k: full[k] for k in (2, 3)}  # the same examples as without skipping
    assert not skipped & set(resumed.built)  # none of the skipped rows was built...
    if not multiturn:  # ...nor decoded (with multi-turn, later examples may merge them in)
        assert not skipped & set(resumed.decoded)


def test_each_epoch_starts_with_an_empty_pool() -> None:
    batches = global_batches(stream())
    r = Recorded()
    with RankExamples(r.builder, rank=0, world=WORLD, batch_size=B, workers=2) as examples:
        first = dict(examples.epoch(batches))
        second = dict(examples.epoch(batches))
    assert first == second


def test_a_global_batch_of_another_size_is_an_error() -> None:
    rows = stream(B * WORLD + 1)
    with pytest.raises(ValueError, match="7 rows; expected 6"):
        Recorded().run(global_batches(rows, size=B * WORLD + 1))
