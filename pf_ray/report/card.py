"""A dataset card for a pf-ray dataset: README.md and PNG plots (``pf-ray report``).

Read from what the job committed: the manifest (totals, rejects per reason, and for a
filter job its ``summary``: per-filter counts, rows in/kept per source and task, score
summaries), the shards (scores and lengths after filtering) and the rejects (each holds its
row as JSON with the scores computed before the drop, giving the distributions before
filtering). Plots: rows per source (in vs kept), drops per reason, output lengths and each
score before vs after filtering. matplotlib runs headless (Agg).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pf_ray.data.io import Dataset
from pf_ray.specs import StorageConfig

SCORES = ("length", "rouge_score", "sts_similarity", "paragraph_clip_scores", "reward",
          "nli_similarity")
NLI_LABELS = ("contradiction", "entailment", "neutral")
WORDS = "output_words"  # words of the output column (after paragraph filtering)
CHAIN = ("length", "change", "sts", "clip", "nli", "reward", "top_k")


def _flat(name: str, value: Any, labels: tuple[str, ...]) -> Iterator[tuple[str, float]]:
    if value is None:
        return
    if name == "nli_similarity":
        for lab, v in zip(labels, value, strict=False):
            yield f"nli_{lab}", float(v)
    elif isinstance(value, list):
        for v in value:
            yield name, float(v)
    else:
        yield name, float(value)


def collect(dataset: Dataset, labels: tuple[str, ...] = NLI_LABELS
            ) -> dict[str, dict[str, list[float]]]:
    """Score values ``{"kept": {score: [...]}, "dropped": {...}}`` and output word counts
    (``words``) from the shards and the rejects' rows."""
    out: dict[str, dict[str, list[float]]] = {"kept": {}, "dropped": {}}
    for f in dataset.shard_files():
        names = pq.read_schema(f, filesystem=dataset.fs).names
        cols = [c for c in (*SCORES, "output") if c in names]
        for row in pq.read_table(f, filesystem=dataset.fs, columns=cols).to_pylist():
            _add(out["kept"], row, labels, kept=True)
    for f in dataset.reject_files():
        for rec in pq.read_table(f, filesystem=dataset.fs, columns=["row"]).to_pylist():
            _add(out["dropped"], json.loads(rec["row"]), labels)
    return out


def _add(into: dict[str, list[float]], row: dict[str, Any], labels: tuple[str, ...],
         kept: bool = False) -> None:
    for name in SCORES:
        value = row.get(name)
        if kept and name == "paragraph_clip_scores" and value:  # the paragraphs kept
            value = kept_paragraph_scores(value, row.get("filtered_paragraphs"))
        for key, v in _flat(name, value, labels):
            into.setdefault(key, []).append(v)
    if isinstance(row.get("output"), str):
        into.setdefault(WORDS, []).append(float(len(row["output"].split())))


def kept_paragraph_scores(scores: list[float], filtered: list[dict[str, Any]] | None
                          ) -> list[float]:
    """The scores of the paragraphs a row kept (all scores minus the filtered ones)."""
    left = list(scores)
    for p in filtered or []:
        if p["score"] in left:
            left.remove(p["score"])
    return left


def _plots(manifest: dict[str, Any], values: dict[str, dict[str, list[float]]],
           out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[tuple[str, str]] = []
    summary = manifest.get("summary", {})
    totals = manifest["totals"]
    kept_src = totals.get("rows_per_source", {})
    in_src = summary.get("rows", {}).get("in", {}).get("source", kept_src)
    sources = sorted(set(in_src) | set(kept_src))
    if sources:
        fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(sources) + 2), 3.5))
        xs = range(len(sources))
        ax.bar([x - 0.2 for x in xs], [in_src.get(s, 0) for s in sources], 0.4, label="in")
        ax.bar([x + 0.2 for x in xs], [kept_src.get(s, 0) for s in sources], 0.4, label="kept")
        ax.set_xticks(list(xs), sources, rotation=30, ha="right")
        ax.set_ylabel("rows")
        ax.set_title("Rows per source")
        ax.legend()
        made.append(_save(fig, out, "rows_per_source.png", "Rows per source (in vs kept)"))
    reasons = totals.get("rejects_per_reason", {})
    if reasons:
        items = sorted(reasons.items(), key=lambda kv: -kv[1])
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(items) + 1.5))
        ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1])
        ax.set_xlabel("rows")
        ax.set_title("Drops per reason")
        made.append(_save(fig, out, "drops_per_reason.png", "Drops per reason"))
    names = [n for n in (WORDS, *sorted({k for g in values.values() for k in g} - {WORDS}))
             if values["kept"].get(n) or values["dropped"].get(n)]
    for name in names:
        kept, dropped = values["kept"].get(name, []), values["dropped"].get(name, [])
        fig, ax = plt.subplots(figsize=(5, 3.2))
        _, bins, _ = ax.hist(kept + dropped, bins=30, alpha=0.35, label="before")
        ax.hist(kept, bins=bins, histtype="step", linewidth=2, label="after")
        ax.set_title(f"{'output length (words)' if name == WORDS else name}: before vs after")
        ax.set_ylabel("rows" if name != "paragraph_clip_scores" else "paragraphs")
        ax.legend()
        file = "output_lengths.png" if name == WORDS else f"score_{name}.png"
        made.append(_save(fig, out, file, f"{name} before vs after filtering"))
    plt.close("all")
    return made


