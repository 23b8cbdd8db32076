"""Training data: the epoch plan and its reads (Ray Data), and the example builder.

:func:`read_units` and :func:`shuffle_rows` run inside the Ray Data pipeline that
``train.launch.build_dataset`` assembles: it yields the epoch's raw rows in order (text,
image reference, image bytes), nothing decoded. :class:`ExampleBuilder` runs in the training
workers (``train.examples``): each rank builds the examples of its own rows only. This module
never imports Ray. An example's values (:data:`EXAMPLE_COLUMNS`):

    input_ids (list<int32>)  labels (list<int32>, -100 = no loss)
    pixels (binary: float32 (n_images, 3, H, W))  n_images (int32)
    images_unreadable (int32: the example's images that failed to load, rows merged in by
    multi-turn augmentation included; the example keeps their text)
    examples_skipped (int32, 0 or 1: 1 when the row gave no label token, having no complete
    turn, more images than ``max_images`` or its responses cut away by truncation; the
    example is then one BOS token with label -100, which the loss skips; it stays in the
    stream so that every rank can slice the global batch before building)

Epoch (:func:`epoch_counts`, :func:`epoch_plan`): dataset ``d`` gives exactly ``c_d``
examples: its ``samples``, ``round(fraction * rows)``, or its share of ``samples_per_epoch``
by ``ratio`` (``ratio * sqrt(rows)`` with ``sampling: sqrt``; largest remainders, so the
shares add up). Its rows are read ``c_d // rows`` times whole, then the remaining
``c_d mod rows`` are a seeded sample, spread over its files in proportion to their rows.
Each read is one file (:class:`ReadUnit`); the reads of all datasets are interleaved in
proportion to their counts (each dataset's reads spread evenly over the epoch), and
``shuffle_window`` consecutive rows are shuffled together (seeded), so batches mix datasets.

Multi-turn augmentation (Clever stages, paper.md §6, as the paper's code): each example is
followed by up to 32 candidates drawn at random (seeded per row) from a pool of the last
``multiturn_pool`` rows of that mixed stream (a snapshot taken after the row's global batch
joined it, so an example depends on the stream, never on who builds it or when), while the
images stay within ``max_images``; the candidate that crosses ``max_length`` is cut there and
ends the example. Only the first turn carries the system message; the loss covers every response + EOS. In training, half
of the images (seeded per row) are padded to a square with a random colour.
"""

from __future__ import annotations

import math
import posixpath
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pf_ray.data.images import ImageError, ImageLoader, row_images
from pf_ray.data.io import SHARDS, Dataset
from pf_ray.data.schema import ADDED_COLUMNS, column_type
from pf_ray.specs import StorageConfig
from pf_ray.steps.base import Batch
from pf_ray.storage import is_uri, resolve
from pf_ray.train.spec import TrainData, TrainSpec

EXAMPLE_COLUMNS = ("input_ids", "labels", "pixels", "n_images", "images_unreadable",
                   "examples_skipped")
