"""A procedural, seeded image-caption world whose truth is many-to-many and hierarchical.

Each scene holds 1-3 coloured shapes in three horizontal slots (left, middle, right); each
comes with captions at four levels of specificity, every level entailed by the next
(like HierarCaps):

    0 "an object"  <-  1 "a circle"  <-  2 "a red circle"
                   <-  3 "a large red circle left of a small blue square" (or "... on the left")

Truth is many-to-many: ``Scene.matches(caption)`` parses any caption of the grammar and
says whether it describes the scene, so "a circle" is a positive for every scene with a
circle (the multi-positive protocol of ECCV Caption). Corruptions with a known strength
in [0, 1] (blur, occlusion, low contrast) make images whose content is harder to read.

Splits come from disjoint seed sequences: scene ``i`` of split ``s`` is drawn from
``numpy.random.default_rng([SPLIT_SEEDS[s], i])`` alone, so any scene can be rebuilt from
(split, index) and no train scene shares a random stream with a test scene.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "cross")  # silhouettes that stay distinct when small
COLOURS = {  # few colours, so in-batch negatives often differ only in shape, size or place
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 100, 240),
    "yellow": (240, 215, 40),
}
SIZES = {"small": 0.24, "large": 0.36}  # side of the shape's bounding box, as a fraction of the image
SLOTS = ("left", "middle", "right")
SLOT_PHRASES = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
LEVELS = 4
SPLIT_SEEDS = {"train": 1_000, "val": 2_000, "test": 3_000}
CORRUPTIONS = ("blur", "occlusion", "low_contrast")
IMAGE_SIZE = 48
_SUPERSAMPLE = 4  # render large, then downsample with antialiasing, for clean small shapes


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    slot: int  # 0 left, 1 middle, 2 right
    y: float  # vertical centre as a fraction of the free height, 0 top .. 1 bottom

    def phrase(self, level: int) -> str:
        """Noun phrase of this object at a caption level (0 names nothing, 3 names everything)."""
        if level <= 0:
            return "an object"
        if level == 1:
            return f"a {self.shape}"
        if level == 2:
            return f"a {self.colour} {self.shape}"
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """One image's content. ``image`` renders it; ``captions[level]`` describe it."""

    split: str
    index: int
    objects: tuple[SceneObject, ...]
    captions: tuple[str, str, str, str]
    background: tuple[int, int, int]
    image_size: int = IMAGE_SIZE
    _noise_seed: int = field(default=0, repr=False)

    @property
    def id(self) -> str:
        return f"{self.split}-{self.index:06d}"

    @cached_property
    def image(self) -> Image.Image:
        return render(self)

    def matches(self, caption: str) -> bool:
        """Does this caption truly describe the scene? Raises ValueError outside the grammar."""
        return parse_caption(caption).holds_in(self.objects)

    def corrupted(self, kind: str, strength: float) -> Image.Image:
        """The image under a corruption of known strength in [0, 1] (0 leaves it unchanged)."""
        return corrupt(self.image, kind, strength, seed=self._noise_seed, scene=self)


