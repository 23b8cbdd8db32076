"""Helpers of the serving tests (no Ray): images, a counting image server, a tiny ``hf_vlm``
folder with a trained-looking LoRA adapter."""

from __future__ import annotations

import base64
import http.server
import io
import socket
import threading
from pathlib import Path
from typing import Any

from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png_bytes(colour: tuple[int, int, int], size: int = 64) -> bytes:
    img = Image.new("RGB", (size, size), colour)
    for x in range(size // 4, size // 2):  # a shape, so images differ in more than colour
        for y in range(size // 3, size // 2):
            img.putpixel((x, y), (255 - colour[0], 20, 200))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


class CountingServer:
    """A local HTTP server that counts every request (proves a URL was or was not fetched)."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.hits.append(self.path)
                status, headers, body = routes.get(self.path, (404, {}, b"no"))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def add_adapter(folder: Path, *, rank: int = 8, seed: int = 1, scale: float = 0.5) -> Path:
    """Write ``folder/adapter``: a peft LoRA over the language model's q/v projections (the
    layout of an hf_vlm training export) with random B, so it changes the outputs."""
    import peft
    import torch
    from transformers import AutoModelForImageTextToText

    from pf_ray.model.hf_vlm.parts import lm_lora_pattern

    model = AutoModelForImageTextToText.from_pretrained(folder)
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, bias="none",
                             target_modules=lm_lora_pattern(("q_proj", "v_proj")))
    wrapped = peft.get_peft_model(model, config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, scale)
    wrapped.save_pretrained(folder / "adapter")
    return folder / "adapter"


def tiny_vlm(folder: Path, *, adapter: bool = True) -> Path:
    """The tiny Idefics3 (SmolVLM layout) folder of the ``tiny-idefics3`` preset, with an
    adapter."""
    from pf_ray.model.hf_vlm.tiny import build_tiny_idefics3

    build_tiny_idefics3(folder)
    if adapter:
        add_adapter(folder)
    return folder
