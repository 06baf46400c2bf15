"""The trunk-feature cache: the frozen trunk's fp16 output per image and view, memory-mapped.

Layout: `<cache root>/image_trunk/<backbone>-<weights sha256[:16]>-<input size>px-<cut>-<precision>-bnfold-photos<clean form>-<clean size>/`
holds, per view, `<view>.ids.json` (the image id of each row, the digest of the photo file it was
computed from, and the name of the array file) and that `<view>-<token>.npy` (fp16 [n, *cut shape]). View 0 is the plain eval view; view k > 0 also
carries the augmentation seed in its name. Runs with the same key reuse the cache and compute only
the images it lacks, or holds from another file under the same id.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from image_model.model import ImageNetwork
from image_model.preprocess import Augmentation, make_view, to_batch
from listings.artifacts import write_atomic
from listings.config import CLEAN_IMAGES_FORM
from listings.data import photo_path
from listings.images import ImageError, clean_image


TRUNK_FORM = "bnfold"  # the trunk's batch norms folded into its convolutions: its output's last bits differ


def cache_key(backbone: str, weights_sha256: str, input_size: int, cut: str, precision: str, clean_size: int, device: str = "cpu") -> str:
    """Everything the features depend on but the photo itself (keyed per row by its digest). Features
    from a GPU differ from the CPU's in their last bits, so they are kept apart."""
    key = f"{backbone}-{weights_sha256[:16]}-{input_size}px-{cut}-{precision}-{TRUNK_FORM}-photos{CLEAN_IMAGES_FORM}-{clean_size}"
    return key + ("" if device == "cpu" else f"-{device}")


PLAIN_VIEW = "view0"  # the eval view, the same whatever the augmentation


def view_name(view: int, augmentation: Augmentation) -> str:
    """The plain view's name; an augmented view's names its seed and its strengths."""
    return PLAIN_VIEW if view == 0 else f"view{view}-seed{augmentation.seed}-{augmentation.key()}"


@dataclass
class FillStats:
    computed: int = 0  # trunk passes run
    seconds: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)  # image id → reason

    @property
    def images_per_s(self) -> float | None:
        return self.computed / self.seconds if self.computed and self.seconds > 0 else None


class FeatureCache:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _rows_path(self, name: str) -> Path:
        return self.directory / f"{name}.ids.json"

    def read(self, name: str) -> tuple[list[str], list[str], np.ndarray | None]:
        """(row ids, their photo digests, memory-mapped fp16 features); empty when the view is absent
        or inconsistent (or written before digests were kept)."""
        rows_path = self._rows_path(name)
        rows = json.loads(rows_path.read_text()) if rows_path.exists() else None
        if not isinstance(rows, dict) or not {"array", "ids", "digests"} <= rows.keys() or len(rows["ids"]) != len(rows["digests"]):
            return [], [], None
        array_path = self.directory / rows["array"]
        if not array_path.exists():
            return [], [], None
        array = np.load(array_path, mmap_mode="r", allow_pickle=False)
        if array.shape[0] != len(rows["ids"]) or array.dtype != np.float16:
            return [], [], None
        return rows["ids"], rows["digests"], array

    def missing(self, name: str, digests: dict[str, str]) -> list[str]:
        """The ids of `digests` (image id → digest of its photo now) without a row computed from that photo."""
        ids, cached_digests, _ = self.read(name)
        cached = dict(zip(ids, cached_digests))
        return [i for i, digest in digests.items() if cached.get(i) != digest]

    def add(self, name: str, new_ids: list[str], new_rows: np.ndarray, new_digests: list[str]) -> None:
        """Append rows to a view, replacing the rows of the same ids. The rows go to a new array file;
        renaming the ids file, which names that array, commits them (a crash before leaves the view
        as it was), and the superseded array is deleted after."""
        old_ids, old_digests, old = self._read_kept(name, set(new_ids))
        self.directory.mkdir(parents=True, exist_ok=True)
        rows_path = self._rows_path(name)
        array_name = f"{name}-{uuid.uuid4().hex[:12]}.npy"
        shape = (len(old_ids) + len(new_ids), *new_rows.shape[1:])
        merged = np.lib.format.open_memmap(self.directory / array_name, mode="w+", dtype=np.float16, shape=shape)
        for start in range(0, len(old_ids), 1024):  # in chunks: a view can be larger than memory
            stop = min(start + 1024, len(old_ids))
            merged[start:stop] = old(start, stop)
        merged[len(old_ids) :] = new_rows
        merged.flush()
        del merged
        write_atomic(rows_path, json.dumps({"array": array_name, "ids": old_ids + list(new_ids), "digests": old_digests + list(new_digests)}))
        for stale in self.directory.glob(f"{name}-*.npy"):  # the superseded array, and any an interrupted add left
            if stale.name != array_name:
                stale.unlink()

    def remove_superseded(self, name: str) -> None:
        """Delete the views an augmented view `name` replaces: the same view and seed drawn at other
        strengths, or named before names carried them (each as large as the training photos' features)."""
        stem = name.rsplit("-", 1)[0]  # view<k>-seed<s>
        for rows_path in self.directory.glob(f"{stem}*.ids.json"):
            old = rows_path.name.removesuffix(".ids.json")
            if old != name and re.fullmatch(rf"{re.escape(stem)}(-[0-9a-f]{{8}})?", old):
                for array in self.directory.glob(f"{old}-*.npy"):
                    if re.fullmatch(rf"{re.escape(old)}-[0-9a-f]{{12}}\.npy", array.name):
                        array.unlink()
                rows_path.unlink()

    def _read_kept(self, name: str, replaced: set[str]) -> tuple[list[str], list[str], Callable[[int, int], np.ndarray]]:
        """The rows of a view whose ids are not in `replaced`: ids, digests, and a reader of rows [a, b) of them."""
        ids, digests, array = self.read(name)
        keep = np.array([i for i, image_id in enumerate(ids) if image_id not in replaced], dtype=np.int64)
        return [ids[i] for i in keep], [digests[i] for i in keep], lambda a, b: array[keep[a:b]]

    def gather(self, name: str, image_ids: list[str]) -> torch.Tensor:
        """fp16 features of `image_ids` (all must be cached), in that order, loaded into memory."""
        if not image_ids:
            return torch.empty((0,), dtype=torch.float16)
        ids, _, array = self.read(name)
        row = {image_id: i for i, image_id in enumerate(ids)}
        absent = [image_id for image_id in image_ids if image_id not in row]
        if array is None or absent:
            raise KeyError(f"{len(absent) if array is not None else len(image_ids)} photo(s) not in the feature cache's view {name!r}, e.g. {(absent or image_ids)[0]!r}")
        index = np.array([row[i] for i in image_ids], dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(array[index]))