# --------------------------------------------------------------------------- generation
def generate(split: str, n: int, start: int = 0, image_size: int = IMAGE_SIZE) -> list[Scene]:
    """Scenes ``start .. start + n - 1`` of a split ("train", "val" or "test")."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_SEEDS)}")
    if n < 0 or start < 0:
        raise ValueError(f"n ({n}) and start ({start}) must be non-negative")
    return [make_scene(split, index, image_size) for index in range(start, start + n)]


def make_scene(split: str, index: int, image_size: int = IMAGE_SIZE) -> Scene:
    rng = np.random.default_rng([SPLIT_SEEDS[split], index])
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    slots = sorted(rng.choice(len(SLOTS), size=count, replace=False).tolist())
    objects = tuple(
        SceneObject(shape=str(rng.choice(SHAPES)), colour=str(rng.choice(list(COLOURS))),
                    size=str(rng.choice(list(SIZES))), slot=slot, y=float(rng.uniform(0.15, 0.85)))
        for slot in slots
    )
    focus = int(rng.integers(count))
    captions = tuple(objects[focus].phrase(level) for level in range(LEVELS - 1))
    if count == 1:
        specific = f"{objects[focus].phrase(3)} {SLOT_PHRASES[SLOTS[objects[focus].slot]]}"
    else:
        other = int(rng.choice([i for i in range(count) if i != focus]))
        first, second = objects[focus], objects[other]
        relation = "left of" if first.slot < second.slot else "right of"
        specific = f"{first.phrase(3)} {relation} {second.phrase(3)}"
    # a dim, nearly neutral background: its variation is nuisance the captions never mention,
    # and a large one would dominate the pixels of these small-object scenes
    grey = int(rng.integers(45, 66))
    tint = rng.integers(-4, 5, size=3)
    background = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
    return Scene(split, index, objects, (*captions, specific), background, image_size,
                 int(rng.integers(2**31)))


# --------------------------------------------------------------------------- rendering
def _box(obj: SceneObject, size: int) -> tuple[float, float, float, float]:
    side = SIZES[obj.size] * size
    slot_width = size / len(SLOTS)
    cx = (obj.slot + 0.5) * slot_width
    cy = side / 2 + obj.y * (size - side)
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def render(scene: Scene) -> Image.Image:
    big = scene.image_size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), scene.background)
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        x0, y0, x1, y1 = _box(obj, big)
        colour = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif obj.shape == "triangle":
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
        else:  # cross: a plus sign whose arms are a third of the box wide
            third = (x1 - x0) / 3
            draw.rectangle((x0 + third, y0, x1 - third, y1), fill=colour)
            draw.rectangle((x0, y0 + third, x1, y1 - third), fill=colour)
    small = np.asarray(canvas.resize((scene.image_size,) * 2, Image.Resampling.LANCZOS), dtype=np.float32)
    # faint sensor noise so flat backgrounds are not a shortcut
    noise = np.random.default_rng(scene._noise_seed).normal(0, 3.0, small.shape)
    return Image.fromarray(np.clip(small + noise, 0, 255).astype(np.uint8))


def corrupt(image: Image.Image, kind: str, strength: float, seed: int = 0, scene: Scene | None = None
            ) -> Image.Image:
    """Apply a corruption of strength in [0, 1]; the occluder covers one of the scene's objects."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {', '.join(CORRUPTIONS)}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"corruption strength {strength} is outside [0, 1]")
    if strength == 0:
        return image.copy()
    size = image.width
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=strength * size / 10))
    if kind == "low_contrast":
        pixels = np.asarray(image, dtype=np.float32)
        faded = pixels.mean() + (pixels - pixels.mean()) * (1.0 - 0.92 * strength)
        return Image.fromarray(np.clip(faded, 0, 255).astype(np.uint8))
    # occlusion: a neutral square whose area grows with strength, centred on an object when known
    rng = np.random.default_rng([seed, 7])
    side = np.sqrt(strength * 0.45) * size
    if scene is not None and scene.objects:
        obj = scene.objects[int(rng.integers(len(scene.objects)))]
        x0, y0, x1, y1 = _box(obj, size)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    else:
        cx, cy = rng.uniform(0.25, 0.75, size=2) * size
    grey = int(rng.integers(90, 160))
    out = image.copy()
    ImageDraw.Draw(out).rectangle((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), fill=(grey,) * 3)
    return out


# --------------------------------------------------------------------------- caption truth
@dataclass(frozen=True)
class _NounPhrase:
    shape: str | None
    colour: str | None
    size: str | None

    def fits(self, obj: SceneObject) -> bool:
        return all(want is None or want == got for want, got in
                   ((self.shape, obj.shape), (self.colour, obj.colour), (self.size, obj.size)))


@dataclass(frozen=True)
class CaptionQuery:
    """A parsed caption: one noun phrase, optionally placed in a slot or related to a second one."""

    first: _NounPhrase
    relation: str | None = None  # "left of" / "right of"
    second: _NounPhrase | None = None
    slot: int | None = None

    def holds_in(self, objects: tuple[SceneObject, ...]) -> bool:
        for a in objects:
            if not self.first.fits(a) or (self.slot is not None and a.slot != self.slot):
                continue
            if self.relation is None:
                return True
            for b in objects:
                if b is a or not self.second.fits(b):
                    continue
                if (a.slot < b.slot) == (self.relation == "left of"):
                    return True
        return False


def _parse_phrase(words: list[str], caption: str) -> tuple[_NounPhrase, list[str]]:
    if not words or words[0] not in ("a", "an"):
        raise ValueError(f"caption {caption!r}: expected 'a' or 'an' to open a noun phrase")
    words = words[1:]
    size = words.pop(0) if words and words[0] in SIZES else None
    colour = words.pop(0) if words and words[0] in COLOURS else None
    if not words or words[0] not in (*SHAPES, "object"):
        raise ValueError(f"caption {caption!r}: expected a shape ({', '.join(SHAPES)}) or 'object'")
    noun = words.pop(0)
    return _NounPhrase(None if noun == "object" else noun, colour, size), words


def parse_caption(caption: str) -> CaptionQuery:
    """Parse a caption of the demo grammar; raises ValueError naming what was expected."""
    words = caption.lower().replace(",", " ").split()
    first, rest = _parse_phrase(words, caption)
    if not rest:
        return CaptionQuery(first)
    tail = " ".join(rest)
    for slot, phrase in enumerate(SLOT_PHRASES.values()):
        if tail == phrase:
            return CaptionQuery(first, slot=slot)
    for relation in ("left of", "right of"):
        if tail.startswith(relation + " "):
            second, extra = _parse_phrase(tail[len(relation):].split(), caption)
            if extra:
                raise ValueError(f"caption {caption!r}: unexpected words after the second object: {' '.join(extra)}")
            return CaptionQuery(first, relation, second)
    raise ValueError(f"caption {caption!r}: expected 'left of', 'right of' or a slot phrase after the object")


