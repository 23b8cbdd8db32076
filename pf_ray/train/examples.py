"""Each training rank's examples, built from the raw rows of the global batches.

Every rank iterates the same ordered stream of raw rows (``train.launch.build_dataset``)
in global batches of ``batch_size * world`` rows. For each global batch, in order, a rank

1. adds every row of it to its multi-turn candidate pool (text only, nothing decoded), the
   same pool on every rank;
2. takes a snapshot of the pool and builds the examples of its own rows only, rows
   ``[rank * batch_size, (rank + 1) * batch_size)``: multi-turn augmentation, image decoding
   (the candidates merged in as later turns too), pad-to-square, transform, tokenisation.

So the examples of global batch ``k`` depend on the stream up to ``k`` and not on the rank,
the world size (beyond which rows are whose) or timing: the ranks' examples together are
the examples one builder would make of the whole global batch. Building runs in a pool of
``data_workers`` threads (one task per example) while the GPU steps run, at most
:data:`AHEAD` global batches ahead of the one being trained on; each global batch builds
against its own snapshot, so the results are the same for any number of threads.

Every row gives an example (a row without a label token gives one the loss skips), so a
global batch is always ``batch_size`` examples per rank. A resumed run skips the global
batches already trained on by adding their rows to the pool only: nothing of them is
decoded or tokenised, and the examples after them are those of an uninterrupted run. The
pool starts empty each epoch (as the stream does).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pf_ray.steps.base import Batch
from pf_ray.train.data import CandidatePool, ExampleBuilder, stack_examples
from pf_ray.train.spec import TrainSpec

AHEAD = 2  # global batches built ahead of the one being trained on


def example_builder(spec: TrainSpec) -> ExampleBuilder:
    """The example builder of ``spec``'s stage (its format, augmentations and lengths) for
    its model family (``hf_vlm``: :class:`pf_ray.train.hf_data.HFExampleBuilder`)."""
    from pf_ray.train.stages import EXAMPLE_FORMAT

    fmt = EXAMPLE_FORMAT[spec.stage]
    chat = fmt == "chat"
    builder: type[ExampleBuilder] = ExampleBuilder
    if spec.model_family == "hf_vlm":
        from pf_ray.train.hf_data import HFExampleBuilder

        builder = HFExampleBuilder
    return builder(
        spec.model, fmt, spec.max_length, spec.max_images,
        multiturn=spec.multiturn if spec.multiturn is not None else chat, seed=spec.seed,
        storage=spec.storage, pool_size=spec.multiturn_pool,
        pad_square=spec.pad_square if spec.pad_square is not None else (0.5 if chat else 0.0),
        rewrite_prompt=spec.rewrite_prompt)


def raw_rows(batch: Any) -> list[dict[str, Any]]:
    """The rows of a raw batch: a pyarrow Table or a dict of columns."""
    if hasattr(batch, "to_pylist"):
        return batch.to_pylist()
    n = len(batch["id"])
    return [{k: batch[k][i] for k in batch} for i in range(n)]


class RankExamples:
    """One rank's examples of the global batches of raw rows (module doc).

    ``rank`` of ``world`` ranks takes ``batch_size`` rows of each global batch; ``workers``
    threads build them, ``ahead`` global batches ahead at most. :meth:`close` (or a
    ``with`` block) stops the threads.
    """

    def __init__(self, builder: ExampleBuilder, *, rank: int, world: int, batch_size: int,
                 workers: int, ahead: int = AHEAD):
        if not 0 <= rank < world:
            raise ValueError(f"rank: received {rank}; allowed: 0..{world - 1} (world {world})")
        if workers < 1 or ahead < 0:
            raise ValueError(f"workers: received {workers} (allowed: >= 1), ahead: received "
                             f"{ahead} (allowed: >= 0)")
        self.builder, self.rank, self.world = builder, rank, world
        self.batch_size, self.ahead = batch_size, ahead
        self.executor = ThreadPoolExecutor(max_workers=workers,
                                           thread_name_prefix=f"examples-rank{rank}")

    def epoch(self, batches: Iterable[Any], skip: int = 0) -> Iterator[tuple[int, Batch]]:
        """``(k, examples)`` for each global batch ``k >= skip`` of one epoch's ``batches``
        (each exactly ``batch_size * world`` raw rows): this rank's examples, in row order.

        The first ``skip`` global batches only join the candidate pool.
        """
        size = self.batch_size * self.world
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        pool = CandidatePool(self.builder.pool_size)
        pending: deque[tuple[int, list[Future[dict[str, Any]]]]] = deque()
        try:
            for k, batch in enumerate(batches):
                rows = raw_rows(batch)
                if len(rows) != size:
                    raise ValueError(f"global batch {k}: {len(rows)} rows; expected "
                                     f"{size} (batch_size {self.batch_size} x world "
                                     f"{self.world}, drop_last)")
                self.builder.remember(rows, pool)
                if k < skip:
                    continue  # trained on before the checkpoint this run resumed from
                snapshot = pool.snapshot()
                pending.append((k, [self.executor.submit(self.builder.build, row, snapshot)
                                    for row in rows[mine]]))
                if len(pending) > self.ahead:
                    yield self._collect(*pending.popleft())
            while pending:
                yield self._collect(*pending.popleft())
        finally:  # stopped early (the last step, an error): drop what was not started
            for _, futures in pending:
                for f in futures:
                    f.cancel()

    def _collect(self, k: int, futures: list[Future[dict[str, Any]]]) -> tuple[int, Batch]:
        return k, stack_examples([f.result() for f in futures], self.builder.columns)

    def close(self) -> None:
        """Stop the threads (building that has not started is dropped)."""
        self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RankExamples:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