CANDIDATES = 32  # rows tried as later turns per example (N = 32 in the paper's scripts)


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights``; the parts add up to ``total`` exactly."""
    whole = sum(weights)
    if total <= 0 or whole <= 0:
        return [0] * len(weights)
    shares = [total * w / whole for w in weights]
    parts = [math.floor(s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (parts[i] - shares[i], i))
    for i in by_remainder[:total - sum(parts)]:
        parts[i] += 1
    return parts


def mixture_counts(sizes: list[int], ratios: list[float], sampling: str,
                   total: int | None) -> list[int]:
    """Examples per dataset for one epoch from relative weights (empty datasets get none)."""
    weights = [0.0 if n == 0 else r * (math.sqrt(n) if sampling == "sqrt" else 1.0)
               for n, r in zip(sizes, ratios, strict=True)]
    return largest_remainder(sum(sizes) if total is None else total, weights)


def epoch_counts(spec: TrainSpec, sizes: list[int]) -> list[int]:
    """Examples per dataset for one epoch of ``spec`` (datasets of ``sizes`` rows)."""
    if not any(d.has_target for d in spec.data):
        return mixture_counts(sizes, [d.ratio or 1.0 for d in spec.data], spec.sampling,
                              spec.samples_per_epoch)
    for k, (d, n) in enumerate(zip(spec.data, sizes, strict=True)):
        if n == 0 and d.samples is not None:
            raise ValueError(f"data.{k}: {d.path} holds no committed rows, so it cannot give "
                             f"samples {d.samples}")
    return [d.samples if d.samples is not None else round((d.fraction or 0.0) * n)
            for d, n in zip(spec.data, sizes, strict=True)]


@dataclass(frozen=True)
class ReadUnit:
    """One read of one file in the epoch: ``keep`` of its ``rows`` (all, or a seeded sample)."""

    source: int  # index of the dataset in spec.data
    path: str
    rows: int
    keep: int


def epoch_plan(files: list[list[tuple[str, int]]], counts: list[int],
               seed: int) -> list[ReadUnit]:
    """The reads of one epoch in order: dataset ``k``'s ``(file, rows)`` give ``counts[k]``."""
    placed: list[tuple[float, int, ReadUnit]] = []
    for k, (parts, count) in enumerate(zip(files, counts, strict=True)):
        size = sum(rows for _, rows in parts)
        if size == 0 or count == 0:
            continue
        whole, extra = divmod(count, size)
        quotas = largest_remainder(extra, [float(rows) for _, rows in parts])
        units = []
        for copy in range(whole + (extra > 0)):
            order = list(range(len(parts)))
            random.Random(f"{seed}:files:{k}:{copy}").shuffle(order)  # a seeded file order
            keep = [rows if copy < whole else quotas[i] for i, (_, rows) in enumerate(parts)]
            units += [ReadUnit(k, parts[i][0], parts[i][1], keep[i]) for i in order if keep[i]]
        done = 0
        for unit in units:  # each read sits at the middle of its rows within the dataset
            placed.append(((done + unit.keep / 2) / count, k, unit))
            done += unit.keep
    return [unit for _, _, unit in sorted(placed, key=lambda x: (x[0], x[1]))]


def _read_as_samples(pq: Any, path: str, fs: Any, columns: list[str]) -> Any:
    """``columns`` of one shard file; a PF-1M shard (``pf1m`` / ``rewrite`` schema: one
    instruction and its polite ``output``) is read as a one-turn conversation, so the
    Clever stages train on what the rewrite and filter stages wrote, as they are."""
    names = pq.read_schema(path, filesystem=fs).names
    added = [c for c in columns if c in ADDED_COLUMNS and c not in names]
    if added:  # a shard written before the column existed: read it as nulls
        table = _read_as_samples(pq, path, fs, [c for c in columns if c not in added])
        for c in added:
            table = table.append_column(c, pa.nulls(table.num_rows, column_type(c)))
        return table.select(columns)
    if "conversations" not in columns or "conversations" in names:
        return pq.read_table(path, filesystem=fs, columns=columns)
    if not {"instruction", "output"} <= set(names):
        raise ValueError(f"{path}: neither a sample shard (conversations) nor a PF-1M shard "
                         f"(instruction, output); columns: {names}")
    others = [c for c in columns if c != "conversations"]
    table = pq.read_table(path, filesystem=fs, columns=[*others, "instruction", "output"])
    turns = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
             for q, a in zip(table.column("instruction").to_pylist(),
                             table.column("output").to_pylist(), strict=True)]
    conversations = pa.array(turns, type=pa.list_(pa.struct([("role", pa.string()),
                                                             ("content", pa.string())])))
    return table.select(others).append_column("conversations", conversations).select(columns)


def _selection(sources: list[str] | None, tasks: list[str] | None) -> dict[str, list[str]]:
    """The columns a dataset's rows are restricted on, and their values (none: every row)."""
    return {c: v for c, v in (("source", sources), ("task", tasks)) if v is not None}


def _keeps(table: pa.Table, selection: dict[str, list[str]]) -> Any:
    """The boolean mask of the rows of ``table`` that match every column of ``selection``."""
    import pyarrow.compute as pc

    mask = None
    for column, values in selection.items():
        hit = pc.is_in(table.column(column), value_set=pa.array(values, pa.string()))
        mask = hit if mask is None else pc.and_(mask, hit)
    return mask