def vocabulary() -> list[str]:
    """Every word the grammar can produce (for building the demo tokenizer)."""
    words = {"a", "an", "object", "left", "right", "of", "on", "the", "in", "middle"}
    words.update(SHAPES, COLOURS, SIZES)
    return sorted(words)


# --------------------------------------------------------------------------- writing
def scene_view(split: str, index: int, corrupt_fraction: float = 0.0, image_size: int = IMAGE_SIZE
               ) -> tuple[Scene, str | None, float, Image.Image]:
    """Scene ``index`` of a split as ``write_split`` renders it: (scene, corruption, strength, image).

    With probability ``corrupt_fraction`` (drawn from the scene's own seed, so the same scenes are
    corrupted whatever else is generated) the image gets a random corruption of uniform strength.
    """
    if not 0.0 <= corrupt_fraction <= 1.0:
        raise ValueError(f"corrupt_fraction {corrupt_fraction} is outside [0, 1]")
    scene = make_scene(split, index, image_size)
    rng = np.random.default_rng([SPLIT_SEEDS[split], index, 1])
    if rng.random() < corrupt_fraction:
        kind = str(rng.choice(CORRUPTIONS))
        strength = float(rng.uniform(0.0, 1.0))
        return scene, kind, strength, scene.corrupted(kind, strength)
    return scene, None, 0.0, scene.image


def true_pairs(scenes: list[Scene]) -> list[tuple[int, str, int]]:
    """Every (scene position, caption, caption level) where a caption of these scenes is true of a scene."""
    captions: dict[str, int] = {}
    for scene in scenes:
        for level, caption in enumerate(scene.captions):
            captions.setdefault(caption, level)
    parsed = [(caption, level, parse_caption(caption)) for caption, level in captions.items()]
    return [(n, caption, level) for n, scene in enumerate(scenes) for caption, level, query in parsed
            if query.holds_in(scene.objects)]


def write_split(folder: str | os.PathLike, split: str, n: int, corrupt_fraction: float = 0.0,
                progress: bool = False, level_repeats: tuple[int, ...] = (1, 1, 1, 1), matches: bool = False) -> Path:
    """Write ``n`` scenes as PNGs plus ``{split}.jsonl`` with rows of (image, caption).

    Each image gets ``level_repeats[level]`` rows per caption level, so a training order
    can favour the specific captions that carry most of the retrieval signal while every
    batch still holds general ones. A ``corrupt_fraction`` of the images get a random
    corruption of uniform strength (their captions still describe the scene, so corrupted
    images are ambiguous ones). Rows carry image (relative path), caption, level, scene,
    broader (the image's captions of lower levels), corruption, strength. Returns the manifest.

    ``matches`` also writes ``{split}-matches.jsonl``: a multi-positive manifest listing every
    (image, caption, level) where one of the split's captions is true of one of its images
    (the many-to-many truth, e.g. for ``prolip-retrieval calibrate``).
    """
    if not 0.0 <= corrupt_fraction <= 1.0:
        raise ValueError(f"corrupt_fraction {corrupt_fraction} is outside [0, 1]")
    if len(level_repeats) != LEVELS or min(level_repeats) < 0 or not sum(level_repeats):
        raise ValueError(f"level_repeats needs {LEVELS} non-negative counts, not all zero; got {level_repeats}")
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{split}.jsonl"
    indices = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"writing {split}", unit="scene")
    scenes = []
    with _atomic(manifest) as out:
        for index in indices:
            scene, kind, strength, image = scene_view(split, index, corrupt_fraction)
            scenes.append(scene)
            relative = f"images/{scene.id}.png"
            image.save(folder / relative)
            for level, caption in enumerate(scene.captions):
                # every caption of a lower level describes the image more generally
                row = json.dumps({"image": relative, "caption": caption, "level": level, "scene": scene.id,
                                  "broader": list(scene.captions[:level]), "corruption": kind,
                                  "strength": round(strength, 4)})
                out.write((row + "\n") * level_repeats[level])
    if matches:
        with _atomic(folder / f"{split}-matches.jsonl") as out:
            for position, caption, level in true_pairs(scenes):
                out.write(json.dumps({"image": f"images/{scenes[position].id}.png", "caption": caption,
                                      "level": level}) + "\n")
    log.info("wrote %d %s scenes to %s", n, split, manifest)
    return manifest


class _atomic:
    """A text file written to a temporary name, fsynced and renamed into place on success."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")

    def __enter__(self):
        self.handle = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
        return self.handle

    def __exit__(self, kind, *rest) -> None:
        if kind is None:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        self.handle.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
