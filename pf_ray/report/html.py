"""One HTML page for a whole pipeline run: ``report.html`` in a quickstart or pipeline folder.

A pipeline writes several datasets (one ``_manifest.json`` each), training runs (their
``metrics.json`` beside the checkpoints) and, with an eval stage, ``tables.md`` /
``results.json``. A person wants one page that says what went in, what came out and what
was dropped, and shows a few real rows. Everything here is read back from those files, never
from the process that wrote them, so the page of a finished run, of a resumed one and of one
submitted to a cluster are built the same way.

Sections: the quickstart's headline numbers (``summary.json``, when present); rows and
rejects per stage and per reason (tables and a plot, from the manifests); loss curves (one
line per training run); score distributions of every filter output (kept vs dropped, as
the dataset card computes them); eval tables (the eval job's Markdown tables as HTML, its
plots); a sample of rows: image, instruction, raw annotation, rewrite and scores (images
embedded as base64 PNG). Plots are matplotlib PNGs in ``report_files/`` beside the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pf_ray.data.io import Dataset
from pf_ray.report.card import collect
from pf_ray.specs import StorageConfig

PAGE = "report.html"
FILES = "report_files"
log = logging.getLogger(__name__)
SAMPLE_ROWS = 6
SHOWN_COLUMNS = ("id", "source", "task", "instruction", "original", "output", "image_bytes",
                  "length", "rouge_score", "sts_similarity", "reward", "nli_similarity",
                  "finish_reason")
SCORE_COLUMNS = ("length", "rouge_score", "sts_similarity", "reward", "nli_similarity")
SKIP_DIRS = {"shards", "rejects", "_markers", "card", FILES, "models", "checkpoints"}
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;
padding:.25em .6em;text-align:left;vertical-align:top}td.num{text-align:right}
th{background:#f3f3f3}img.plot{max-width:100%;border:1px solid #eee;margin:.3em 0}
.sample td{max-width:330px;font-size:.9em;white-space:pre-wrap}.muted{color:#777}
.error{color:#b00}
code{background:#f6f6f6;padding:0 .2em}
"""


def find_datasets(root: Path) -> list[Path]:
    """Dataset roots under ``root`` (folders with a ``_manifest.json``), in write order."""
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        if (folder / "_manifest.json").is_file():
            found.append(folder)
        if depth == 0:
            return
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if sub.name not in SKIP_DIRS and not sub.name.startswith("."):
                walk(sub, depth - 1)

    walk(root, 4)
    return sorted(found, key=_first_run)


def _first_run(root: Path) -> float:
    manifest = _manifest(root)
    runs = manifest.get("runs") or [{}]
    return float(runs[0].get("started_at") or runs[0].get("finished_at") or 0.0) or min(
        (float(s.get("committed_at", 0)) for s in manifest.get("shards", {}).values()),
        default=0.0)


def _manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "_manifest.json").read_text())


def find_runs(root: Path) -> list[Path]:
    """Training runs under ``root``: folders holding a ``metrics.json`` list of steps."""
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        if any(part in ("shards", "rejects") for part in path.parts):
            continue
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rows, list) and rows and isinstance(rows[0], dict) and "loss" in rows[0]:
            runs.append(path.parent)
    return runs


# ------------------------------------------------------------------ small HTML helpers


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return _e(value)


