"""A change caption (two images: before, after) through every stage, on local Ray.

Spot-the-Diff in its released layout -> ingest (both images embedded) -> rewrite with
pf-ray's model and with the http engine -> filter (CLIPScore: each paragraph's best score
over the row's images) -> Clever S1 (one step) -> eval (an http answer source). Each stage
is asserted on what its model or endpoint received: two images, in order (the before image
is red, the after image blue with a white square), not only on row counts. The Serve API's
two-image requests are tested with the session's served app (tests/integration/
test_serve_app.py) and its request preparation (tests/unit/test_serve_api.py).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import openai_server
import pytest
from fastapi import FastAPI, Request
from PIL import Image
from tiny_filter_models import build_tiny_clip
from vl_sources_change import AFTER, BEFORE, IMAGE_ROOT, write_spot_the_diff

from pf_ray.config import parse_spec
from pf_ray.data.images import ImageLoader, batch_images
from pf_ray.data.io import Dataset
from pf_ray.jobs.runner import run_job
from pf_ray.specs import StorageConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PARAGRAPHS = "The first picture shows a street.\n\nIn the second picture a car has appeared."


def colour(img: Image.Image) -> tuple[int, int, int]:
    """The colour of an image's bottom-right corner (outside the changed square)."""
    return img.convert("RGB").getpixel((img.width - 2, img.height - 2))