def _save(fig: Any, out: Path, name: str, caption: str) -> tuple[str, str]:
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    return name, caption


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _stats(values: list[float]) -> list[Any]:
    import numpy as np

    if not values:
        return [0, None, None, None, None]
    a = np.asarray(values)
    return [len(a), float(a.mean()), float(np.median(a)), float(a.min()), float(a.max())]


def write_card(root: str, out: str | Path, storage: StorageConfig | None = None) -> Path:
    """Write ``README.md`` and the plots of dataset ``root`` into ``out``; returns the card."""
    dataset = Dataset(root, storage or StorageConfig())
    manifest = dataset.read_manifest()
    if manifest is None:
        raise FileNotFoundError(f"{root}: no pf-ray dataset (no _manifest.json)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = tuple((manifest.get("spec", {}).get("nli") or {}).get("labels") or NLI_LABELS)
    values = collect(dataset, labels)
    plots = _plots(manifest, values, out)
    t = manifest["totals"]
    summary = manifest.get("summary", {})
    total_in = t["rows"] + t["rejects"]
    md = [f"# Dataset card: {Path(root.rstrip('/')).name}", "",
          f"`{root}`, written by a `{manifest['kind']}` job (spec hash "
          f"`{manifest['spec_hash']}`, pf-ray {manifest.get('code_version')}).", "",
          f"**{t['rows']}** rows kept of {total_in} in ({t['rejects']} dropped or rejected, "
          f"{t['rows'] / max(total_in, 1):.1%} kept), in {t['shards']} shard(s).", ""]
    rows_in = summary.get("rows", {}).get("in", {})
    rows_kept = summary.get("rows", {}).get("kept", {})
    for col in ("source", "task"):
        ins = rows_in.get(col) or {}
        kept = rows_kept.get(col) or t.get("counts", {}).get(col, {})
        if ins or kept:
            keys = sorted(set(ins) | set(kept))
            md += [f"## Rows per {col}", "", _table(
                [col, "in", "kept", "dropped", "kept %"],
                [[k, ins.get(k, ""), kept.get(k, 0),
                  ins.get(k, 0) - kept.get(k, 0) if ins else "",
                  f"{kept.get(k, 0) / ins[k]:.1%}" if ins.get(k) else ""] for k in keys]), ""]
    if t.get("rejects_per_reason"):
        md += ["## Drops per reason", "", _table(
            ["reason", "rows"], sorted(t["rejects_per_reason"].items(), key=lambda kv: -kv[1])),
            ""]
    if summary.get("filters"):
        md += ["## Filters (in the order they ran)", "", _table(
            ["filter", "scored", "dropped", "kept"],
            [[f, c.get("scored", ""), c.get("dropped", 0), c.get("kept", "")]
             for f in CHAIN if (c := summary["filters"].get(f, {})).get("scored")
             or c.get("dropped")]),
            ""]
    spec = manifest.get("spec", {})
    settings = [[f, json.dumps({k: v for k, v in spec[f].items() if k != "pool"})]
                for f in CHAIN if isinstance(spec.get(f), dict)]
    if settings:
        md += ["## Filter settings", "", _table(["filter", "settings"], settings), ""]
    names = sorted({k for g in values.values() for k in g})
    if names:
        md += ["## Scores before and after filtering", "",
               "Before: every row the filter scored (kept rows and the rows dropped at or after "
               "it); after: the kept rows (for `paragraph_clip_scores`, the kept paragraphs). "
               f"`{WORDS}`: words of the output (after paragraph filtering; `length` is "
               "counted before it).", "",
               _table(["score", "stage", "count", "mean", "p50", "min", "max"],
                      [[n, stage, *_stats(vals)] for n in names for stage, vals in (
                          ("before", values["kept"].get(n, []) + values["dropped"].get(n, [])),
                          ("after", values["kept"].get(n, [])))]), ""]
    if plots:
        md += ["## Plots", ""] + [f"![{cap}]({name})" for name, cap in plots] + [""]
    md += ["## Loading", "", "```python", "import datasets", "",
           f"ds = datasets.load_dataset(\"parquet\", data_files=\"{root}/shards/*.parquet\", "
           "split=\"train\")", "```", "",
           f"PF-1M JSON (the released layout): `pf-ray export {root} --format pf1m-json "
           "--out PF-1M.json`.", ""]
    if manifest["kind"] == "eval":  # its tables and plots (pf_ray.eval.run)
        from pf_ray.report.eval_card import eval_section

        md += eval_section(root, out, storage or StorageConfig())
    card = out / "README.md"
    card.write_text("\n".join(md), encoding="utf-8")
    return card
