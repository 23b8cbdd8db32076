"""One replica's batched generator: ``@serve.batch`` over an async generator.

Every request of a replica, streaming or not, calls :meth:`Batcher.generate_batch` with its
:class:`~pf_ray.serve.prepare.Job`. Serve gathers up to ``max_batch_size`` calls that
arrive within ``batch_wait_timeout_s`` and runs the method once for the list; the batch
decodes in one worker thread (:meth:`pf_ray.serve.engine.Engine.run`), and after every
decoding step that brings news (a streamed text delta, a finished request) the generator
yields one :class:`Update` per request. Serve hands each caller its own updates, so a
streaming request forwards them as they come and a non-streaming one keeps the last: both
kinds share batches. A request arriving mid-decode waits for the next batch.

A batch that fails before its first token is retried one request at a time, so the request
that breaks the model fails alone (its update carries ``error``) and the others are
answered. This class needs no Serve replica (it is tested in plain asyncio).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ray import serve

from pf_ray.serve.api import FINISH_REASONS
from pf_ray.serve.engine import Engine, TextStream, completion_tokens
from pf_ray.serve.prepare import Job

log = logging.getLogger("ray.serve")

# The decoding thread runs Python between torch ops and holds the GIL meanwhile; at the
# default 5 ms switch interval the event loop (taking in requests, streaming) then waits up
# to 5 ms at every await that releases the GIL. A shorter interval keeps it responsive.
SWITCH_INTERVAL_S = 0.0005


@dataclass
class Update:
    """What one decoding step brought one request."""

    delta: str = ""
    finish_reason: str | None = None  # OpenAI's: "stop" | "length"
    completion_tokens: int = 0
    error: str | None = None  # the request id, when generation failed for it


EMPTY = Update()


class Batcher:
    def __init__(self, engine: Engine, max_batch_size: int,
                 batch_wait_timeout_s: float) -> None:
        self.engine = engine
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.batches = self.requests = 0  # how this replica batched so far (/health)
        self.generate_batch.set_max_batch_size(max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def _decode(self, jobs: list[Job], rows: list[int],
                      n: int) -> AsyncIterator[list[Update]]:
        """Decode ``jobs[rows]`` together; yield an ``n``-wide update list per step."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        streams = [TextStream(self.engine.tokenizer, jobs[r].config.stop_strings,
                              incremental=jobs[r].stream) for r in rows]
        counts = [0] * len(rows)

        def on_step(events: list[Any]) -> None:  # in the decoding thread
            loop.call_soon_threadsafe(queue.put_nowait, events)

        future = loop.run_in_executor(self.pool, self.engine.run, [jobs[r] for r in rows],
                                      on_step)
        future.add_done_callback(lambda _: queue.put_nowait(None))
        while (events := await queue.get()) is not None:
            out = [EMPTY] * n
            for item, token, reason in events:
                counts[item] += token is not None
                delta = streams[item].feed(token, last=reason is not None)
                if reason is not None:
                    out[rows[item]] = Update(delta, FINISH_REASONS[reason],
                                             completion_tokens(counts[item], reason))
                elif delta:
                    out[rows[item]] = Update(delta)
            if any(u is not EMPTY for u in out):  # a step with news for someone
                yield out
        future.result()  # raises the generation error, if any

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05)
    async def generate_batch(self, jobs: list[Job]) -> AsyncIterator[list[Update]]:
        n = len(jobs)
        self.batches += 1
        self.requests += n
        finished = [False] * n
        started = False
        try:
            async for out in self._decode(jobs, list(range(n)), n):
                started = True
                for i, u in enumerate(out):
                    finished[i] |= u.finish_reason is not None
                yield out
            return
        except Exception:
            if started or n == 1:
                log.exception("generation failed for %s", [j.rid for j in jobs])
                yield [EMPTY if finished[i] else Update(error=jobs[i].rid) for i in range(n)]
                return
            log.warning("a batch of %d failed before its first token: retrying one by one", n)
        for i in range(n):  # isolate the request that breaks the model
            try:
                async for out in self._decode(jobs, [i], n):
                    yield out
            except Exception:
                log.exception("generation failed for %s", jobs[i].rid)
                out = [EMPTY] * n
                out[i] = Update(error=jobs[i].rid)
                yield out
