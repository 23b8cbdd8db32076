"""``<workdir>/summary.json``: every stage's output and counts, and each effect beside its
baseline; the same numbers close the console output as a table (``table``, also in the
file, which ``report.html`` renders).

Keys (later stages add theirs): ``preset``, ``n``, ``wall_s``, ``stages.<name>`` (output
path, rows, rejects per reason / steps and losses), ``heldout.*`` (the split and its seed;
how many held-out pairs and questions were removed because a model trained on their target
or image), ``vision.*`` (the CLIP-pretrained image tower: held-out retrieval@1 beside the
untrained tower and chance), ``scorers.{nli,reward}`` (the stand-ins trained on MiniLM and
their held-out accuracy), ``rewriter.*`` (held-out ROUGE-L of the trained rewriter, the copy
baseline and the untrained model, overall and per family), ``pf1m.*`` (rows kept, rejects
per reason, fact recall before and after the filters, what each filter dropped),
``clever.*`` (per stage: held-out VQA accuracy and median reward; S3 with the images
withheld; paired differences; reward win rates), ``eval.*`` (raw vs rewriter vs Clever on
the held-out set), ``serve.*``. Scores are ``{value, low, high, n}``: a 95% bootstrap
interval over items (paired for differences and win rates). Every number is computed by
the run that writes the file, from the outputs it just wrote.
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


def interval(values: list[float], stat: str = "mean") -> dict[str, Any] | None:
    """``{value, low, high, n}``: the mean (or median) of per-item values with its 95%
    bootstrap interval over items; None for no items."""
    from pf_ray.metrics.intervals import bootstrap_mean, bootstrap_median

    if not values:
        return None
    return (bootstrap_median if stat == "median" else bootstrap_mean)(values).as_dict()


def paired(a: list[float], b: list[float]) -> dict[str, Any] | None:
    """mean(a - b) over paired items, with the paired bootstrap interval."""
    from pf_ray.metrics.intervals import paired_difference

    return paired_difference(a, b).as_dict() if a else None


def wins(a: list[float], b: list[float]) -> dict[str, Any] | None:
    """Share of paired items where a scores above b (ties half), paired bootstrap."""
    from pf_ray.metrics.intervals import win_rate

    return win_rate(a, b).as_dict() if a else None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def _iv(iv: dict[str, Any] | None) -> str:
    """``0.550 [0.438, 0.662]``; ``-`` when missing."""
    if not iv:
        return "-"
    return f"{iv['value']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"


def _n(iv: dict[str, Any] | None) -> str:
    return "-" if not iv else str(iv["n"])


def headline_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The headline numbers as (measure, value, baseline / detail); values with a 95%
    interval in brackets, n in the measure; a ceiling is called a ceiling."""
    out: list[tuple[str, str, str]] = []
    vi = summary.get("vision")
    if vi:
        out.append(("base: image tower held-out retrieval@1", _fmt(vi["heldout_retrieval_at_1"]),
                    f"untrained {_fmt(vi['untrained_retrieval_at_1'])}, chance "
                    f"{_fmt(vi['chance'])}"))
    sc = summary.get("scorers") or {}
    for name, chance in (("nli", "chance 0.333 (3 labels)"), ("reward", "chance 0.500")):
        if name in sc:
            acc = sc[name]["heldout_accuracy"]
            out.append((f"scorers: stand-in {name} held-out acc (n={_n(acc)})", _iv(acc),
                        chance))
    rw = summary.get("rewriter")
    if rw:
        iv = rw.get("intervals", {})
        out.append((f"rewriter: held-out ROUGE-L (n={rw['pairs']})",
                    _iv(iv.get("trained")) if iv else _fmt(rw["heldout_rougeL"]),
                    f"copy draft {_iv(iv.get('copy')) if iv else _fmt(rw['copy_baseline_rougeL'])}"
                    f", untrained {_fmt(rw['untrained_rougeL'])}"))
        if iv.get("trained_minus_copy"):
            out.append(("  trained - copy draft (paired)", _iv(iv["trained_minus_copy"]), "0 = no gain"))
        for family, scores in sorted(rw.get("per_family", {}).items()):
            out.append((f"  family {family} (n={scores['pairs']})", _fmt(scores["trained"]),
                        f"copy draft {_fmt(scores['copy'])}, "
                        f"untrained {_fmt(scores['untrained'])}"))
    pf = summary.get("pf1m")
    if pf:
        out.append(("PF-1M: rows kept / raw rows in", f"{pf['kept']}/{pf['rows_in']}",
                    f"rewrite rejects {pf['rewrite_rejects']}, filter drops "
                    f"{pf['filter_drops']}"))
        kept = pf.get("fact_recall_interval")
        out.append((f"PF-1M: fact recall of kept rewrites (n={_n(kept)})",
                    _iv(kept) if kept else _fmt(pf["fact_recall"]),
                    f"before the filters {_iv(pf.get('fact_recall_before_filters'))}; ceiling "
                    f"(raw annotations) {_fmt(pf.get('fact_recall_raw_ceiling'))}"))
    cl = summary.get("clever")
    if cl:
        acc, ivs = cl["heldout_accuracy"], cl.get("accuracy_intervals", {})
        out.append((f"Clever: held-out VQA accuracy S3 (n={cl['questions']})",
                    _iv(ivs.get("s3")) if ivs else _fmt(acc["s3"]),
                    f"image withheld {_fmt(acc['blind'])}, base {_fmt(acc['base'])}, "
                    f"S1 {_fmt(acc['s1'])}, S2 {_fmt(acc['s2'])}"))
        d = cl.get("differences", {})
        if d:
            out.append(("  S3 - image withheld (paired)", _iv(d.get("s3_minus_blind")),
                        "0 = the image adds nothing"))
            out.append(("  S3 - base (paired)", _iv(d.get("s3_minus_base")),
                        "0 = the stages add nothing"))
        med = cl.get("median_reward", {})
        if med:
            out.append(("Clever: median reward S3", _iv(med.get("s3")),
                        ", ".join(f"{t} {med[t]['value']:+.2f}" for t in
                                  ("raw", "base", "s1", "s2") if med.get(t))))
        wr = cl.get("reward_win_rate", {})
        if wr:
            out.append((f"Clever: reward win rate S3 vs raw (n={_n(wr.get('s3_vs_raw'))})",
                        _iv(wr.get("s3_vs_raw")),
                        f"0.5 = a tie; S3 vs S2 {_iv(wr.get('s3_vs_s2'))}"))
    ev = summary.get("eval")
    if ev:
        acc, rouge, win = ev["answer_accuracy"], ev["captions_rougeL"], ev["reward_win_rate"]

        def short(x: dict[str, Any] | None) -> str:
            return _fmt(x and x["value"])

        out.append((f"eval: VQA answer accuracy clever (n={ev['sets']['VQA']['taken']})",
                    _iv(acc.get("clever")),
                    f"rewriter {short(acc.get('rewriter'))}; ceiling (raw annotations) "
                    f"{short(acc.get('raw'))}"))
        out.append(("eval: captions ROUGE-L clever", _iv(rouge.get("clever")),
                    f"raw {short(rouge.get('raw'))}, rewriter {short(rouge.get('rewriter'))}"))
        out.append(("eval: reward win rate clever vs raw", _iv(win.get("clever_vs_raw")),
                    f"rewriter vs raw {_iv(win.get('rewriter_vs_raw'))}"))
    sv = summary.get("serve")
    if sv:
        out.append(("serve: one image chat (openai client)", "ok" if sv.get("ok") else "FAILED",
                    f"first token {_fmt(sv.get('first_token_s'))} s, "
                    f"total {_fmt(sv.get('total_s'))} s"))
    wall = summary.get("wall_s")
    out.append(("wall time (s)", "-" if wall is None else f"{wall:.0f}",
                f"preset {summary.get('preset')}"))
    return out


def table(summary: dict[str, Any]) -> str:
    """The headline numbers, each beside its baseline, as an aligned text table."""
    lines = headline_rows(summary)
    width = max(len(r[0]) for r in lines)
    value_width = max(len(r[1]) for r in lines)
    text = [f"{'measure'.ljust(width)}  {'value'.rjust(value_width)}  baseline / detail"]
    text += [f"{a.ljust(width)}  {b.rjust(value_width)}  {c}" for a, b, c in lines]
    return "\n".join(text)