def _table(header: list[str], rows: list[list[Any]], table_id: str = "",
           row_attrs: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{_num(v)}</td>' if isinstance(v, int | float) else f"<td>{_e(v)}</td>"
            for v in row)
        attrs = f" {row_attrs[i]}" if row_attrs else ""
        body.append(f"<tr{attrs}>{cells}</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><tr>{head}</tr>{''.join(body)}</table>"


def _png_data_uri(data: bytes, max_side: int = 160) -> str | None:
    """An image (any format PIL reads) as a PNG ``data:`` URI, at most ``max_side`` px."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception:  # an unreadable image: the row shows no picture
        return None
    img = img.convert("RGB")
    img.thumbnail((max_side, max_side))
    if max(img.size) < 96:  # tiny synthetic images: enlarge so a reader sees them
        scale = 96 // max(img.size) + 1
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def markdown_tables(text: str) -> str:
    """Markdown (headings, paragraphs and pipe tables, as the eval job writes) -> HTML."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, *body = rows
            out.append(_table(head, body))
            rows.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if not all(set(c) <= set(":- ") for c in cells):  # the |---| separator row
                rows.append(cells)
            continue
        flush()
        if s.startswith("#"):
            level = min(6, len(s) - len(s.lstrip("#")) + 2)
            out.append(f"<h{level}>{_e(s.lstrip('#').strip())}</h{level}>")
        elif s:
            out.append(f"<p>{_e(s)}</p>")
    flush()
    return "\n".join(out)


# ------------------------------------------------------------------ sections


class _Plots:
    """matplotlib figures saved as PNGs in ``report_files/``, shown with <img>."""

    def __init__(self, folder: Path):
        import matplotlib

        matplotlib.use("Agg")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def save(self, fig: Any, name: str, alt: str) -> str:
        import matplotlib.pyplot as plt

        fig.tight_layout()
        fig.savefig(self.folder / name, dpi=90)
        plt.close(fig)
        return f'<img class="plot" src="{FILES}/{_e(name)}" alt="{_e(alt)}">'


def _stage_rows(root: Path, datasets: list[Path]) -> list[dict[str, Any]]:
    out = []
    for ds in datasets:
        m = _manifest(ds)
        totals = m.get("totals", {})
        out.append({"stage": ds.relative_to(root).as_posix() or ".", "kind": m.get("kind", "?"),
                    "rows": int(totals.get("rows", 0)), "rejects": int(totals.get("rejects", 0)),
                    "shards": int(totals.get("shards", 0)),
                    "reasons": dict(totals.get("rejects_per_reason", {})), "path": ds})
    return out


def _stages_section(stages: list[dict[str, Any]], plots: _Plots) -> str:
    import matplotlib.pyplot as plt

    rows = [[s["stage"], s["kind"], s["rows"] + s["rejects"], s["rows"], s["rejects"], s["shards"]]
            for s in stages]
    attrs = [f'data-stage="{_e(s["stage"])}" data-rows="{s["rows"]}" '
             f'data-rejects="{s["rejects"]}"' for s in stages]
    parts = ["<h2>Rows and rejects per stage</h2>",
             "<p>From each dataset's <code>_manifest.json</code>: every row a stage read is in "
             "its output or in its <code>rejects/</code> with a reason, so out + rejects = "
             "rows in (a distort job writes a pair per assistant turn: there it counts pairs "
             "and rejected rows).</p>",
             _table(["stage (folder)", "kind", "out + rejects", "out", "rejects", "shards"], rows,
                    "stages", attrs)]
    reasons = [[s["stage"], r, n] for s in stages for r, n in sorted(s["reasons"].items())]
    if reasons:
        parts += ["<h3>Rejects per reason</h3>",
                  _table(["stage", "reason", "rows"], reasons, "reasons",
                         [f'data-stage="{_e(a)}" data-reason="{_e(b)}" data-count="{c}"'
                          for a, b, c in reasons])]
    if stages:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(stages) + 1.4))
        names = [s["stage"] for s in stages][::-1]
        ax.barh(names, [s["rows"] for s in stages][::-1], color="#4a7bd0", label="out")
        ax.barh(names, [s["rejects"] for s in stages][::-1],
                left=[s["rows"] for s in stages][::-1], color="#e39b3b", label="rejects")
        ax.set_xlabel("rows")
        ax.legend(loc="lower right")
        parts.append(plots.save(fig, "rows_per_stage.png", "rows and rejects per stage"))
    if reasons:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(reasons) + 1.4))
        labels = [f"{a}: {b}" for a, b, _ in reasons][::-1]
        ax.barh(labels, [c for *_, c in reasons][::-1], color="#c0504d")
        ax.set_xlabel("rejected rows")
        parts.append(plots.save(fig, "rejects_per_reason.png", "rejects per stage and reason"))
    return "\n".join(parts)