def read_units(batch: Batch, *, columns: list[str], storage: StorageConfig,
               seed: int, select: list[list[str] | None] | None = None,
               select_tasks: list[list[str] | None] | None = None) -> Batch:
    """The rows each :class:`ReadUnit` of ``batch`` keeps, in file order.

    ``select[k]``: the sources dataset ``k`` is restricted to; ``select_tasks[k]``: its
    tasks (None: all its rows; with both, a row must match both).
    """
    import pyarrow.parquet as pq

    out: Batch = {c: [] for c in columns}
    for k, path, rows, keep in zip(batch["source"], batch["path"], batch["rows"],
                                   batch["keep"], strict=True):
        fs, inner = resolve(path, storage)
        selection = _selection(select[k] if select else None,
                               select_tasks[k] if select_tasks else None)
        if not selection:
            table = _read_as_samples(pq, inner, fs, columns)
        else:
            needed = columns + [c for c in selection if c not in columns]
            table = _read_as_samples(pq, inner, fs, needed)
            table = table.filter(_keeps(table, selection)).select(columns)
        if table.num_rows != rows:
            raise ValueError(f"{path}: {table.num_rows} rows, its dataset's marker says "
                             f"{rows}: was the dataset rewritten during training?")
        if keep < rows:
            rng = random.Random(f"{seed}:rows:{k}:{posixpath.basename(path)}")
            table = table.take(sorted(rng.sample(range(rows), keep)))
        for c in columns:
            out[c] += table.column(c).to_pylist()
    return out


def shuffle_rows(batch: Batch, *, seed: int) -> Batch:
    """The rows of ``batch`` in a seeded random order (seeded by the first id, too)."""
    n = len(batch["id"])
    order = list(range(n))
    random.Random(f"{seed}:shuffle:{batch['id'][0] if n else ''}:{n}").shuffle(order)
    return {k: [v[i] for i in order] for k, v in batch.items()}


def _turns_of(row: dict[str, Any], fmt: str) -> list[tuple[str, str]]:
    if fmt == "rewrite":
        return []
    convs = [t for t in row["conversations"] if t["role"] != "system"]
    turns, pending = [], None
    for t in convs:
        if t["role"] == "user":
            pending = t["content"]
        elif pending is not None:
            turns.append((pending, t["content"]))
            pending = None
    return turns


