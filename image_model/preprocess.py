"""The image branch's views of a cleaned photo: the plain eval view and deterministic augmented views.

`eval_view` is the one transform of serving, evaluation and view 0 of the feature cache. Views
1..K-1 are random resized crops, flips and colour jitter drawn from a generator seeded by
(seed, view, image id) with the strengths of `Augmentation` (from `config.image`), so a cached view
can always be recomputed bit for bit. Views are uint8
[S, S, 3] arrays; `to_batch` turns a list of them into the network's input in one go (converting
photo by photo costs ~25x more on a busy 2-core machine).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from listings.config import Config

CROP_RATIO = (3 / 4, 4 / 3)  # a random crop's width over height, as torchvision's RandomResizedCrop


@dataclass(frozen=True)
class Augmentation:
    """How the augmented views are drawn: `config.image`'s crop_scale, jitter and hue_jitter, and the seed."""

    seed: int
    crop_scale: tuple[float, ...]
    jitter: float
    hue_jitter: float

    @classmethod
    def of(cls, config: Config) -> "Augmentation":
        image = config.image
        return cls(config.data.seed, tuple(image.crop_scale), image.jitter, image.hue_jitter)

    def key(self) -> str:
        """A short name for the strengths: part of a cached augmented view's name, so changing one
        computes the views again rather than reusing the old ones."""
        strengths = {name: value for name, value in asdict(self).items() if name != "seed"}
        return hashlib.sha256(json.dumps(strengths, sort_keys=True).encode()).hexdigest()[:8]


def to_batch(views: list[np.ndarray]) -> torch.Tensor:
    """uint8 [S, S, 3] views → float [B, 3, S, S] in [0, 1], channels-last in memory."""
    return torch.from_numpy(np.stack(views)).permute(0, 3, 1, 2).float().div_(255.0)


def eval_view(image: Image.Image, input_size: int) -> np.ndarray:
    """The whole (letterboxed) photo resized to the network's input size."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert would copy an RGB image
    return np.asarray(rgb.resize((input_size, input_size), Image.Resampling.BILINEAR), dtype=np.uint8)


def view_generator(image_id: str, view: int, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{view}:{image_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def augmented_view(image: Image.Image, input_size: int, rng: np.random.Generator, augmentation: Augmentation) -> np.ndarray:
    """A random resized crop, a coin-flip mirror and colour jitter, all drawn from `rng`."""
    from torchvision.transforms.functional import adjust_hue  # training only: keeps 1.8 s of imports out of serving

    image = image.convert("RGB")
    left, top, width, height = _crop_box(image.width, image.height, rng, augmentation.crop_scale)
    image = image.resize((input_size, input_size), Image.Resampling.BILINEAR, box=(left, top, left + width, top + height))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for i in rng.permutation(len(enhancers)):
        image = enhancers[i](image).enhance(rng.uniform(1 - augmentation.jitter, 1 + augmentation.jitter))
    image = adjust_hue(image, float(rng.uniform(-augmentation.hue_jitter, augmentation.hue_jitter)))
    return np.asarray(image, dtype=np.uint8)


def make_view(image: Image.Image, input_size: int, view: int, image_id: str, augmentation: Augmentation) -> np.ndarray:
    """View 0 is the eval view; view k > 0 the k-th augmented view of this image."""
    if view == 0:
        return eval_view(image, input_size)
    return augmented_view(image, input_size, view_generator(image_id, view, augmentation.seed), augmentation)


def _crop_box(width: int, height: int, rng: np.random.Generator, scale: tuple[float, ...]) -> tuple[int, int, int, int]:
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    return 0, 0, width, height
