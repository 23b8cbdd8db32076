"""``<workdir>/summary.json``: every stage's output and counts, and each effect beside its
baseline; the same numbers close the console output as a table.

Keys (later stages add theirs): ``preset``, ``n``, ``wall_s``, ``stages.<name>`` (output
path, rows, rejects per reason / steps and losses), ``vision.*`` (the CLIP-pretrained image
tower: held-out retrieval@1 beside the untrained tower and chance), ``rewriter.*``
(held-out ROUGE-L of the trained rewriter, the copy baseline and the untrained model,
overall and per family),
``clever.heldout_accuracy.{base,s1,s2,s3,blind}``, ``pf1m.*`` (rows kept, rejects per
reason, fact recall), ``eval.*`` (raw vs rewriter vs Clever on the held-out set: reward
win rates and medians, answer accuracy, captions ROUGE-L), ``serve.*``. Every number is
computed by the run that writes the file, from the outputs it just wrote.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def shard_record(result: Any) -> dict[str, Any]:
    """A shard job's output folder and its totals (from the manifest it just rebuilt)."""
    totals = result.manifest["totals"]
    return {"output": result.root, "rows": totals["rows"], "rejects": totals["rejects"],
            "rejects_per_reason": totals.get("rejects_per_reason", {}),
            "seconds": round(result.seconds, 1)}


def train_record(result: Any, seconds: float) -> dict[str, Any]:
    losses = [r["loss"] for r in result.history]
    return {"output": result.export, "steps": result.steps,
            "loss_first": round(losses[0], 4) if losses else None,
            "loss_last": round(losses[-1], 4) if losses else None,
            "seconds": round(seconds, 1)}


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def table(summary: dict[str, Any]) -> str:
    """The headline numbers, each beside its baseline, as an aligned text table."""
    rows: list[tuple[str, str, str]] = []
    vi = summary.get("vision")
    if vi:
        rows.append(("base: image tower held-out retrieval@1",
                     _fmt(vi["heldout_retrieval_at_1"]),
                     f"untrained {_fmt(vi['untrained_retrieval_at_1'])}, chance "
                     f"{_fmt(vi['chance'])}"))
    rw = summary.get("rewriter")
    if rw:
        rows.append(("rewriter: held-out ROUGE-L (vs original)", _fmt(rw["heldout_rougeL"]),
                     f"copy draft {_fmt(rw['copy_baseline_rougeL'])}, "
                     f"untrained {_fmt(rw['untrained_rougeL'])}"))
        for family, scores in sorted(rw.get("per_family", {}).items()):
            rows.append((f"  family {family} ({scores['pairs']} pairs)", _fmt(scores["trained"]),
                         f"copy draft {_fmt(scores['copy'])}, "
                         f"untrained {_fmt(scores['untrained'])}"))
    pf = summary.get("pf1m")
    if pf:
        rows.append(("PF-1M: rows kept / raw rows in", f"{pf['kept']}/{pf['rows_in']}",
                     f"rewrite rejects {pf['rewrite_rejects']}, filter drops "
                     f"{pf['filter_drops']}"))
        rows.append(("PF-1M: fact recall of kept rewrites", _fmt(pf["fact_recall"]),
                     f"raw annotations {_fmt(pf.get('fact_recall_raw'))}"))
    cl = summary.get("clever")
    if cl:
        acc = cl["heldout_accuracy"]
        rows.append((f"Clever: held-out VQA accuracy ({cl['questions']} q)", _fmt(acc["s3"]),
                     f"image withheld {_fmt(acc['blind'])}, base {_fmt(acc['base'])}, "
                     f"S1 {_fmt(acc['s1'])}, S2 {_fmt(acc['s2'])}"))
    ev = summary.get("eval")
    if ev:
        acc, rouge, wins = ev["answer_accuracy"], ev["captions_rougeL"], ev["reward_win_rate"]
        rows.append((f"eval: VQA answer accuracy ({ev['sets']['VQA']['taken']} q)",
                     _fmt(acc.get("clever")),
                     f"raw annotations {_fmt(acc.get('raw'))}, rewriter "
                     f"{_fmt(acc.get('rewriter'))}"))
        rows.append(("eval: captions ROUGE-L (clever)", _fmt(rouge.get("clever")),
                     f"raw {_fmt(rouge.get('raw'))}, rewriter {_fmt(rouge.get('rewriter'))}"))
        rows.append(("eval: reward win rate clever vs raw", _fmt(wins.get("clever_vs_raw")),
                     f"rewriter vs raw {_fmt(wins.get('rewriter_vs_raw'))} (random tiny "
                     "reward model: noise)"))
    sv = summary.get("serve")
    if sv:
        rows.append(("serve: one image chat (openai client)", "ok" if sv.get("ok") else "FAILED",
                     f"first token {_fmt(sv.get('first_token_s'))} s, "
                     f"total {_fmt(sv.get('total_s'))} s"))
    wall = summary.get("wall_s")
    rows.append(("wall time (s)", "-" if wall is None else f"{wall:.0f}",
                 f"preset {summary.get('preset')}"))
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    lines = [f"{'measure'.ljust(width)}  {'value'.rjust(value_width)}  baseline / detail"]
    lines += [f"{a.ljust(width)}  {b.rjust(value_width)}  {c}" for a, b, c in rows]
    return "\n".join(lines)
