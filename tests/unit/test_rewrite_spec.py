"""The rewrite kind without a model: spec errors, output checks, turns and drafts, the
http engine's finish reasons and request bodies (through a stub ``_post``)."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from pf_ray.config import SpecError, parse_spec
from pf_ray.data.conversation import draft_of, first_turn, strip_markers
from pf_ray.data.synthetic import generate
from pf_ray.engines.base import Completion
from pf_ray.engines.config import DecodingConfig
from pf_ray.engines.http import HTTPEngine, finished
from pf_ray.rewrite.checks import check_output, tail_loop
from pf_ray.rewrite.engines import Request, Rewriter
from pf_ray.rewrite.plan import plan_rewrite, rewrite_hash
from pf_ray.rewrite.prompt import chat_text
from pf_ray.rewrite.spec import ChecksConfig
from pf_ray.rewrite.steps import prepare_rows


def spec(**over: Any):  # type: ignore[no-untyped-def]
    base = {"kind": "rewrite", "inputs": ["/data/syn"], "output": {"path": "/tmp/x"},
            "engine": {"kind": "flamingo", "model": "/models/rw"}}
    base.update(over)
    return parse_spec(base)


def errors(**over: Any) -> str:
    with pytest.raises(SpecError) as info:
        spec(**over)
    return str(info.value)


def test_spec_defaults_are_the_dataset_inference_script() -> None:
    s = spec()
    d = s.decoding
    assert (d.max_new_tokens, d.do_sample, d.num_beams, d.top_p) == (128, False, 1, 1.0)
    assert s.prompt_format == "paper" and s.engine.batch_size == 16


def test_spec_errors_name_the_field_and_what_is_allowed() -> None:
    assert "decoding.no_repeat_ngram_size" in errors(decoding={"no_repeat_ngram_size": 3})
    text = errors(engine={"kind": "nope", "model": "x"})
    assert "engine" in text and "flamingo" in text and "http" in text
    text = errors(engine={"kind": "http", "base_url": "http://h:1/v1", "model": "m"},
                  decoding={"num_beams": 3})
    assert "num_beams" in text and "http" in text
    assert "base_url" in errors(engine={"kind": "http", "base_url": "h:1", "model": "m"})
    assert "chat_prompt: must contain {instruction} and {draft}" in errors(
        engine={"kind": "http", "base_url": "http://h/v1", "model": "m"},
        chat_prompt="no slots")
    assert "min_actors" in errors(engine={"kind": "flamingo", "model": "m", "min_actors": 0})
    assert "beam sampling" in errors(decoding={"num_beams": 2, "do_sample": True})


def test_shard_names_ignore_where_the_engine_runs() -> None:
    a = spec(engine={"kind": "flamingo", "model": "/m", "max_actors": 1, "batch_size": 8})
    b = spec(engine={"kind": "flamingo", "model": "/m", "max_actors": 8, "num_gpus": 1,
                     "batch_size": 32})
    c = spec(engine={"kind": "flamingo", "model": "/other"})
    d = spec(engine={"kind": "flamingo", "model": "/m"}, decoding={"max_new_tokens": 64})
    assert rewrite_hash(a) == rewrite_hash(b)
    assert len({rewrite_hash(a), rewrite_hash(c), rewrite_hash(d)}) == 3


@pytest.mark.parametrize(("text", "finish", "reason"), [
    ("", "eos", "empty_output"),
    ("  \n", "length", "empty_output"),
    ("The answer is yes. " + "the cat sat on the mat " * 4, "length", "repetition_loop"),
    ("It is red, red, red, red, red, red, red", "eos", "repetition_loop"),
    ("The circle is red and it sits in the upper left of the picture, next to", "length",
     "missing_eos"),
    ("The circle is red, and there are more shapes...", "eos", "ellipsis_ending"),
    ("The circle is red \u2026", "stop", "ellipsis_ending"),
    ("The circle is red. It is in the upper left of the image.", "eos", None),
    # a phrase said three times inside a longer answer is no loop: the text must end in it
    ("Yes, yes, yes. The image shows a red circle on a white background.", "eos", None),
    ("No no no.", "eos", None),  # too short to be a loop
])
def test_output_checks(text: str, finish: str, reason: str | None) -> None:
    got = check_output(text, finish, ChecksConfig())
    assert (got[0] if got else None) == reason


def test_checks_can_be_switched_off_and_loops_measured() -> None:
    off = ChecksConfig(missing_eos=False, repetition_loop=False, ellipsis_ending=False)
    assert check_output("a b a b a b a b a b...", "length", off) is None
    assert check_output("", "eos", off) == ("empty_output", "no text (finish_reason eos)")
    assert tail_loop("x y z " + "and then " * 5) == (2, 5)
    assert tail_loop("and then " * 5 + "and") == (2, 5)  # a loop cut mid-repetition
    assert tail_loop("one two three four five six seven eight") is None


def test_first_turn_instruction_and_draft() -> None:
    turns = [{"role": "system", "content": "s"}, {"role": "user", "content": "<image>\nWhat?"},
             {"role": "assistant", "content": " red "}, {"role": "user", "content": "And?"},
             {"role": "assistant", "content": "blue"}]
    assert first_turn(turns) == (2, "What?", "red")
    assert first_turn([{"role": "user", "content": "<image>"},
                       {"role": "assistant", "content": "x"}])[0] == "no_instruction"
    assert first_turn([{"role": "user", "content": "q"},
                       {"role": "assistant", "content": "  "}])[0] == "no_raw_answer"
    assert first_turn([{"role": "user", "content": "q"}])[0] == "no_raw_answer"
    assert first_turn([])[0] == "no_instruction"
    assert strip_markers("Look <image><|endofchunk|> here") == "Look here"
    boxes = [{"label": "red circle", "x1": 0.1, "y1": 0.2, "x2": 0.3, "y2": 0.4}]
    drafted = draft_of("a red circle", boxes, True)
    assert drafted.startswith("a red circle\n\nThe followings are specific object locations")
    assert drafted.endswith("red circle: [0.1, 0.2, 0.3, 0.4]\n")
    assert draft_of("a red circle", boxes, False) == draft_of("a red circle", None, True) == \
        "a red circle"


def test_prepare_rows_on_synthetic_rows() -> None:
    batch = generate(0, 0, 18)
    out = prepare_rows(batch, select=spec(select={"sources": ["synthetic_vl"]}).select,
                       draft_boxes=True)
    for i, task in enumerate(batch["task"]):
        if batch["source"][i] != "synthetic_vl":
            assert out["_reject_reason"][i] == "not_selected"
            assert out["conversations"][i] == [] and out["image_bytes"][i] is None
            continue
        assert out["_reject_reason"][i] is None
        assert out["instruction"][i] == batch["conversations"][i][0]["content"]
        raw = batch["conversations"][i][1]["content"]
        assert out["original"][i].startswith(raw)
        assert ("The followings are" in out["original"][i]) == (task in ("captions", "boxes"))


def test_finish_reasons_from_openai_choices() -> None:
    stops = ("\n### Human:",)
    assert finished("Hi there.", {"finish_reason": "stop"}, stops) == Completion("Hi there.", "eos")
    assert finished("Hi", {"finish_reason": "stop", "stop_reason": "\n### Human:"},
                    stops).finish_reason == "stop"
    assert finished("Hi\n### Human: more", {"finish_reason": "stop"}, stops) == Completion("Hi", "stop")
    assert finished("Hi the", {"finish_reason": "length"}, stops).finish_reason == "length"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_http_rewriter_request_bodies(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    def post(self: HTTPEngine, body: dict[str, Any], path: str = "/completions") -> dict:
        sent.append((path, body))
        if path == "/completions":
            return {"choices": [{"text": " A red circle.\n### Human: next", "finish_reason": "stop"}]}
        return {"choices": [{"message": {"content": "A red circle."}, "finish_reason": "stop"}]}

    monkeypatch.setattr(HTTPEngine, "_post", post)
    s = spec(engine={"kind": "http", "api": api, "base_url": "http://h:1/v1/", "model": "pf"},
             decoding={"max_new_tokens": 40, "do_sample": True, "temperature": 0.7,
                       "top_k": 20, "top_p": 0.9, "seed": 3})
    png = _png()
    engine = Rewriter(s.engine, prompt_format="paper", decoding=s.decoding)
    (res,) = engine.rewrite([Request("What colour?", "red", image_bytes=(png,))])
    assert res.text == "A red circle."
    path, body = sent[0]
    assert engine.generator.http.base_url == "http://h:1/v1"  # type: ignore[attr-defined]
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_k"],
            body["top_p"], body["seed"]) == ("pf", 40, 0.7, 20, 0.9, 3)
    assert "\n### Human:" in body["stop"]
    if api == "completions":
        assert path == "/completions" and res.finish_reason == "stop"
        assert body["images"] == [uri]
        assert body["prompt"].count("<image>") == 1 and not body["prompt"].startswith("<s>")
        assert body["prompt"].endswith("(Drafted Response) red (Revised Response) ")
    else:
        assert path == "/chat/completions" and res.finish_reason == "eos"
        system, user = body["messages"]
        assert system["role"] == "system" and user["role"] == "user"
        assert user["content"][0] == {"type": "image_url", "image_url": {"url": uri}}
        assert "Request: What colour?" in user["content"][1]["text"]
        assert "Draft response: red" in user["content"][1]["text"]


def test_chat_text_keeps_braces_in_text() -> None:
    assert chat_text("f({x})?", "{draft}", "Q: {instruction} D: {draft}") == \
        "Q: f({x})? D: {draft}"


def test_plan_has_one_unit_per_input_shard(tmp_path: Any) -> None:
    from pf_ray.jobs.runner import run_job

    root = str(tmp_path / "syn")
    run_job(parse_spec({"kind": "synthetic", "n": 20, "rows_per_shard": 9,
                        "output": {"path": root}}), executor="local")
    plan = plan_rewrite(spec(inputs=[root], engine={
        "kind": "flamingo", "model": "/m", "num_gpus": 1, "min_actors": 1, "max_actors": 4,
        "batch_size": 32}))
    assert len(plan.units) == 3 and plan.schema.name == "rewrite"
    step = plan.steps[-1]
    assert step.name == "rewrite" and step.uses_actors
    r = step.resources
    assert (r.num_gpus, r.min_actors, r.max_actors) == (1, 1, 4)
    # engine batches of 32 rows, sorted by length within micro-batches of 8 of them
    assert step.init_kwargs["engine_batch"] == 32 and r.batch_size == 32 * 8
    assert isinstance(DecodingConfig(), DecodingConfig)


def test_select_samples_takes_exact_seeded_counts(tmp_path: Any) -> None:
    from pf_ray.jobs.runner import run_job
    from pf_ray.rewrite.plan import read_samples

    root = str(tmp_path / "syn")
    run_job(parse_spec({"kind": "synthetic", "n": 90, "rows_per_shard": 20,
                        "output": {"path": root}}), executor="local")

    def taken(seed: int, n: int) -> tuple[list[str], dict]:
        plan = plan_rewrite(spec(inputs=[root], seed=seed, select={
            "sources": ["synthetic_vl", "synthetic_text"], "samples": {"synthetic_vl": n}}))
        prepare = plan.steps[0].build()
        ids = []
        for unit in plan.units:
            batch = read_samples(**unit.params)
            out = prepare(batch)
            ids += [i for i, s, r in zip(batch["id"], batch["source"], out["_reject_reason"],
                                         strict=True) if s == "synthetic_vl" and r is None]
            # other sources: every selected row (synthetic_text), none of the rest
            assert {s for s, r in zip(batch["source"], out["_reject_reason"], strict=True)
                    if r is None} <= {"synthetic_vl", "synthetic_text"}
        return ids, plan.spec["selection"]

    ids, report = taken(0, 17)
    assert len(ids) == len(set(ids)) == 17
    assert report == {"synthetic_vl": {"asked": 17, "eligible": 50, "taken": 17}}
    assert taken(0, 17)[0] == ids and taken(1, 17)[0] != ids  # seeded
    assert len(taken(0, 80)[0]) == 50 and taken(0, 0)[0] == []


def test_paper_scale_spec_feeds_the_filter_job() -> None:
    from pathlib import Path

    from pf_ray.config import load_spec

    jobs = Path(__file__).parents[2] / "jobs"
    env = {"PF_BUCKET": "s3://bucket"}
    rw = load_spec(jobs / "rewrite_pf1m.yaml", env=env)
    assert rw.kind == "rewrite" and rw.engine.kind == "flamingo"
    assert rw.engine.num_gpus == 1 and rw.engine.min_actors == 1 and rw.engine.max_actors == 8
    # Table 6's 23 datasets (37 with ELEVATER's 15 sets), scaled to the paper's 1.17M
    assert sum((rw.select.samples or {}).values()) == 1_170_000
    assert len(rw.select.samples or {}) == 23
    assert all(p.startswith("s3://bucket/raw_vl/") for p in rw.inputs)
    filt = jobs / "filter_pf1m.yaml"
    if filt.exists():  # written beside this one: it must read what this job writes
        assert rw.output.path in load_spec(filt, env=env).inputs


def test_rewrite_step_batches_rows_of_similar_length_in_row_order() -> None:
    from pf_ray.data.images import ImageLoader
    from pf_ray.rewrite.engines import Result
    from pf_ray.rewrite.steps import Rewrite

    calls: list[list[str]] = []

    class Echo:
        def rewrite(self, requests: list) -> list[Result]:
            calls.append([r.draft for r in requests])
            return [Result(f"Well: {r.draft}.", "eos") for r in requests]

    drafts = ["a" * 50, "b", "c" * 20, "d" * 2, "e" * 49]
    step = Rewrite(lambda: Echo(), ChecksConfig(), ImageLoader(), engine_batch=2)
    out = step({"id": list("12345"), "image": [None] * 5, "image_bytes": [None] * 5,
                "instruction": ["q"] * 5, "original": drafts})
    assert out["output"] == [f"Well: {d}." for d in drafts]
    assert calls == [["b", "dd"], ["c" * 20, "e" * 49], ["a" * 50]]


def test_a_selection_no_input_holds_is_a_spec_error(tmp_path):
    from pf_ray.config import parse_spec
    from pf_ray.jobs.runner import run_job
    from pf_ray.rewrite.plan import plan_rewrite

    syn = str(tmp_path / "syn")
    run_job(parse_spec({"kind": "synthetic", "n": 18, "output": {"path": syn}}),
            executor="local")
    spec = parse_spec({"kind": "rewrite", "inputs": [syn], "output": {"path": str(tmp_path / "o")},
                       "select": {"sources": ["synthetic_vl", "synthetic_v1"], "tasks": ["vqa2"]},
                       "engine": {"kind": "flamingo", "model": str(tmp_path / "m")}})
    with pytest.raises(ValueError) as info:
        plan_rewrite(spec)
    msg = str(info.value)
    assert "select.sources: 'synthetic_v1' is in none of the inputs" in msg
    assert "select.tasks: 'vqa2' is in none of the inputs" in msg
    assert "'synthetic_vl' is in none" not in msg  # present sources pass
