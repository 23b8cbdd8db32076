"""The offline default dataset: coloured shapes with known ground truth.

Row ``i`` of a dataset with seed ``s`` is a pure function of ``(s, i)``: any range of rows
can be generated on its own, in any process, with the same bytes. Rows cycle through
:data:`TASKS`; the rows of one cycle share one image (``image index = i // len(TASKS)``).

* clean, polite, multi-sentence conversations in LLaVA-Instruct style
  (source ``synthetic_llava``: ``detail``, ``reasoning``, ``conversation``),
* raw vision-language annotations in the styles PF-1M rewrites
  (source ``synthetic_vl``: ``vqa`` short answers, ``captions`` lists, COCO-style ``boxes``,
  ``classification`` labels, ``multiple_choice`` with a rationale),
* text-only instructions (source ``synthetic_text``: ``text_instruction``).

``meta`` keeps the ground truth (objects with colour, shape, size and box; the answer of a
question), so later stages can measure accuracy against it.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from PIL import Image, ImageDraw

from pf_ray.data.schema import Batch, dumps_meta, make_id

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 45), "green": (46, 160, 67), "blue": (40, 90, 210),
    "yellow": (240, 200, 30), "purple": (130, 60, 170), "orange": (240, 130, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250), "light grey": (205, 205, 205), "beige": (235, 225, 200),
}
SHAPES = ("circle", "square", "triangle", "diamond")
TASKS = ("detail", "reasoning", "conversation", "vqa", "captions", "boxes",
         "classification", "multiple_choice", "text_instruction")
SOURCE_OF_TASK = {t: "synthetic_llava" for t in ("detail", "reasoning", "conversation")}
SOURCE_OF_TASK.update({t: "synthetic_vl" for t in
                       ("vqa", "captions", "boxes", "classification", "multiple_choice")})
SOURCE_OF_TASK["text_instruction"] = "synthetic_text"

NUMBERS = ("zero", "one", "two", "three", "four", "five")


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    size: str  # "small" | "large"
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in 0-1

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    def region(self) -> str:
        cx, cy = (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2
        v = "upper" if cy < 0.4 else "lower" if cy > 0.6 else "middle"
        h = "left" if cx < 0.4 else "right" if cx > 0.6 else "centre"
        return "centre" if (v, h) == ("middle", "centre") else f"{v} {h}"

    def as_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "size": self.size,
                "box": [round(c, 4) for c in self.box], "region": self.region()}


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]


def _rng(seed: int, *key: object) -> random.Random:
    return random.Random(":".join(str(k) for k in (seed, *key)))  # str seeds hash with sha512


@lru_cache(maxsize=64)
def make_scene(seed: int, image_index: int) -> Scene:
    """1-4 shapes of distinct colour+shape, placed without overlap on a plain background."""
    rng = _rng(seed, "scene", image_index)
    n = rng.randint(1, 4)
    shapes: list[Shape] = []
    names: set[tuple[str, str]] = set()
    for _ in range(60):
        if len(shapes) == n:
            break
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        if (color, shape) in names:
            continue
        size = rng.choice(("small", "large"))
        side = rng.uniform(0.18, 0.26) if size == "small" else rng.uniform(0.34, 0.44)
        x1, y1 = rng.uniform(0.02, 0.98 - side), rng.uniform(0.02, 0.98 - side)
        box = (x1, y1, x1 + side, y1 + side)
        if any(box[0] < o.box[2] and o.box[0] < box[2] and box[1] < o.box[3]
               and o.box[1] < box[3] for o in shapes):
            continue
        names.add((color, shape))
        shapes.append(Shape(shape, color, size, box))
    return Scene(rng.choice(list(BACKGROUNDS)), tuple(shapes))


def render(scene: Scene, size: int) -> Image.Image:
    """Draw a scene as an RGB image of ``size`` x ``size`` pixels."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for s in scene.shapes:
        x1, y1, x2, y2 = (round(c * size) for c in s.box)
        fill = COLORS[s.color]
        if s.shape == "circle":
            draw.ellipse((x1, y1, x2, y2), fill=fill)
        elif s.shape == "square":
            draw.rectangle((x1, y1, x2, y2), fill=fill)
        elif s.shape == "triangle":
            draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill)
        else:
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill)
    return img


@lru_cache(maxsize=64)
def image_png(seed: int, image_index: int, size: int) -> bytes:
    """The PNG bytes of an image (deterministic: same arguments, same bytes)."""
    buf = io.BytesIO()
    render(make_scene(seed, image_index), size).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def image_uri(seed: int, image_index: int, size: int) -> str:
    """``synthetic://`` URIs are regenerated by the image loader, never stored as files."""
    return f"synthetic://{seed}/{image_index}?size={size}"


# ------------------------------------------------------------------ language