def _loss_section(root: Path, runs: list[Path], plots: _Plots) -> str:
    import matplotlib.pyplot as plt

    if not runs:
        return "<h2>Loss curves</h2><p class='muted'>no training run (metrics.json) here</p>"
    fig, ax = plt.subplots(figsize=(8, 3.6))
    rows = []
    for run in runs:
        steps = json.loads((run / "metrics.json").read_text())
        xs = [r.get("step", i + 1) for i, r in enumerate(steps)]
        ys = [float(r["loss"]) for r in steps]
        ax.plot(xs, ys, marker="." if len(xs) < 40 else None, label=run.name)
        rows.append([run.relative_to(root).as_posix(), len(steps), ys[0], ys[-1], min(ys)])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    return "\n".join(["<h2>Loss curves</h2>",
                      _table(["run", "steps", "first loss", "last loss", "min loss"], rows,
                             "runs"),
                      plots.save(fig, "loss_curves.png", "training loss per step")])


def _scores_section(stages: list[dict[str, Any]], plots: _Plots) -> str:
    import matplotlib.pyplot as plt

    parts = ["<h2>Score distributions</h2>"]
    filters = [s for s in stages if s["kind"] == "filter"]
    if not filters:
        return parts[0] + "<p class='muted'>no filter output here</p>"
    for s in filters:
        values = collect(Dataset(str(s["path"]), StorageConfig()))
        names = sorted(set(values["kept"]) | set(values["dropped"]))
        if not names:
            parts.append(f"<p class='muted'>{_e(s['stage'])}: no scores</p>")
            continue
        cols = min(4, len(names))
        grid = -(-len(names) // cols)
        fig, axes = plt.subplots(grid, cols, figsize=(3.0 * cols, 2.5 * grid), squeeze=False)
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        rows = []
        for ax, name in zip(axes.flat, names, strict=False):
            kept, dropped = values["kept"].get(name, []), values["dropped"].get(name, [])
            ax.hist([kept, dropped], bins=20, stacked=True, color=["#4a7bd0", "#e39b3b"],
                    label=["kept", "dropped"])
            ax.set_title(name, fontsize="small")
            ax.locator_params(axis="x", nbins=4)
            ax.tick_params(labelsize="x-small")
            rows.append([name, len(kept), len(dropped),
                         sum(kept) / len(kept) if kept else "-",
                         sum(dropped) / len(dropped) if dropped else "-"])
        axes[0][0].legend(fontsize="x-small")
        safe = s["stage"].replace("/", "_")
        parts += [f"<h3>{_e(s['stage'])}</h3>",
                  _table(["score", "kept rows", "dropped rows", "mean kept", "mean dropped"],
                         rows),
                  plots.save(fig, f"scores_{safe}.png", f"score distributions of {s['stage']}")]
    return "\n".join(parts)


def _eval_section(root: Path, stages: list[dict[str, Any]], plots: _Plots) -> str:
    parts = ["<section id='eval'><h2>Evaluation</h2>"]
    evals = [s for s in stages if s["kind"] == "eval" or (s["path"] / "tables.md").is_file()]
    if not evals:
        return parts[0] + "<p class='muted'>no eval output (tables.md) here</p></section>"
    for s in evals:
        folder: Path = s["path"]
        parts.append(f"<h3>{_e(s['stage'])}</h3>")
        tables = folder / "tables.md"
        text = tables.read_text() if tables.is_file() else ""
        if text.startswith("# "):  # its title: the stage heading above says it
            text = text.split("\n", 1)[-1]
        parts.append(markdown_tables(text) if tables.is_file() else
                     "<p class='muted'>no tables.md yet (rerun the eval job to finish it)</p>")
        for png in sorted(folder.glob("*.png")):
            target = f"eval_{s['stage'].replace('/', '_')}_{png.name}"
            (plots.folder / target).write_bytes(png.read_bytes())
            parts.append(f'<img class="plot" src="{FILES}/{_e(target)}" alt="{_e(png.name)}">')
    return "\n".join(parts) + "</section>"


def _sample_rows(ds: Path, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted((ds / "shards").glob("*.parquet")):
        names = pq.read_schema(f).names
        cols = [c for c in SHOWN_COLUMNS if c in names]
        rows += pq.read_table(f, columns=cols).slice(0, n - len(rows)).to_pylist()
        if len(rows) >= n:
            break
    return rows


def _sample_section(root: Path, stages: list[dict[str, Any]], n: int) -> str:
    """Rows of the last filter (else rewrite) output: image, instruction, raw, rewrite."""
    pick = [s for s in stages if s["kind"] == "filter" and s["rows"]] or \
        [s for s in stages if s["kind"] == "rewrite" and s["rows"]]
    if not pick:
        return "<h2>Sample</h2><p class='muted'>no rewritten rows here</p>"
    s = pick[-1]
    rows = _sample_rows(s["path"], n)
    body = []
    for r in rows:
        uri = _png_data_uri(r["image_bytes"]) if r.get("image_bytes") else None
        img = f'<img class="sample-image" src="{uri}" alt="{_e(r.get("id"))}">' if uri \
            else "<span class='muted'>(image by reference)</span>"
        scores = []
        for c in SCORE_COLUMNS:
            v = r.get(c)
            if v is not None:
                v = [round(float(x), 3) for x in v] if isinstance(v, list) else round(float(v), 3)
                scores.append(f"{c}: {v}")
        body.append(f"<tr data-id='{_e(r.get('id'))}'><td>{img}</td>"
                    f"<td>{_e(r.get('task', ''))}<br><span class='muted'>{_e(r.get('id'))}"
                    f"</span></td><td>{_e(r.get('instruction', ''))}</td>"
                    f"<td>{_e(r.get('original', ''))}</td><td>{_e(r.get('output', ''))}</td>"
                    f"<td>{_e(chr(10).join(scores))}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("image", "task / id", "instruction",
                                              "raw annotation", "rewrite", "scores"))
    return (f"<h2>Sample</h2><p>The first {len(rows)} rows of <code>{_e(s['stage'])}</code>."
            f"</p><table class='sample' id='sample'><tr>{head}</tr>{''.join(body)}</table>")


def _summary_section(root: Path) -> str:
    """The quickstart's headline table, as its ``summary.json`` records it (``table``: the
    rows the console table prints, each value beside its baseline)."""
    path = root / "summary.json"
    if not path.is_file():
        return ""
    rows = json.loads(path.read_text()).get("table") or []
    if not rows:
        return ""
    return "<h2>Headline numbers</h2>" + _table(["measure", "value", "baseline / detail"],
                                                 [list(r) for r in rows], "summary")


def _section(title: str, build: Any, *args: Any) -> str:
    """One section, or a line saying why it could not be built (the rest still renders:
    the quickstart writes this page last and must not fail on a half-written folder)."""
    try:
        return str(build(*args))
    except Exception as exc:
        log.warning("report section %r failed: %s", title, exc)
        return (f"<h2>{_e(title)}</h2><p class='error'>could not build this section: "
                f"{_e(type(exc).__name__)}: {_e(exc)}</p>")


def write_html_report(root: str | Path, out: str | Path | None = None, *,
                      sample_rows: int = SAMPLE_ROWS) -> Path:
    """Write ``report.html`` (+ ``report_files/*.png``) for a pipeline or quickstart folder.

    ``root`` is a local folder holding the pipeline's datasets (any depth up to 4) and
    training runs; ``out`` (default ``root``) gets the page. Returns the page's path.
    Raises ``FileNotFoundError`` when ``root`` holds no dataset and no training run.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    out_dir = Path(out).resolve() if out else root
    datasets, runs = find_datasets(root), find_runs(root)
    if not datasets and not runs:
        raise FileNotFoundError(f"{root}: no dataset (_manifest.json) or training run "
                                "(metrics.json) below it: is it a pipeline's folder?")
    plots = _Plots(out_dir / FILES)
    stages = _stage_rows(root, datasets)
    body = [f"<h1>pf-ray report</h1><p class='muted'>{_e(root)} &middot; written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC</p>",
            _section("Headline numbers", _summary_section, root),
            _section("Rows and rejects per stage", _stages_section, stages, plots),
            _section("Loss curves", _loss_section, root, runs, plots),
            _section("Score distributions", _scores_section, stages, plots),
            _section("Evaluation", _eval_section, root, stages, plots),
            _section("Sample", _sample_section, root, stages, sample_rows)]
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>pf-ray report: {_e(root.name)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>")
    path = out_dir / PAGE
    tmp = path.with_name(PAGE + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
