"""Absolute targets: exactly ``pairs`` pairs per family and sources, seeded (paper.md §1).

Plan time (driver): one scan per input shard (on a few threads) reads the columns that
decide its pairs (id, source, task, image, conversations), keeps the usable pairs
(:func:`turns.locate`, the steps' own test) and returns each pair's selection key (a
seeded 63-bit hash of the pair id) and the targets whose pool holds it. The driver fills
the targets in order: target ``j`` takes the ``pairs`` smallest keys of its pool among the
pairs no earlier target took, which is one threshold per target. Step time: a pair is
taken by the first target whose pool holds it and whose threshold its key does not exceed
(:func:`assign`), which reproduces the driver's choice row by row with a handful of
numbers, at any scale.

Pairs that a later step rejects (a corrupt image, an LLM output that fails its checks)
are not replaced: the manifest's counts show the shortfall against ``spec.selection``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pf_ray.data.boxes import image_key
from pf_ray.data.conversation import Located, locate, read_pairs
from pf_ray.data.select import SelectConfig, selected
from pf_ray.distort.spec import DistortSpec, Target
from pf_ray.jobs.shard import Unit

SCAN_COLUMNS = ("id", "source", "task", "image", "conversations")
NONE = -1  # the threshold of a target of 0 pairs: no key is <= it


def select_key(seed: int, pid: str) -> int:
    """The pair's rank key: a 63-bit hash, independent of the pair's own RNG seed."""
    digest = hashlib.blake2b(f"select:{seed}:{pid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass(frozen=True)
class Quota:
    """A target as the steps see it: its pool and its threshold (set at plan time)."""

    label: str
    family: str
    sources: tuple[str, ...]
    tasks: tuple[str, ...] | None
    pairs: int
    threshold: int = NONE
    eligible: int = 0  # pairs of the pool that no earlier target took (plan time)

    @classmethod
    def of(cls, target: Target) -> Quota:
        return cls(target.label, target.family, tuple(target.sources),
                   tuple(target.tasks) if target.tasks is not None else None, target.pairs)

    def holds(self, source: str, task: str, has_boxes: bool) -> bool:
        return (source in self.sources and (self.tasks is None or task in self.tasks)
                and (self.family != "boxes" or has_boxes))

    def report(self) -> dict[str, Any]:
        return asdict(self)


def assign(quotas: Sequence[Quota], key: int, source: str, task: str,
           has_boxes: bool) -> Quota | None:
    """The target that takes a pair, or None (beyond every target whose pool holds it)."""
    for q in quotas:
        if q.holds(source, task, has_boxes) and key <= q.threshold:
            return q
    return None


def pool_mask(quotas: Sequence[Quota], source: str, task: str, has_boxes: bool) -> int:
    return sum(1 << j for j, q in enumerate(quotas) if q.holds(source, task, has_boxes))


def scan_unit(file: str, storage: dict[str, Any], *, seed: int, pairs: str, max_chars: int,
              select: SelectConfig, quotas: Sequence[Quota],
              box_keys: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    """(selection keys, pool masks) of the usable pairs of one input shard."""
    batch = read_pairs(file, storage, pairs, SCAN_COLUMNS)
    keys: list[int] = []
    masks: list[int] = []
    for i, pid in enumerate(batch["id"]):
        source, task = batch["source"][i], batch["task"][i]
        if not selected(select, source, task):
            continue
        pair = locate(pid, batch["conversations"][i] or [], batch["turn"][i], seed, max_chars)
        if not isinstance(pair, Located):
            continue
        has_boxes = task == "detail" and (image_key(batch["image"][i]) or "") in box_keys
        mask = pool_mask(quotas, source, task, has_boxes)
        if mask:
            keys.append(select_key(seed, pid))
            masks.append(mask)
    return np.array(keys, dtype=np.uint64), np.array(masks, dtype=np.uint64)


def fill(quotas: Sequence[Quota], keys: np.ndarray, masks: np.ndarray) -> list[Quota]:
    """The quotas with their thresholds: targets filled in order (see the module doc)."""
    taken = np.zeros(len(keys), dtype=bool)
    out, short = [], []
    for j, q in enumerate(quotas):
        in_pool = ((masks >> np.uint64(j)) & np.uint64(1)).astype(bool) & ~taken
        pool = keys[in_pool]
        if q.pairs > len(pool):
            short.append(f"{q.label}: {q.pairs} pairs asked, {len(pool)} eligible")
            out.append(q)
            continue
        threshold = NONE
        if q.pairs:
            threshold = int(np.partition(pool, q.pairs - 1)[q.pairs - 1])
            if int(np.count_nonzero(pool <= np.uint64(threshold))) != q.pairs:
                raise ValueError(f"target {q.label}: two pairs share the selection key at "
                                 "its boundary; change the job seed")
            taken |= in_pool & (keys <= np.uint64(threshold))
        out.append(Quota(q.label, q.family, q.sources, q.tasks, q.pairs, threshold, len(pool)))
    if short:
        raise ValueError("targets larger than their pools (after earlier targets took "
                         "theirs): " + "; ".join(short))
    return out


Mapper = Callable[[Callable[..., Any], list[dict[str, Any]]], list[Any]]
SCAN_THREADS = 4  # each holds one decoded shard (~300 MB for 20k long conversations)


def map_scan(fn: Callable[..., Any], calls: list[dict[str, Any]]) -> list[Any]:
    """``fn(**kwargs)`` for each call, in order, on a few threads of this process: reading
    and decoding parquet overlap, the Python part runs one at a time (about 1.5 s per
    shard of 20k four-turn conversations: a few minutes for the paper's ~110 shards).

    Plans do not use Ray (only the runner and the step adapters do); a caller with a
    cluster may pass its own mapper to :func:`plan_quotas`.
    """
    if len(calls) < 2:
        return [fn(**kw) for kw in calls]
    with ThreadPoolExecutor(max_workers=min(SCAN_THREADS, len(calls))) as pool:
        return list(pool.map(lambda kw: fn(**kw), calls))


def plan_quotas(spec: DistortSpec, units: Sequence[Unit], box_keys: frozenset[str],
                mapper: Mapper = map_scan) -> list[Quota]:
    """Scan the input shards and fill the spec's targets (see the module doc)."""
    assert spec.targets is not None
    quotas = [Quota.of(t) for t in spec.targets]
    calls = [{"file": u.params["file"], "storage": u.params["storage"], "seed": spec.seed,
              "pairs": spec.pairs_per_conversation, "max_chars": spec.max_chars,
              "select": spec.select, "quotas": quotas, "box_keys": box_keys} for u in units]
    results = mapper(scan_unit, calls)
    keys = np.concatenate([r[0] for r in results]) if results else np.zeros(0, np.uint64)
    masks = np.concatenate([r[1] for r in results]) if results else np.zeros(0, np.uint64)
    return fill(quotas, keys, masks)
