"""The image branch's views of a cleaned photo: the plain eval view and deterministic augmented views.

`eval_view` is the one transform of serving, evaluation and view 0 of the feature cache. Views
1..K-1 are random resized crops, flips and colour jitter drawn from a generator seeded by
(seed, view, image id), so a cached view can always be recomputed bit for bit. Views are uint8
[S, S, 3] arrays; `to_batch` turns a list of them into the network's input in one go (converting
photo by photo costs ~25x more on a busy 2-core machine).
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

CROP_SCALE = (0.35, 1.0)  # fraction of the image area a random crop keeps
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.3  # brightness, contrast and saturation factors in [1 - JITTER, 1 + JITTER]
HUE_JITTER = 0.04


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


def augmented_view(image: Image.Image, input_size: int, rng: np.random.Generator) -> np.ndarray:
    """A random resized crop, a coin-flip mirror and colour jitter, all drawn from `rng`."""
    from torchvision.transforms.functional import adjust_hue  # training only: keeps 1.8 s of imports out of serving

    image = image.convert("RGB")
    left, top, width, height = _crop_box(image.width, image.height, rng)
    image = image.resize((input_size, input_size), Image.Resampling.BILINEAR, box=(left, top, left + width, top + height))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for i in rng.permutation(len(enhancers)):
        image = enhancers[i](image).enhance(rng.uniform(1 - JITTER, 1 + JITTER))
    image = adjust_hue(image, float(rng.uniform(-HUE_JITTER, HUE_JITTER)))
    return np.asarray(image, dtype=np.uint8)


def make_view(image: Image.Image, input_size: int, view: int, image_id: str, seed: int) -> np.ndarray:
    """View 0 is the eval view; view k > 0 the k-th augmented view of this image."""
    if view == 0:
        return eval_view(image, input_size)
    return augmented_view(image, input_size, view_generator(image_id, view, seed))


def _crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    return 0, 0, width, height