def pad_to_square(img: Any, colour: tuple[int, int, int]) -> Any:
    """``img`` (PIL) centred on a square of ``colour``."""
    from PIL import Image

    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    square = Image.new("RGB", (side, side), colour)
    square.paste(img, ((side - w) // 2, (side - h) // 2))
    return square


@dataclass
class Candidate:
    """A row that may become later turns of other examples."""

    row: dict[str, Any]
    turns: list[tuple[str, str]]
    n_images: int  # the images the row refers to
    lengths: dict[int, int] = field(default_factory=dict)  # tokens as later turns, by images


def draw(items: Sequence[Candidate], rng: random.Random, n: int) -> list[Candidate]:
    """``n`` distinct candidates of ``items`` (all of them when fewer), drawn by ``rng``."""
    return [items[i] for i in rng.sample(range(len(items)), min(n, len(items)))]


class CandidatePool:
    """The last ``size`` rows seen (a ring), the rows multi-turn candidates are drawn from."""

    def __init__(self, size: int):
        self.size, self.next = size, 0
        self.items: list[Candidate] = []

    def add(self, candidate: Candidate) -> None:
        if len(self.items) < self.size:
            self.items.append(candidate)
        else:
            self.items[self.next] = candidate
        self.next = (self.next + 1) % self.size

    def snapshot(self) -> list[Candidate]:
        """The pool as it is now, in ring order (later :meth:`add` calls leave it as is)."""
        return list(self.items)


class ExampleBuilder:
    """Rows (pairs or samples) -> tokenised examples with preprocessed images.

    :meth:`remember` adds rows to a candidate pool (text only, nothing decoded);
    :meth:`build` makes one row's example against a snapshot of that pool. ``build`` changes
    nothing shared but a candidate's memo of its own length (the same value whoever computes
    it), so threads may build examples of one snapshot at once. Calling the builder on a
    batch does both with its own pool (the whole batch first), as one stream would.
    """

    columns: tuple[str, ...] = EXAMPLE_COLUMNS  # an example's values

    def __init__(self, model: str, fmt: str, max_length: int, max_images: int,
                 multiturn: bool, seed: int, storage: StorageConfig, pool_size: int = 2048,
                 pad_square: float = 0.0, rewrite_prompt: str = "paper"):
        import open_clip

        from pf_ray.model.loading import model_config, model_tokenizer

        config = model_config(model, storage)
        self.mode = config.xattn.mask
        self.tokenizer = model_tokenizer(model, config, storage)
        self.transform = open_clip.image_transform(config.vision.image_size, is_train=False)
        self.loader = ImageLoader(storage=storage)
        self.fmt, self.max_length, self.max_images = fmt, max_length, max_images
        self.multiturn, self.seed, self.pad_square = multiturn, seed, pad_square
        self.rewrite_prompt, self.pool_size = rewrite_prompt, pool_size
        self.pool = CandidatePool(pool_size)  # the pool of __call__

    def _images(self, row: dict[str, Any]) -> tuple[list[np.ndarray], int]:
        """The row's preprocessed images (:func:`~pf_ray.data.images.row_images`: none, one,
        or several in order) and how many failed to load (see :meth:`_loaded_images`)."""
        images, failed = self._loaded_images(row)
        return [self.transform(img).numpy().astype(np.float32) for img in images], failed

    def _loaded_images(self, row: dict[str, Any]) -> tuple[list[Any], int]:
        """The row's images (PIL, in order) and how many failed to load.

        Ingest/distort already rejected broken images; one that still fails here leaves the
        example text-only (all its images: the text names them together), and is counted
        (``images_unreadable``) rather than dropped silently. With probability
        ``pad_square`` (seeded by the row id) the row's images are first padded to a square
        of a random colour, so the centre crop keeps all of them.
        """
        slots = row_images(row.get("image"), row.get("image_bytes"), row.get("extra_images"))
        if not slots:
            return [], 0
        images, failed = [], 0
        for ref, data in slots:
            try:
                images.append(self.loader.load(ref, data))
            except ImageError:
                failed += 1
        if failed:
            return [], failed
        rng = random.Random(f"{self.seed}:pad:{row['id']}")
        if rng.random() < self.pad_square:
            colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            images = [pad_to_square(img, colour) for img in images]
        return images, 0

    def remember(self, rows: Sequence[dict[str, Any]], pool: CandidatePool) -> None:
        """Add ``rows`` to ``pool`` as candidates (multi-turn chat only; text, no decoding)."""
        if not self.multiturn or self.fmt == "rewrite":
            return
        for row in rows:
            pool.add(Candidate(row, _turns_of(row, self.fmt), len(row_images(
                row.get("image"), row.get("image_bytes"), row.get("extra_images")))))

    def _unlabelled(self, unreadable: int) -> dict[str, Any]:
        """The example of a row without any label token: one BOS token, no loss."""
        from pf_ray.model.prompts import IGNORE_INDEX

        return {"input_ids": [self.tokenizer.bos_token_id], "labels": [IGNORE_INDEX],
                "pixels": b"", "n_images": 0, "images_unreadable": unreadable,
                "examples_skipped": 1}

    def build(self, row: dict[str, Any], candidates: Sequence[Candidate]) -> dict[str, Any]:
        """``row``'s example (a value per :data:`EXAMPLE_COLUMNS`); later turns (multi-turn
        chat) are drawn from ``candidates``, a pool snapshot that already holds ``row``.

        A row without a complete turn, or whose responses truncation cut away, still gives
        an example: one token, every label -100, ``examples_skipped`` 1 (the loss skips it).
        """
        from pf_ray.model.prompts import IGNORE_INDEX, Turn, encode_chat, encode_rewrite

        if self.fmt == "rewrite":
            images, unreadable = self._images(row)
            enc = encode_rewrite(self.tokenizer, row["instruction"], row["distorted"],
                                 row["original"], images=len(images), mode=self.mode,
                                 prompt_format=self.rewrite_prompt,  # type: ignore[arg-type]
                                 max_length=self.max_length)
        else:
            own = _turns_of(row, self.fmt)
            if not own:  # no complete turn: nothing to learn (its image is not decoded)
                return self._unlabelled(0)
            if len(row_images(row.get("image"), row.get("image_bytes"),
                              row.get("extra_images"))) > self.max_images:
                return self._unlabelled(0)  # more images than the stage takes
            images, unreadable = self._images(row)
            turns = [Turn(h, a, images=len(images) if k == 0 else 0)
                     for k, (h, a) in enumerate(own)]
            if self.multiturn:
                turns, images, merged_unreadable = self._augment(row, turns, images,
                                                                 candidates)
                unreadable += merged_unreadable
            enc = encode_chat(self.tokenizer, turns, self.mode, max_length=self.max_length)
        if all(label == IGNORE_INDEX for label in enc.labels):
            return self._unlabelled(unreadable)  # truncation cut every response away
        images = images[:enc.num_images]  # truncation may cut trailing images
        return {"input_ids": enc.input_ids, "labels": enc.labels,
                "pixels": np.stack(images).tobytes() if images else b"",
                "n_images": len(images), "images_unreadable": unreadable,
                "examples_skipped": 0}

    def __call__(self, batch: Batch) -> Batch:
        """The examples of ``batch``'s rows, in order (its rows join this builder's pool)."""
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["id"]))]
        self.remember(rows, self.pool)  # this batch's rows are candidates too
        candidates = self.pool.snapshot()
        return stack_examples([self.build(row, candidates) for row in rows], self.columns)

    def _estimate(self, turns: Sequence[Any], *, system: bool) -> int:
        """Tokens of ``turns`` as a chat's first turns (``system``: with the system message
        and BOS) or as later turns (neither): what multi-turn augmentation counts."""
        from pf_ray.model.prompts import encode_chat

        if system:
            return len(encode_chat(self.tokenizer, turns, self.mode).input_ids)
        return len(encode_chat(self.tokenizer, turns, self.mode, system="").input_ids) - 1

    def _augment(self, row: dict[str, Any], turns: list[Any], images: list[np.ndarray],
                 candidates: Sequence[Candidate]) -> tuple[list[Any], list[np.ndarray], int]:
        """Append candidates as later turns; also returns the unreadable images they brought.

        The candidate that reaches ``max_length`` is appended too (the encoder cuts it).
        """
        from pf_ray.model.prompts import Turn

        rng = random.Random(f"{self.seed}:{row['id']}")
        length = self._estimate(turns, system=True)
        unreadable = 0
        for cand in draw(candidates, rng, CANDIDATES):
            if length >= self.max_length:
                break
            if not cand.turns or cand.row["id"] == row["id"]:
                continue
            if len(images) + cand.n_images > self.max_images:
                break
            add, bad = self._images(cand.row)
            extra = [Turn(h, a, images=len(add) if k == 0 else 0)
                     for k, (h, a) in enumerate(cand.turns)]
            if len(add) not in cand.lengths:
                cand.lengths[len(add)] = self._estimate(extra, system=False)
            turns, images = turns + extra, images + add
            length, unreadable = length + cand.lengths[len(add)], unreadable + bad
        return turns, images, unreadable


