"""The image branch trained on a CUDA GPU and on the CPU, side by side, then served from the CPU.

    python -m scripts.gpu_check --data DIR --work DIR [--per-class 60]

On a machine with a GPU: prepares a small copy of the dataset (`--per-class` listings with photos
per root category; 0 uses DIR as it is), runs `fbm train image` with `image.device=cuda` and then
`cpu` into `<work>/cuda` and `<work>/cpu`, and checks that the GPU-trained branch, loaded on the CPU
the way the API loads it, reproduces its own training export on 64 photos. Prints one JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from listings.config import Config
from listings.data import dataset_photos, photo_path
from listings.images import clean_photo
from listings.subset import subset_dataset
from scripts.cli import run_stage

DEVICES = ("cuda", "cpu")
PARITY_PHOTOS = 64


def train_on(device: str, data_dir: Path, artifacts: Path) -> dict:
    config = Config()
    config.data.data_dir, config.data.artifacts_dir = str(data_dir), str(artifacts)
    config.image.device = device
    run_stage("prepare", config)
    summary = run_stage("image", config)
    return {
        "device": summary["device"],
        "val_product": summary["branch"]["val"]["product"],
        "test_product": summary["branch"]["test"]["product"],
        "cache_fill_images_per_s": summary["timing"]["cache_fill_images_per_s"],
        "epoch_seconds_on_cache": summary["timing"]["epoch_seconds_on_cache"],
        "stage_wall_time_s": summary["stage_wall_time_s"],
    }


def served_on_cpu_matches_export(data_dir: Path, artifacts: Path) -> dict:
    """The branch as the API loads it (CPU, from the saved state_dict) against the training export."""
    from combined_model.features import load_export
    from image_model.inference import EXPORT_FILE, ImageBranch

    config = Config()
    config.data.data_dir, config.data.artifacts_dir = str(data_dir), str(artifacts)
    export = load_export(config.paths.image_model / EXPORT_FILE, "image_ids", "fbm train image")
    branch = ImageBranch.load(config)
    ids = [str(image_id) for image_id in export["image_ids"][:PARITY_PHOTOS]]
    photos = []
    for image_id in ids:
        with open(photo_path(dataset_photos(data_dir), image_id), "rb") as handle:
            photos.append(clean_photo(handle, config.data.image_size, config.data.max_image_pixels))
    embeddings, probs = branch.embed_and_predict(photos)
    trained_embeddings, trained_probs = export["embeddings"][: len(ids)], export["probs"][: len(ids)]
    cosine = (embeddings * trained_embeddings).sum(1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(trained_embeddings, axis=1)
    return {
        "served_on": str(next(branch.network.parameters()).device),
        "photos": len(ids),
        "same_top_class": float(np.mean(probs.argmax(1) == trained_probs.argmax(1))),
        "min_embedding_cosine": float(cosine.min()),
        "max_probability_difference": float(np.abs(probs - trained_probs).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="a dataset in the marketplace format")
    parser.add_argument("--work", required=True, type=Path, help="a scratch directory for data copies and artifacts")
    parser.add_argument("--per-class", type=int, default=60, help="listings per root category to copy (default %(default)s; 0: use --data as it is)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU here; run it on a machine with one", file=sys.stderr)
        return 2
    data_dir = subset_dataset(args.data, args.work / "data", args.per_class) if args.per_class else args.data
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": {}}
    for device in DEVICES:
        report["runs"][device] = train_on(device, data_dir, args.work / device)
    report["cuda_trained_served_on_cpu"] = served_on_cpu_matches_export(data_dir, args.work / "cuda")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
