"""The eval's outputs for people: Markdown tables in the paper's layouts and PNG plots.

* Table 1 layout (paper.md §7): one row per source, one column per captioning / VQA set;
  ROUGE-L x100 for ``rouge_l`` sets, judged-correct % for ``nli`` (and ``answer_match``).
* Table 2 layout: change-captioning sets (``sts``), each cell "STS x100 / ROUGE-L" as the
  paper prints it (46.1 / .185).
* The win-rate matrix: the row source's reward win rate over the column source in %, ties
  as half a win, with the number of items compared.
* Median reward per source (Fig. 6 reports one median per dataset), overall and per set,
  sorted by the overall median.
* Plots: reward distributions per source (histograms and box plots) and the medians.
"""

from __future__ import annotations

import io
from typing import Any

from pf_ray.specs import StorageConfig
from pf_ray.storage import join, resolve, write_bytes_atomic

TABLE1 = ("rouge_l", "nli", "answer_match")


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _cell(entry: dict[str, Any] | None, metric: str) -> str:
    if not entry or entry.get("score") is None:
        return "-"
    if metric == "rouge_l":
        return f"{100 * entry['score']:.1f}"
    if metric == "sts":
        rouge = entry.get("rouge_l")
        return f"{100 * entry['score']:.1f} / " + ("-" if rouge is None else
                                                     f"{rouge:.3f}".removeprefix("0"))
    return f"{100 * entry['score']:.1f}"


def markdown(results: dict[str, Any]) -> str:
    """All tables of one eval as a Markdown document."""
    names: list[str] = results["sources"]
    sets: dict[str, Any] = results["sets"]
    under: dict[str, Any] = results.get("understanding") or {}
    md = [f"# Evaluation{': ' + results['name'] if results.get('name') else ''}", "",
          "Sets: " + ", ".join(f"{s} ({v['metric']}, {v['taken']} of {v['eligible']} rows)"
                               for s, v in sets.items()) + ".", "",
          "Answers per source: " + ", ".join(f"{a} {results['answers'].get(a, 0)}"
                                             for a in names)
          + (f"; rejects per reason: {results['rejects_per_reason']}"
             if results.get("rejects_per_reason") else "") + ".", ""]
    t1 = [s for s, v in sets.items() if v["metric"] in TABLE1]
    if t1:
        md += ["## Table 1 layout: ROUGE-L x100 (captioning) / accuracy % (VQA: NLI judge; "
               "answer_match: ground truth)", "",
               _md(["source", *[f"{s} ({sets[s]['metric']})" for s in t1]],
                   [[a, *[_cell(under.get(s, {}).get(a), sets[s]["metric"]) for s in t1]]
                    for a in names]), ""]
    t2 = [s for s, v in sets.items() if v["metric"] == "sts"]
    if t2:
        md += ["## Table 2 layout: STS x100 / ROUGE-L (change captioning)", "",
               _md(["source", *t2], [[a, *[_cell(under.get(s, {}).get(a), "sts") for s in t2]]
                                     for a in names]), ""]
    pol = results.get("politeness")
    if pol:
        matrix = pol["win_rates"]

        def rate(a: str, b: str) -> str:
            c = matrix[a][b]
            return "-" if c["win_rate"] is None else f"{100 * c['win_rate']:.1f} (n={c['n']})"

        order = [results.get("baseline") or names[0]]
        order += [a for a in names if a not in order]
        md += ["## Politeness: reward win rate, row vs column (%)", "",
               f"Reward model `{pol['model']}` on (question, answer). A win: the row's reward "
               f"is higher on the same item; a tie (|difference| <= {pol['tie_margin']}) "
               "counts as half a win (the paper does not say how it counts ties). n: items "
               "both answered.", "",
               _md(["source", *order], [[a, *["" if a == b else rate(a, b) for b in order]]
                                        for a in order]), ""]
        med = pol["medians"]
        set_names = list(sets)
        ranked = sorted(names, key=lambda a: (med[a]["all"]["median"] is None,
                                              med[a]["all"]["median"] or 0.0))
        md += ["## Median reward per source (Fig. 6 layout)", "",
               _md(["source", "median (all)", "n", *set_names],
                   [[a, _num(med[a]["all"]["median"]), str(med[a]["all"]["n"]),
                     *[_num(med[a]["sets"].get(s, {}).get("median")) for s in set_names]]
                    for a in ranked]), ""]
    if results.get("plots"):
        md += ["## Plots", ""] + [f"![{p}]({p})" for p in results["plots"]] + [""]
    return "\n".join(md)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def plots(rewards: dict[str, list[float]], medians: dict[str, float | None]
          ) -> dict[str, bytes]:
    """PNG bytes by file name: reward distributions per source, and the median rewards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [a for a in rewards if rewards[a]]
    if not names:
        return {}
    out: dict[str, bytes] = {}
    fig, (hist, box) = plt.subplots(1, 2, figsize=(10, 3.8))
    lo = min(min(v) for v in rewards.values() if v)
    hi = max(max(v) for v in rewards.values() if v)
    bins = [lo + (hi - lo) * k / 30 for k in range(31)] if hi > lo else 10
    for a in names:
        hist.hist(rewards[a], bins=bins, histtype="step", linewidth=1.5, label=a)
    hist.set_xlabel("reward")
    hist.set_ylabel("answers")
    hist.set_title("Reward distribution per source")
    hist.legend(fontsize=8)
    box.boxplot([rewards[a] for a in names], tick_labels=names, orientation="horizontal")
    box.set_xlabel("reward")
    box.set_title("Reward per source")
    out["reward_distributions.png"] = _png(fig)
    ranked = sorted((m, a) for a, m in medians.items() if m is not None)
    if ranked:
        fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(ranked) + 2), 3.5))
        ax.bar([a for _, a in ranked], [m for m, _ in ranked])
        ax.set_ylabel("median reward")
        ax.set_title("Median reward per source")
        ax.tick_params(axis="x", rotation=30)
        out["median_reward.png"] = _png(fig)
    plt.close("all")
    return out


def _png(fig: Any) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_files(root: str, storage: StorageConfig, files: dict[str, bytes]) -> list[str]:
    """Write ``files`` (name -> bytes) under ``root`` (a folder or URI); their paths."""
    fs, base = resolve(root, storage)
    paths = []
    for name, data in files.items():
        path = join(base, name)
        write_bytes_atomic(fs, path, data)
        paths.append(join(root, name))
    return paths