def _count(n: int) -> str:
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _question(scene: Scene, rng: random.Random) -> dict[str, Any]:
    """A question with a short answer and a polite explained answer."""
    shapes = scene.shapes
    kind = rng.choice(("count", "color", "shape", "exists"))
    names = [f"{_article(s.name)} {s.name}" for s in shapes]
    scene_desc = f"The image contains {_count(len(shapes))} shape{'s' * (len(shapes) > 1)}: {_list(names)}."
    if kind == "count":
        n = len(shapes)
        return {"type": kind, "q": "How many shapes are there in the image?", "a": str(n),
                "polite": f"There {'is' if n == 1 else 'are'} {_count(n)} shape{'s' * (n > 1)} "
                          f"in the image. {scene_desc} Counting them one by one gives a total "
                          f"of {_count(n)}."}
    target = rng.choice(shapes)
    if kind == "color":
        return {"type": kind, "q": f"What colour is the {target.shape}?", "a": target.color,
                "polite": f"The {target.shape} in the image is {target.color}. It is a "
                          f"{target.size} shape located in the {target.region()} of the picture."}
    if kind == "shape":
        return {"type": kind, "q": f"What shape is {target.color}?", "a": target.shape,
                "polite": f"The {target.color} object in the image is {_article(target.shape)} "
                          f"{target.shape}. You can find it in the {target.region()} of the "
                          f"picture, where it appears {target.size}."}
    present = rng.random() < 0.5
    if present:
        color, shape = target.color, target.shape
    else:
        taken = {(s.color, s.shape) for s in shapes}
        options = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in taken]
        color, shape = rng.choice(options)
    ans = "yes" if present else "no"
    polite = (f"Yes, there is a {color} {shape} in the image. It is in the {target.region()} "
              f"of the picture." if present else
              f"No, there is no {color} {shape} in the image. {scene_desc}")
    return {"type": kind, "q": f"Is there a {color} {shape} in the image?", "a": ans,
            "polite": polite}


def _detail(scene: Scene) -> str:
    shapes = scene.shapes
    parts = [f"The image shows {_count(len(shapes))} simple geometric "
             f"shape{'s' * (len(shapes) > 1)} on a plain {scene.background} background."]
    for s in sorted(shapes, key=lambda s: (s.box[1], s.box[0])):
        parts.append(f"In the {s.region()} there is {_article(s.size)} {s.size} {s.name}.")
    if len(shapes) > 1:
        big = max(shapes, key=lambda s: s.area)
        parts.append(f"The largest of them is the {big.name}.")
    parts.append("The shapes do not overlap, and the flat colours give the picture a clean, "
                 "diagram-like look.")
    return " ".join(parts)


def _captions(scene: Scene, rng: random.Random) -> list[str]:
    names = [s.name for s in scene.shapes]
    many = len(names) > 1
    caps = [
        f"{_list(names)} on a {scene.background} background",
        f"{_count(len(names))} shape{'s' * many}",
        f"a {scene.background} picture with {_article(names[0])} {names[0]}",
        f"geometric shape{'s' * many}: {', '.join(names)}",
        f"simple drawing of {_list(names)}",
    ]
    rng.shuffle(caps)
    return caps


TEXT_FACTS = (
    ("What do you get when you mix blue and yellow paint?", "green",
     "Mixing blue and yellow paint gives green. Blue and yellow are primary colours in the "
     "traditional painter's model, and combining them produces the secondary colour green."),
    ("How many sides does a triangle have?", "3",
     "A triangle has three sides. It is the polygon with the fewest sides, and its three "
     "interior angles always add up to 180 degrees."),
    ("How many sides does a square have?", "4",
     "A square has four sides of equal length. All of its interior angles are right angles, "
     "so it is both a rectangle and a rhombus."),
    ("What do you get when you mix red and blue paint?", "purple",
     "Mixing red and blue paint gives purple. The exact shade depends on the proportions: "
     "more red makes it warmer, more blue makes it cooler."),
    ("What do you get when you mix red and yellow paint?", "orange",
     "Mixing red and yellow paint gives orange. It is one of the three secondary colours, "
     "together with green and purple."),
)


class CaptionPair(NamedTuple):
    image: Image.Image
    captions: tuple[str, ...]  # contrastive training draws one per step


def caption_pairs(seed: int, start: int, stop: int, size: int = 64) -> list[CaptionPair]:
    """Images ``start..stop-1`` of seed ``seed`` with their captions, for contrastive
    pretraining (:mod:`pf_ray.model.clip_pretrain`): the full caption ("red circle and blue
    square on a white background") first, then the other caption styles."""
    out = []
    for i in range(start, stop):
        scene = make_scene(seed, i)
        names = [s.name for s in scene.shapes]
        full = f"{_list(names)} on a {scene.background} background"
        others = [c for c in _captions(scene, _rng(seed, "captions", i)) if c != full]
        out.append(CaptionPair(render(scene, size), (full, *others)))
    return out