def fill_views(
    cache: FeatureCache,
    network: ImageNetwork,
    image_dir: Path,
    views: dict[int, dict[str, str]],
    clean_size: int,
    augmentation: Augmentation,
    batch_size: int,
    loaders: int = 2,
) -> FillStats:
    """Run the trunk on every (view, image) the cache lacks; images that fail to load are skipped.
    `views` maps each view to the images it needs: image id → digest of its photo file (`fbm
    prepare`'s), so a photo replaced under the same id is computed again.

    `loaders` threads decode and augment the next batches while the trunk runs the current one
    (PIL releases the GIL), so the trunk does not wait on JPEG decoding."""
    stats = FillStats()
    input_size = network.architecture.input_size
    with ThreadPoolExecutor(max(1, loaders), thread_name_prefix="fbm-views") as pool:
        for view, digests in views.items():
            name = view_name(view, augmentation)
            if view:
                cache.remove_superseded(name)
            todo = [i for i in cache.missing(name, digests) if i not in stats.skipped]
            if not todo:
                continue
            done_ids, rows = [], []
            start = time.perf_counter()
            batches = [todo[offset : offset + batch_size] for offset in range(0, len(todo), batch_size)]
            pending = deque(pool.submit(_load_views, ids, image_dir, clean_size, input_size, view, augmentation) for ids in batches[: loaders + 1])
            progress = tqdm(total=len(todo), desc=f"trunk {name}", unit="img")
            for number in range(len(batches)):
                batch_ids, pixels, skipped = pending.popleft().result()
                if number + len(pending) + 1 < len(batches):
                    pending.append(pool.submit(_load_views, batches[number + len(pending) + 1], image_dir, clean_size, input_size, view, augmentation))
                stats.skipped |= skipped
                if pixels:
                    rows.append(network.cut_features(to_batch(pixels)).cpu().contiguous().numpy())
                    done_ids += batch_ids
                progress.update(len(batches[number]))
            progress.close()
            stats.seconds += time.perf_counter() - start
            stats.computed += len(done_ids)
            if done_ids:
                cache.add(name, done_ids, np.concatenate(rows), [digests[i] for i in done_ids])
    return stats


def _load_views(
    image_ids: list[str], image_dir: Path, clean_size: int, input_size: int, view: int, augmentation: Augmentation
) -> tuple[list[str], list[np.ndarray], dict[str, str]]:
    """(ids loaded, their input views, {id: reason} of those that failed to load)."""
    loaded, pixels, skipped = [], [], {}
    for image_id in image_ids:
        try:
            image = clean_image(photo_path(image_dir, image_id), clean_size)
        except ImageError as exc:
            skipped[image_id] = exc.reason
            continue
        loaded.append(image_id)
        pixels.append(make_view(image, input_size, view, image_id, augmentation))
    return loaded, pixels, skipped
