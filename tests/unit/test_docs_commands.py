"""Every command in README.md and docs/*.md still runs as written, checked cheaply.

A command in a ```bash block is the first thing a newcomer copies; a renamed subcommand,
flag, spec file or key breaks it silently. Without running any job:

* ``pf-ray SUBCOMMAND ...``: the subcommand exists (``--help`` exits 0) and the whole line
  parses with pf-ray's own argument parser (in this process); each spec it names exists and
  validates with the line's overrides (placeholders such as ``n=...`` left out);
* ``python bench/x.py ...``: the script exists and ``--help`` exits 0 (all scripts in one
  child process: they set torch threads and environment variables at import);
* any other repository path on a line (``infra/rayservice.yaml``, ``scripts/setup.sh``)
  exists.

Links between the pages are checked too: each relative link's file exists, and so does the
heading its ``#anchor`` names.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pf_ray.cli import build_parser
from pf_ray.config import load_spec

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REPO_DIRS = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
SEPARATORS = {"&&", "||", "|", ";", "&", ">", ">>", "<", "(", ")"}
SPEC_COMMANDS = {"run", "validate", "submit", "serve"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Command:
    page: str
    line: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}: {self.line}"


def shell_lines(text: str) -> list[str]:
    """The lines of every ```bash block, continuation lines joined."""
    out: list[str] = []
    for lang, body in FENCE.findall(text):
        if lang not in ("bash", "sh", "shell", "console"):
            continue
        out.extend(line.strip() for line in body.replace("\\\n", " ").splitlines()
                   if line.strip())
    return out


def simple_commands(line: str) -> list[list[str]]:
    """A shell line split into simple commands (``a && b | c > f``), comments dropped,
    leading ``VAR=value`` assignments removed; ``ray job submit ... -- CMD`` yields CMD too."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    redirect = False
    for token in lexer:
        if token in SEPARATORS:
            redirect = token in (">", ">>", "<")
            commands.append([])
        elif redirect:  # the file a redirection names is not a command
            redirect = False
        else:
            commands[-1].append(token)
    out: list[list[str]] = []
    for words in commands:
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
        if words:
            out.append(words)
            if "--" in words:
                out.append(words[words.index("--") + 1:])
    return out


def commands() -> list[Command]:
    found = []
    for page in PAGES:
        for line in shell_lines(page.read_text(encoding="utf-8")):
            for argv in simple_commands(line):
                found.append(Command(page.relative_to(ROOT).as_posix(), line, tuple(argv)))
    return found


COMMANDS = commands()


def _program(argv: tuple[str, ...]) -> str:
    return Path(argv[0]).name


def _expand(token: str) -> list[str]:
    """Repository globs (``jobs/*.yaml``) as the shell expands them from the root."""
    if any(c in token for c in "*?[") and not token.startswith(("/", "$")):
        return sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob(token)) or [token]
    return [token]


def _repo_paths(argv: tuple[str, ...]) -> list[str]:
    """Tokens that name a file or folder of this repository (first part a top-level dir)."""
    out = []
    for token in argv:
        for word in re.split(r"[=,]", token):
            first = word.split("/", 1)[0]
            if "/" in word and first in REPO_DIRS and "..." not in word:
                out.append(word)
    return out


def _parse(args: list[str]) -> tuple[int | None, str]:
    """pf-ray's parser on ``args`` in this process: (exit code or None, what it printed)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            return int(exc.code or 0), buffer.getvalue()
    return None, buffer.getvalue()


def test_the_pages_have_commands_to_check() -> None:
    programs = {_program(c.argv) for c in COMMANDS}
    assert {"pf-ray", "python", "ray"} <= programs, programs
    assert sum(_program(c.argv) == "pf-ray" for c in COMMANDS) >= 20


PF_RAY = [c for c in COMMANDS if _program(c.argv) == "pf-ray"]


@pytest.mark.parametrize("command", PF_RAY, ids=str)
def test_pf_ray_command_parses_and_its_specs_validate(command: Command) -> None:
    args = [t for token in command.argv[1:] for t in _expand(token)]
    assert args, f"{command}: no subcommand"
    code, out = _parse([args[0], "--help"])
    assert code == 0, f"{command}: `pf-ray {args[0]} --help` exits {code}: {out[-300:]}"
    code, out = _parse(args)
    assert code is None, f"{command}: pf-ray's parser refuses it: {out[-300:]}"
    if args[0] not in SPEC_COMMANDS:
        return
    specs = [a for a in args[1:] if a.endswith((".yaml", ".yml")) and "=" not in a]
    overrides = [a for a in args[1:] if "=" in a and not a.startswith("-")
                 and "..." not in a and not re.search(r"=[A-Z]+$", a)]
    for spec in specs:
        path = ROOT / spec
        assert path.is_file(), f"{command}: no spec file {spec}"
        load_spec(path, overrides or None, env={})  # raises SpecError with every problem


@pytest.mark.parametrize("command", [c for c in COMMANDS if _repo_paths(c.argv)], ids=str)
def test_repository_paths_on_command_lines_exist(command: Command) -> None:
    for word in _repo_paths(command.argv):
        matches = list(ROOT.glob(word)) if any(c in word for c in "*?[") else [ROOT / word]
        assert matches and all(m.exists() for m in matches), f"{command}: no {word}"


BENCH_HELP = """
import json, runpy, sys
codes = {}
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    try:
        runpy.run_path(script, run_name="__main__")
        codes[script] = "returned without --help output"
    except SystemExit as exc:
        codes[script] = exc.code or 0
    except Exception as exc:  # an import or a parse error: the command is broken
        codes[script] = f"{type(exc).__name__}: {exc}"
print("\\n" + json.dumps(codes))
"""


def test_bench_scripts_exist_and_take_help() -> None:
    scripts = sorted({c.argv[1] for c in COMMANDS
                      if _program(c.argv).startswith("python") and len(c.argv) > 1})
    assert scripts, "no python command on the pages"
    for script in scripts:
        assert (ROOT / script).is_file(), f"python {script}: no such script"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", BENCH_HELP, *scripts], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    assert codes == dict.fromkeys(scripts, 0), codes


# --- links between the pages -----------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings (code blocks skipped)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        plain = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
        out.add(re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-"))
    return out


def test_relative_links_point_at_existing_pages_and_headings() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_shell_lines_are_split_into_the_commands_a_shell_would_run() -> None:
    line = "A=1 B=/tmp/x pf-ray submit jobs/a.yaml --follow && ray stop   # comment"
    assert simple_commands(line) == [["pf-ray", "submit", "jobs/a.yaml", "--follow"],
                                     ["ray", "stop"]]
    line = "pf-ray serve jobs/serve.yaml --print-config > cfg.yaml && serve deploy cfg.yaml"
    assert simple_commands(line) == [["pf-ray", "serve", "jobs/serve.yaml", "--print-config"],
                                     ["serve", "deploy", "cfg.yaml"]]
    line = "ray job submit --address http://h:8265 -- pf-ray run jobs/x.yaml --no-progress"
    assert simple_commands(line)[-1] == ["pf-ray", "run", "jobs/x.yaml", "--no-progress"]
    text = "```bash\npf-ray run a.yaml \\\n    n=1\n```\n```yaml\nnot: a command\n```\n"
    assert shell_lines(text) == ["pf-ray run a.yaml      n=1"]
