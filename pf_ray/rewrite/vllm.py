"""The rewrite stage on the ``vllm`` engine: an ``hf_vlm`` rewriter through ``ray.data.llm``.

With ``engine.kind: vllm`` the plan's steps are ``prepare_rows`` then :func:`read_images`
(CPU tasks: every image of each row read by the stage's image loader, in order; a row with
an unreadable one is a reject with the loader's reason, as with the other engines), and
the plan's Ray Data stage is :class:`RewriteOnVLLM`: the rows go to vLLM
(:func:`pf_ray.engines.vllm.vllm_stage`) with the rewriter's messages
(:func:`pf_ray.model.hf_vlm.prompts.rewrite_messages`: Drafted / Revised, "(Revised
Response) " as the prefill) rendered by the model's chat template, the images beside them
(:mod:`pf_ray.engines.vllm_vlm`). The outputs get the same checks as every engine's
(:func:`pf_ray.rewrite.checks.check_output`) and the rows the same columns; a reject keeps
its ``output`` and ``finish_reason`` in its row, as the actor pool's do.
"""

from __future__ import annotations

import functools
from typing import Any

from pf_ray.data.images import ImageError, ImageLoader, batch_images, encode_png
from pf_ray.data.schema import REWRITE_SCHEMA, SAMPLE_COLUMNS
from pf_ray.rewrite.checks import check_output
from pf_ray.rewrite.spec import ChecksConfig
from pf_ray.steps.base import REJECT_DETAIL, REJECT_REASON, Batch

Row = dict[str, Any]

# the row's images as the engine gets them: lossless PNGs of the loader's RGB pixels
ENGINE_IMAGES = "engine_images"
OUTPUTS = (ENGINE_IMAGES, "output", "finish_reason")  # what read_images returns
# the columns that ride through the engine to the writer (rows and rejects' rows)
CARRIED = tuple(dict.fromkeys((*SAMPLE_COLUMNS, *REWRITE_SCHEMA.names)))
STAGE = "rewrite"  # the reject stage, as the actor pool's Rewrite step names it


def read_images(batch: Batch, *, loader: ImageLoader, fetch_threads: int = 8) -> Batch:
    """Every image of each row (:func:`pf_ray.data.images.batch_images`), read and decoded
    by ``loader`` (rows concurrently), as PNG bytes in :data:`ENGINE_IMAGES`; a row with an
    unreadable image is a reject with the loader's reason. ``output`` and
    ``finish_reason`` start empty (the engine fills them; rows that bypass it keep them
    empty, as the actor pool leaves them)."""
    n = len(batch["id"])
    out: Batch = {ENGINE_IMAGES: [None] * n, "output": [None] * n, "finish_reason": [None] * n,
                  REJECT_REASON: [None] * n, REJECT_DETAIL: [None] * n}
    got_all = loader.load_rows_images([batch_images(batch, i) for i in range(n)],
                                      threads=fetch_threads)
    for i, got in enumerate(got_all):
        if isinstance(got, ImageError):
            out[REJECT_REASON][i], out[REJECT_DETAIL][i] = got.reason, got.detail
            continue
        out[ENGINE_IMAGES][i] = [encode_png(img, compress_level=1) for img, _ in got]
    return out


def rewrite_row_messages(row: Row) -> list[dict[str, Any]]:
    """The rewriter's chat messages of a row, one image part per image."""
    from pf_ray.model.hf_vlm.prompts import rewrite_messages

    return rewrite_messages(row["instruction"], row["original"],
                            len(row.get(ENGINE_IMAGES) or ()))


def every_row(row: Row) -> bool:
    return True


def rewrite_output(row: Row, text: str, *, vlm: Any, stops: tuple[str, ...],
                   checks: ChecksConfig) -> tuple[Row, tuple[str, str] | None]:
    """The row's ``output`` and ``finish_reason`` (its tokens decoded as pf-ray's generator
    decodes them, :meth:`~pf_ray.engines.vllm_vlm.VLMRequest.result`), and the first
    failed check (reason, detail) or None."""
    text, reason = vlm.result(row, stops)
    updates = {"output": text, "finish_reason": reason}
    failed = check_output(text, reason, checks)
    if failed is None:
        return updates, None
    return updates, (failed[0], f"{failed[1]}: {text[:300]!r}")


class RewriteOnVLLM:
    """The plan's Ray Data stage: the live rows through vLLM (``ray.data.llm``). The model
    and its adapter are found when the plan is built (a missing model fails the job before
    any unit runs)."""

    def __init__(self, spec: Any):
        from pf_ray.engines.vllm_vlm import gen_params, resolve_vlm
        from pf_ray.model.prompts import rewrite_stops

        self.cfg, self.storage, self.checks = spec.engine, spec.storage, spec.checks
        self.params = gen_params(spec.decoding, rewrite_stops(spec.prompt_format))
        self.target = resolve_vlm(spec.engine, spec.storage)

    def task(self) -> Any:
        from pf_ray.engines.vllm import LLMTask
        from pf_ray.engines.vllm_vlm import VLMRequest, row_reason

        vlm = VLMRequest(self.target, rewrite_row_messages, ENGINE_IMAGES, self.storage)
        return LLMTask(stage=STAGE, carried=CARRIED, select=every_row,
                       messages=rewrite_row_messages,
                       on_output=functools.partial(rewrite_output, vlm=vlm,
                                                   stops=self.params.stop, checks=self.checks),
                       request=vlm, row_reason=row_reason)

    def __call__(self, ds: Any) -> Any:
        from pf_ray.engines.vllm import vllm_stage
        from pf_ray.engines.vllm_vlm import engine_arguments

        return vllm_stage(ds, task=self.task(), cfg=self.cfg, params=self.params,
                          model_source=self.target.model_source,
                          engine_kwargs=engine_arguments(self.cfg, self.target),
                          lora_root=self.target.lora_root)