def _arithmetic(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(2, 49), rng.randint(2, 49)
    return (f"What is {a} plus {b}?", str(a + b),
            f"{a} plus {b} equals {a + b}. You can check it by adding the tens first "
            f"({a // 10 * 10} + {b // 10 * 10}) and then the units ({a % 10} + {b % 10}).")


def _boxes(scene: Scene) -> list[dict[str, Any]]:
    return [{"label": s.name, "x1": s.box[0], "y1": s.box[1], "x2": s.box[2], "y2": s.box[3]}
            for s in scene.shapes]


def make_row(seed: int, index: int, *, image_size: int = 64, embed_images: bool = True,
             system: str | None = None) -> dict[str, Any]:
    """Row ``index`` of the synthetic dataset with seed ``seed`` (see the module doc)."""
    task = TASKS[index % len(TASKS)]
    image_index = index // len(TASKS)
    scene = make_scene(seed, image_index)
    rng = _rng(seed, "row", index)
    meta: dict[str, Any] = {"seed": seed, "index": index}
    boxes = None
    turns: list[tuple[str, str]]
    if task == "text_instruction":
        q, a, polite = _arithmetic(rng) if rng.random() < 0.5 else rng.choice(TEXT_FACTS)
        turns = [("user", q), ("assistant", polite)]
        meta.update(answer=a)
    else:
        meta.update(image_index=image_index, background=scene.background,
                    objects=[s.as_dict() for s in scene.shapes])
        if task == "detail":
            prompt = rng.choice(("Describe the following image in detail.",
                                 "Give an elaborate description of the image.",
                                 "What can you see in this picture? Please be thorough."))
            turns = [("user", prompt), ("assistant", _detail(scene))]
        elif task == "reasoning":
            q = _question(scene, rng)
            turns = [("user", q["q"]), ("assistant", q["polite"])]
            meta.update(answer=q["a"], question_type=q["type"])
        elif task == "conversation":
            turns = []
            answers = []
            for _ in range(rng.randint(2, 3)):
                q = _question(scene, rng)
                turns += [("user", q["q"]), ("assistant", q["polite"])]
                answers.append(q["a"])
            meta.update(answers=answers)
        elif task == "vqa":
            q = _question(scene, rng)
            turns = [("user", q["q"]), ("assistant", q["a"])]
            meta.update(answer=q["a"], question_type=q["type"])
        elif task == "captions":  # COCO-style: captions and instance boxes of the image
            caps = _captions(scene, rng)
            boxes = _boxes(scene)
            turns = [("user", "Describe the following image in detail."),
                     ("assistant", "\n".join(caps))]
            meta.update(captions=caps)
        elif task == "boxes":
            boxes = _boxes(scene)
            turns = [("user", "What objects are in the image, and where are they?"),
                     ("assistant", ", ".join(s.name for s in scene.shapes))]
        elif task == "classification":
            big = max(scene.shapes, key=lambda s: s.area)
            turns = [("user", "What is this?"), ("assistant", big.shape)]
            meta.update(answer=big.shape, class_names=list(SHAPES))
        else:  # multiple_choice
            target = rng.choice(scene.shapes)
            options = [target.color, *rng.sample([c for c in COLORS if c != target.color], 3)]
            rng.shuffle(options)
            letter = "ABCD"[options.index(target.color)]
            choices = " ".join(f"({L}) {c}" for L, c in zip("ABCD", options, strict=True))
            rationale = (f"The {target.shape} in the {target.region()} of the image is "
                         f"filled with {target.color}.")
            turns = [("user", f"What colour is the {target.shape}? Choices: {choices}"),
                     ("assistant", f"Answer: {letter}. {rationale}")]
            meta.update(answer=letter, choices=options, rationale=rationale)
    conversations = ([{"role": "system", "content": system}] if system else []) + [
        {"role": r, "content": c} for r, c in turns]
    has_image = task != "text_instruction"
    return {
        "id": make_id("synthetic", f"{seed}-{index:09d}"),
        "source": SOURCE_OF_TASK[task],
        "task": task,
        "image": image_uri(seed, image_index, image_size) if has_image else None,
        "image_bytes": image_png(seed, image_index, image_size)
        if has_image and embed_images else None,
        "extra_images": None,  # one image per synthetic row
        "conversations": conversations,
        "boxes": boxes,
        "meta": dumps_meta(meta),
    }


def generate(seed: int, start: int, stop: int, *, image_size: int = 64,
             embed_images: bool = True) -> Batch:
    """Rows ``start..stop-1`` as a columnar batch."""
    rows = [make_row(seed, i, image_size=image_size, embed_images=embed_images)
            for i in range(start, stop)]
    return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
