"""``pf-ray report PIPELINE_DIR``: report.html of a real pipeline run, read in headless
Chromium.

The small pipeline (``jobs/quickstart_pipeline.yaml``: synthetic -> distort -> tiny
rewriter -> rewrite -> filter -> eval, ~1-2 min) runs once on the session's Ray; the page is then
opened from disk in headless Chromium (``tests/chromium.py``, as ``test_serve_app``'s chat page):
it loads, the console shows no error, every image (plots and the sample's embedded PNGs)
decoded (naturalWidth > 0), and the tables show the manifests' and the eval's numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from chromium import chromium

from pf_ray.cli import main
from pf_ray.config import load_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(ray_session: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pf_ray.jobs.runner import run_job

    work = tmp_path_factory.mktemp("pipeline") / "run"
    spec = load_spec(ROOT / "jobs" / "quickstart_pipeline.yaml", env={"PF_WORKDIR": str(work)})
    spec = spec.model_copy(update={"jobs": [j.model_copy(update={
        "ray": j.ray.model_copy(update={"progress": False})}) for j in spec.jobs]})
    run_job(spec)
    return work


@pytest.fixture(scope="module")
def page(workdir: Path) -> Path:
    assert main(["report", str(workdir)]) == 0
    path = workdir / "report.html"
    assert path.is_file()
    return path


def _manifests(workdir: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.relative_to(workdir).as_posix(): json.loads(p.read_text())["totals"]
            for p in workdir.rglob("_manifest.json")}


def test_the_page_has_every_section_and_writes_its_plots(page: Path, workdir: Path) -> None:
    text = page.read_text()
    assert "could not build" not in text  # every section was built
    for heading in ("Rows and rejects per stage", "Rejects per reason", "Loss curves",
                    "Score distributions", "Evaluation", "Sample"):
        assert f">{heading}<" in text, heading
    for png in ("rows_per_stage.png", "rejects_per_reason.png", "loss_curves.png",
                "scores_pf1m_filtered.png"):
        assert (workdir / "report_files" / png).stat().st_size > 1000, png
    assert text.count("data:image/png;base64,") >= 3  # the sample's images, embedded


def test_a_folder_without_datasets_is_an_error(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "no dataset" in capsys.readouterr().err


def test_the_page_in_headless_chromium(page: Path, workdir: Path, tmp_path: Path) -> None:
    with chromium(tmp_path / "profile", args=["--allow-file-access-from-files"],
                  console_log=True) as browser:
        js = browser.js
        browser.open(page.as_uri())
        state = None
        for _ in range(100):  # until the document and every image finished loading
            state = js("return {ready: document.readyState, imgs: Array.from("
                       "document.images).map(i => ({src: i.src.slice(0, 60), complete: "
                       "i.complete, w: i.naturalWidth, cls: i.className}))};")
            if state["ready"] == "complete" and all(i["complete"] for i in state["imgs"]):
                break
            time.sleep(0.1)
        assert state and state["ready"] == "complete"
        plots = [i for i in state["imgs"] if i["cls"] == "plot"]
        samples = [i for i in state["imgs"] if i["cls"] == "sample-image"]
        assert len(plots) >= 4 and len(samples) >= 3, state["imgs"]
        assert all(i["w"] > 0 for i in state["imgs"]), [i for i in state["imgs"] if not i["w"]]
        # the console: no error (a missing image or a script error would log one)
        logs = browser.console()
        assert not [e for e in logs if e.get("level") == "SEVERE"], logs
        # the stage table shows each manifest's numbers, as a reader sees them (cell text)
        rows = js("return Array.from(document.querySelectorAll('#stages tr[data-stage]'))"
                  ".map(r => Array.from(r.cells).map(c => c.textContent));")
        shown = {r[0]: (int(r[3]), int(r[4]), int(r[2])) for r in rows}
        manifests = _manifests(workdir)
        assert set(shown) == set(manifests)
        for stage, totals in manifests.items():
            assert shown[stage] == (totals["rows"], totals["rejects"],
                                    totals["rows"] + totals["rejects"]), stage
        reasons = js("return Array.from(document.querySelectorAll('#reasons tr[data-stage]'))"
                     ".map(r => Array.from(r.cells).map(c => c.textContent));")
        expected = sorted([st, r, str(n)] for st, t in manifests.items()
                          for r, n in t["rejects_per_reason"].items())
        assert sorted(reasons) == expected
        # the loss table: the run's 8 steps; the sample: rows of the filter output
        run = js("return Array.from(document.querySelectorAll('#runs tr'))[1].cells[1]"
                 ".textContent;")
        assert run == "8"
        ids = js("return Array.from(document.querySelectorAll('#sample tr[data-id]'))"
                 ".map(r => r.dataset.id);")
        import pyarrow.parquet as pq

        kept = {i for f in (workdir / "pf1m" / "filtered" / "shards").glob("*.parquet")
                for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
        assert ids and set(ids) <= kept
        # the eval's tables: the cells of tables.md's first table, as HTML
        md = [[c.strip() for c in line.strip().strip("|").split("|")]
              for line in (workdir / "eval" / "tables.md").read_text().splitlines()
              if line.startswith("|") and not set(line) <= set("|-: ")]
        shown_eval = js("return Array.from(document.querySelector('#eval table').rows)"
                        ".map(r => Array.from(r.cells).map(c => c.textContent));")
        assert shown_eval == md[:len(shown_eval)] and len(shown_eval) >= 4  # header + 3 sources
        assert [r[0] for r in shown_eval[1:4]] == ["raw", "pf-rewrite", "rewriter"]