def stack_examples(examples: Sequence[dict[str, Any]],
                   columns: Sequence[str] = EXAMPLE_COLUMNS) -> Batch:
    """Examples (one dict each) as a batch: a list per column (the builder's ``columns``)."""
    return {c: [e[c] for e in examples] for c in columns}


def _marker_rows(marker: dict[str, Any], selection: dict[str, list[str]]) -> int | None:
    """The rows of a one-file shard that ``selection`` keeps, from its marker's counts where
    they give it exactly, else None (the counts are per column, not joint: with two columns
    that both drop rows, the file must be read)."""
    total = marker["rows"]
    kept = {}
    for column, values in selection.items():
        per_value = marker.get("counts", {}).get(column)
        if per_value is None or sum(per_value.values()) != total:
            return None  # no counts of that column (or not of these rows)
        kept[column] = sum(per_value.get(v, 0) for v in values)
    if any(n == 0 for n in kept.values()):
        return 0
    dropping = [n for n in kept.values() if n != total]
    if len(dropping) > 1:
        return None
    return dropping[0] if dropping else total


def _selection_columns(path: str, fs: Any, columns: list[str]) -> pa.Table:
    """The ``source`` / ``task`` columns of one shard file (an error naming a missing one)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, filesystem=fs, columns=columns)
    except pa.ArrowInvalid:
        names = pq.read_schema(path, filesystem=fs).names
        missing = [c for c in columns if c not in names]
        if not missing:
            raise
        raise ValueError(f"{path}: no {' / '.join(missing)} column to select rows on (sources: "
                         f"the source column, tasks: the task column); columns: {names}"
                         ) from None


def source_files(root: str, storage: StorageConfig, sources: list[str] | None = None,
                 tasks: list[str] | None = None) -> list[tuple[str, int]]:
    """``(file, rows)`` of each committed shard file of a dataset (rows from its marker);
    with ``sources`` and/or ``tasks``, only the rows of those sources and tasks count (files
    without any are left out). The marker's per-column counts give a one-file shard's rows
    where they are exact; otherwise the file's ``source`` / ``task`` columns are read."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    selection = _selection(sources, tasks)
    ds = Dataset(root, storage)
    scheme = root.split("://", 1)[0] + "://" if is_uri(root) else ""
    markers = ds.committed()
    out = []
    for marker in (markers[name] for name in sorted(markers)):
        for file in marker["files"]:
            path = ds.path(SHARDS, file)
            one_file = len(marker["files"]) == 1
            rows = _marker_rows(marker, selection) if one_file else None
            if rows is None and selection:
                table = _selection_columns(path, ds.fs, list(selection))
                rows = int(pc.sum(_keeps(table, selection)).as_py() or 0)
            elif rows is None:
                rows = pq.read_metadata(path, filesystem=ds.fs).num_rows
            if rows == 0:
                continue
            out.append((scheme + path if scheme and not path.startswith(scheme) else path,
                        rows))
    return out


