"""Quickstart presets side by side: seconds per rewriter training step and held-out ROUGE-L.

    .venv/bin/python bench/bench_presets.py --workdir pf-ray-quickstart [--steps 150 40]

Reads the rewriter pairs (``distort/``) and held-out pairs (``heldout/pairs``) a quickstart
wrote, then for each preset trains the rewriter in this process (the quickstart's settings:
batch size, max length, lr, what trains, as many steps as its budget gives it) and prints
s/step and the held-out ROUGE-L of the trained model beside the copy baseline and the
untrained model. In-process, so the numbers are the model's cost, without Ray Train's
start-up (~40 s per run) or its data pipeline; the quickstart's own timings are in its
summary.json (``stages.rewriter.seconds``).
"""

from __future__ import annotations

import argparse

import torch
from trained_rewriter import fit_rewriter

from pf_ray.data.io import Dataset
from pf_ray.eval.rewriter import copy_baseline, mean_rouge, revise
from pf_ray.model.loading import build_model, model_tokenizer
from pf_ray.quickstart.flow import HELDOUT_PAIRS
from pf_ray.quickstart.settings import SETTINGS
from pf_ray.specs import StorageConfig


def bench(preset: str, steps: int, train: list[dict], held: list[dict]) -> dict[str, float]:
    model = build_model(preset)
    tok = model_tokenizer(preset, model.config)
    untrained = mean_rouge(held, revise(model, tok, held))["overall"]
    _, seconds = fit_rewriter(model, tok, train, preset=preset, steps=steps, max_images=3)
    trained = mean_rouge(held, revise(model, tok, held))["overall"]
    return {"s_per_step": seconds / steps, "trained": trained, "untrained": untrained}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="pf-ray-quickstart")
    p.add_argument("--presets", nargs="+", default=["tiny", "smol"])
    p.add_argument("--steps", nargs="+", type=int,
                   help="steps per preset (default: the quickstart's)")
    args = p.parse_args()
    torch.set_num_threads(2)
    storage = StorageConfig()
    train = Dataset(f"{args.workdir}/distort", storage).read().to_pylist()
    held = Dataset(f"{args.workdir}/heldout/pairs", storage).read().to_pylist()[:HELDOUT_PAIRS]
    copy = copy_baseline(held)["overall"]
    steps = args.steps or [SETTINGS[name].rewriter.steps for name in args.presets]
    print(f"{len(train)} training pairs, {len(held)} held-out pairs; copy baseline {copy:.3f}")
    print(f"{'preset':8s} {'steps':>5s} {'s/step':>7s} {'trained':>8s} {'copy':>6s} "
          f"{'untrained':>9s}")
    for name, n in zip(args.presets, steps, strict=True):
        r = bench(name, n, train, held)
        print(f"{name:8s} {n:5d} {r['s_per_step']:7.2f} {r['trained']:8.3f} {copy:6.3f} "
              f"{r['untrained']:9.3f}", flush=True)


if __name__ == "__main__":
    main()