def read_all(root: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ds = Dataset(str(root), StorageConfig())
    rows = ds.read().to_pylist() if ds.shard_files() else []
    rejects = ds.read("rejects").to_pylist() if ds.reject_files() else []
    return rows, rejects


# ---------------------------------------------------------------- a recording endpoint


def recording_app() -> FastAPI:
    """An OpenAI-compatible server that records each body; every answer has two paragraphs
    (so the CLIPScore filter scores them)."""
    app = FastAPI()
    app.state.bodies = []
    lock = threading.Lock()

    def record(body: dict[str, Any]) -> None:
        with lock:
            app.state.bodies.append(body)

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        record(await request.json())
        return {"choices": [{"index": 0, "text": PARAGRAPHS, "finish_reason": "stop"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        record(await request.json())
        return {"choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": PARAGRAPHS}}]}

    return app


@pytest.fixture()
def endpoint() -> Any:
    server = openai_server.serve_app(recording_app())
    yield server
    server.stop()


def sent_image(uri: str) -> Image.Image:
    head, data = uri.split(",", 1)
    assert head.startswith("data:image/")
    return Image.open(io.BytesIO(base64.b64decode(data)))


# ---------------------------------------------------------------- the chain


@pytest.fixture(scope="module")
def chain(ray_session: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Paths shared by the stages: the ingested pairs, a tiny rewriter folder."""
    from pf_ray.model.checkpoint import save_pretrained
    from pf_ray.model.loading import build_model, model_tokenizer

    tmp = tmp_path_factory.mktemp("two_images")
    file = write_spot_the_diff(tmp / "spot-the-diff")
    ingest = tmp / "raw" / "spot_the_diff"
    run_job(parse_spec({
        "kind": "ingest", "ray": {"progress": False}, "output": {"path": str(ingest)},
        "faults": {"max_reject_fraction": 1.0}, "images": {"check": True, "embed": True},
        "source": {"adapter": "spot_the_diff", "path": str(file),
                   "image_root": str(tmp / "spot-the-diff" / IMAGE_ROOT["spot_the_diff"])}}))
    rows, _ = read_all(ingest)
    assert sorted(r["id"] for r in rows) == ["spot_the_diff:12733", "spot_the_diff:42"]
    model = tmp / "tiny"
    save_pretrained(build_model("tiny"), model, tokenizer=model_tokenizer("tiny"))
    return {"tmp": tmp, "ingest": str(ingest), "rows": {r["id"]: r for r in rows},
            "model": str(model)}


def rewrite_spec(inputs: str, out: Path, engine: dict[str, Any]) -> Any:
    return parse_spec({"kind": "rewrite", "inputs": [inputs], "output": {"path": str(out)},
                       "engine": engine, "decoding": {"max_new_tokens": 6},
                       "checks": {"missing_eos": False, "repetition_loop": False,
                                  "ellipsis_ending": False},
                       "faults": {"max_reject_fraction": 1.0}, "ray": {"progress": False}})


def test_rewrite_with_pf_rays_model_gets_both_images(chain: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pf_ray.data.select import SelectConfig
    from pf_ray.engines.flamingo import FlamingoGenerator
    from pf_ray.model.tokenizer import MEDIA_TOKEN
    from pf_ray.rewrite.engines import Rewriter
    from pf_ray.rewrite.spec import ChecksConfig
    from pf_ray.rewrite.steps import Rewrite, prepare_rows

    # the job on Ray: every row rewritten, its two images kept
    out = chain["tmp"] / "rewrite_flamingo"
    engine = {"kind": "flamingo", "model": chain["model"], "batch_size": 4, "num_cpus": 1,
              "min_actors": 1, "max_actors": 1, "num_threads": 1}
    run_job(rewrite_spec(chain["ingest"], out, engine))
    rows, rejects = read_all(out)
    assert rejects == [] and {r["id"] for r in rows} == set(chain["rows"])
    for r in rows:
        src = chain["rows"][r["id"]]
        assert (r["image_bytes"], r["extra_images"]) == (src["image_bytes"], src["extra_images"])

    # the same step in this process: what the model was given
    seen: list[tuple[list[int], list[Image.Image]]] = []
    original = FlamingoGenerator.generate_ids

    def spy(self: FlamingoGenerator, prompts: Any, images: Any, *args: Any, **kw: Any) -> Any:
        seen.extend(zip((list(p) for p in prompts), (list(i) for i in images), strict=True))
        return original(self, prompts, images, *args, **kw)

    monkeypatch.setattr(FlamingoGenerator, "generate_ids", spy)
    generator = FlamingoGenerator(chain["model"], num_threads=1)
    media = generator.tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
    batch = {k: [row[k] for row in chain["rows"].values()]
             for k in next(iter(chain["rows"].values()))}
    batch.update(prepare_rows(batch, select=SelectConfig(), draft_boxes=False))
    step = Rewrite(lambda: Rewriter(generator), ChecksConfig(), ImageLoader())
    result = step(batch)
    assert all(o is not None for o in result["output"])  # both rows reached the model
    assert len(seen) == 2
    for ids, images in seen:
        assert ids.count(media) == 2
        assert [colour(img) for img in images] == [BEFORE, AFTER]


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_rewrite_through_an_endpoint_sends_both_images(chain: dict[str, Any], endpoint: Any,
                                                       api: str) -> None:
    out = chain["tmp"] / f"rewrite_{api}"
    run_job(rewrite_spec(chain["ingest"], out, {
        "kind": "http", "api": api, "base_url": endpoint.url, "model": "polite",
        "batch_size": 4, "max_concurrency": 2}))
    bodies = endpoint.app.state.bodies
    assert len(bodies) == 2
    for body in bodies:
        if api == "chat":
            parts = body["messages"][-1]["content"]
            assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
            uris = [p["image_url"]["url"] for p in parts[:2]]
        else:
            assert body["prompt"].count("<image><|endofchunk|>") == 2
            assert "Image 1: <image><|endofchunk|>, Image 2: <image>" in body["prompt"]
            uris = body["images"]
        assert [colour(sent_image(u)) for u in uris] == [BEFORE, AFTER]
    rows, rejects = read_all(out)
    assert rejects == [] and all(r["output"] == PARAGRAPHS for r in rows)
    for r in rows:
        assert r["extra_images"] == chain["rows"][r["id"]]["extra_images"]
    chain[f"rewritten_{api}"] = str(out)


def test_filter_scores_each_paragraph_on_its_best_image(chain: dict[str, Any]) -> None:
    from pf_ray.filters.clipscore import ParagraphCLIPScore
    from pf_ray.scorers.clip import paragraphs

    clip = build_tiny_clip(chain["tmp"] / "clip.pt")
    out = chain["tmp"] / "pf1m"
    run_job(parse_spec({
        "kind": "filter", "inputs": [chain["rewritten_chat"]], "output": {"path": str(out)},
        "ray": {"progress": False}, "pool": {"device": "cpu", "batch_size": 8, "num_cpus": 0.5},
        "clip": {"model_name": "pf-tiny-vit", "pretrained": str(clip), "threshold": -1e9,
                 "tasks": ["change_caption"]},
        "sts": {"enabled": False}, "nli": {"enabled": False}, "reward": {"enabled": False}}))
    rows, rejects = read_all(out)
    assert rejects == [] and len(rows) == 2
    scorer = ParagraphCLIPScore("pf-tiny-vit", str(clip), device="cpu")
    loader = ImageLoader()
    for r in rows:
        assert r["extra_images"] == chain["rows"][r["id"]]["extra_images"]
        images = [loader.load(ref, data) for ref, data in
                  batch_images({k: [v] for k, v in r.items()}, 0)]
        per_image = [scorer.score_paragraphs(img, paragraphs(PARAGRAPHS)) for img in images]
        assert len(per_image) == 2 and per_image[0] != per_image[1]
        assert r["paragraph_clip_scores"] == pytest.approx(
            [max(a, b) for a, b in zip(*per_image, strict=True)])
    chain["pf1m"] = str(out)


def test_clever_training_gets_both_images(chain: dict[str, Any]) -> None:
    from pf_ray.train.data import ExampleBuilder

    # the examples: two images per row, in order (before: red, after: blue)
    builder = ExampleBuilder("tiny", "chat", max_length=512, max_images=3, multiturn=True,
                             seed=0, storage=StorageConfig())
    rows, _ = read_all(chain["pf1m"])
    batch = {k: [r.get(k) for r in rows] for k in ("id", "image", "image_bytes",
                                                   "extra_images")}
    batch["conversations"] = [[{"role": "user", "content": r["instruction"]},
                               {"role": "assistant", "content": r["output"]}] for r in rows]
    examples = builder(batch)
    assert examples["n_images"] == [2, 2]  # max_images 3: no second row's pair is merged in
    for raw in examples["pixels"]:
        pixels = np.frombuffer(raw, dtype=np.float32).reshape(2, 3, -1)
        red, blue = pixels[:, 0].mean(axis=1), pixels[:, 2].mean(axis=1)
        assert red[0] > blue[0] and blue[1] > red[1]

    # one step of Clever S1 on Ray Train over the PF-1M rows: the step saw 2 x 2 images
    spec = parse_spec({
        "kind": "train", "stage": "clever_s1", "model": "tiny", "data": [{"path": chain["pf1m"]}],
        "batch_size": 2, "max_length": 512, "max_images": 3, "max_steps": 1,
        "checkpoint_every": 1, "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "storage_path": str(chain["tmp"] / "runs"), "run_name": "two", "ray": {"progress": False}})
    (result,) = run_job(spec)
    assert result.steps == 1
    history = json.loads((chain["tmp"] / "runs" / "two" / "metrics.json").read_text())
    assert [h["images"] for h in history] == [4]
    assert history[-1]["images_unreadable"] == 0 and history[-1]["examples_skipped"] == 0


def test_eval_sends_both_images(chain: dict[str, Any], endpoint: Any) -> None:
    out = chain["tmp"] / "eval"
    run_job(parse_spec({
        "kind": "eval", "output": {"path": str(out)}, "decoding": {"max_new_tokens": 6},
        "ray": {"progress": False}, "faults": {"retries": 0, "backoff_s": 0},
        "sets": [{"name": "spot", "path": chain["ingest"], "metric": "rouge_l"}],
        "sources": [{"kind": "http", "name": "endpoint", "base_url": endpoint.url,
                     "model": "clever", "batch_size": 4, "max_concurrency": 2}]}))
    bodies = endpoint.app.state.bodies
    assert len(bodies) == 2
    for body in bodies:
        parts = body["messages"][-1]["content"]
        assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
        assert [colour(sent_image(p["image_url"]["url"])) for p in parts[:2]] == [BEFORE, AFTER]
    rows, rejects = read_all(out)
    assert rejects == [] and {r["output"] for r in rows} == {PARAGRAPHS}