def _empty_selection(d: TrainData, storage: StorageConfig) -> str | None:
    """Why ``d``'s sources / tasks keep none of its rows (the field first), or None when
    the dataset has no committed rows at all (an empty dataset, not a selection)."""
    selection = _selection(d.sources, d.tasks)
    ds = Dataset(d.path, storage)
    parts = [_selection_columns(f, ds.fs, list(selection)) for f in ds.shard_files()]
    table = pa.concat_tables(parts) if parts else None
    if table is None or table.num_rows == 0:
        return None
    if d.sources is not None:
        kept = table.filter(_keeps(table, {"source": d.sources}))
        if kept.num_rows == 0:
            found = sorted(set(table.column("source").to_pylist()))
            return (f"sources: {d.sources} keeps none of the {table.num_rows} rows of "
                    f"{d.path}; its rows' sources: {found}")
        if d.tasks is None:
            return None
        found = sorted(set(kept.column("task").to_pylist()))
        return (f"tasks: {d.tasks} keeps none of the {kept.num_rows} rows of sources "
                f"{d.sources} in {d.path}; those rows' tasks: {found}")
    found = sorted(set(table.column("task").to_pylist()))
    return (f"tasks: {d.tasks} keeps none of the {table.num_rows} rows of {d.path}; its "
            f"rows' tasks: {found}")


def data_files(spec: TrainSpec) -> list[list[tuple[str, int]]]:
    """:func:`source_files` of each dataset of ``spec`` (its ``sources`` and ``tasks``).

    A selection that keeps none of a dataset's committed rows is an error naming the field
    (``data.<k>.sources`` / ``data.<k>.tasks``), what it received and what the rows hold; a
    dataset without committed rows gives no files (run_train warns).
    """
    out = []
    for k, d in enumerate(spec.data):
        files = source_files(d.path, spec.storage, d.sources, d.tasks)
        if not files and (d.sources is not None or d.tasks is not None):
            problem = _empty_selection(d, spec.storage)
            if problem is not None:
                raise ValueError(f"data.{k}.{problem}")
        out.append(files)
    return out
