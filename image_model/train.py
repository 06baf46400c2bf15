"""`fbm train image`: transfer learning on the listing photos from a cache of frozen-trunk features.

1. The frozen trunk runs once per image (view 0, the plain eval view) and once per augmented view of
   each training image; its fp16 output is cached on disk and reused by later runs (`cache.py`).
2. Only the tail, the 256-d embedding and the classifier train, on random cached views, with AdamW,
   a warm-up + cosine schedule, label smoothing and early stopping on validation product accuracy.
3. Figures per photo and per product (mean of its photos' probabilities) on val and test, for the
   branch and the HOG + linear-SVM baseline; the trunk throughput and the speed-up of an epoch on
   the cache over one that runs the trunk (timed on a sample in the same run).
4. Artifacts in `config.paths.image_model`: model.pt (state_dict), model.json, curves.png,
   image_embeddings.npz (every usable photo: image_ids, embeddings, probs), hog_svm.npz/.json.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm import tqdm

from image_model.backbones import (
    RANDOM_INIT,
    cached_resnet50_weights,
    hub_checkpoint,
    lite0_weights_file,
    pretrained_state_dict,
    resnet50_weight_options,
    resolve_backbone,
)
from image_model.baseline import HogSvmBaseline, hog_features
from image_model.cache import PLAIN_VIEW, FeatureCache, FillStats, cache_key, fill_views, view_name
from image_model.inference import EXPORT_FILE, MODEL_FILE, SIDECAR_FILE
from image_model.model import Architecture, ImageNetwork, build_network, training_device
from image_model.preprocess import Augmentation, make_view, to_batch
from listings.artifacts import CURVES_FILE, SUMMARY_FILE, sha256_file
from listings.config import Config
from listings.data import photo_path
from listings.images import clean_image
from listings.metrics import figure, figure_pair, per_product, summarise
from listings.plots import plot_curves
from listings.prepare import load_prepared

NAIVE_SAMPLE = 256  # training images timed through the naive loop (trunk run every step)
EVAL_BATCH = 512
KEPT_RULE = "best validation product accuracy"  # how `fit` chooses the epoch it keeps, for the curves


@dataclass
class SplitData:
    """One split's photos: cached cut features and what each row is."""

    image_ids: list[str]
    labels: torch.Tensor  # [n] class index
    product_index: np.ndarray  # [n] row → index into `product_labels`
    product_labels: np.ndarray  # [products with a usable photo]
    features: torch.Tensor  # [views, n, *cut] fp16


# ---------------------------------------------------------------- entry points


@dataclass
class Training:
    """Everything `fit` and the reports need: the network, the filled cache and each split's data."""

    network: ImageNetwork
    device: torch.device
    weights_file: Path | None
    weights_sha: str
    classes: list[str]
    image_dir: Path
    photos: pd.DataFrame  # usable photos: image_id, product_id, label, split
    cache: FeatureCache
    fill: FillStats
    data: dict[str, SplitData]


def prepare_training(config: Config) -> Training:
    """Build the network from the backbone's weights, fill the trunk cache and gather the splits."""
    settings, seed = config.image, config.data.seed
    prepared = load_prepared(config, for_training=True)
    photos = prepared.images().drop_duplicates("image_id").reset_index(drop=True)

    backbone = resolve_backbone(settings.backbone, settings.random_init)
    state_dict, weights_file, weights_sha = _initial_weights(backbone, settings.random_init)
    torch.manual_seed(seed)
    architecture = Architecture(
        backbone, settings.trainable, settings.input_size, len(prepared.encoder), settings.embed_dim, settings.dropout, settings.precision
    )
    device = training_device(settings.device)
    network = build_network(architecture, state_dict).to(device)
    print(f"image branch: {backbone} ({weights_sha[:12]}), cut at {network.cut}, trainable {settings.trainable}, on {device}", file=sys.stderr)

    key = cache_key(backbone, weights_sha, settings.input_size, network.cut, settings.precision, config.data.image_size, device.type)
    cache = FeatureCache(config.paths.cache / "image_trunk" / key)
    digests = dict(zip(photos["image_id"], photos["image_digest"]))
    train_digests = {i: digests[i] for i in photos.loc[photos["split"] == "train", "image_id"]}
    views = {0: digests, **{k: train_digests for k in range(1, settings.views)}}
    augmentation = Augmentation.of(config)
    fill = fill_views(cache, network, prepared.image_dir, views, config.data.image_size, augmentation, settings.trunk_batch_size, config.data.loader_threads)
    photos = photos[~photos["image_id"].isin(fill.skipped)].reset_index(drop=True)
    if fill.skipped:
        print(f"image branch: skipped {len(fill.skipped)} photo(s) that failed to load: {fill.skipped}", file=sys.stderr)

    data = {split: _split_data(cache, photos[photos["split"] == split], settings.views if split == "train" else 1, augmentation) for split in ("train", "val", "test")}
    if len(data["train"].image_ids) == 0 or len(data["val"].image_ids) == 0:
        raise ValueError("the image branch needs usable photos in the train and val splits")
    return Training(network, device, weights_file, weights_sha, list(prepared.encoder.classes), prepared.image_dir, photos, cache, fill, data)


def train_image(config: Config) -> dict:
    """Train the image branch and the HOG-SVM baseline; write every artifact; return the figures."""
    start = time.perf_counter()
    settings = config.image
    run = prepare_training(config)
    network, data, fill, photos = run.network, run.data, run.fill, run.photos
    history, best_epoch, initial_val_loss = fit(network, data["train"], data["val"], config)
    naive = time_naive_loop(network, run.image_dir, data["train"], config)
    branch = {split: score_split(predict_features(network, data[split].features[0])[2], data[split]) for split in ("val", "test")}
    network.cpu()  # exported and saved from the CPU, where it is served

    out_dir = config.paths.image_model
    out_dir.mkdir(parents=True, exist_ok=True)
    all_ids = photos["image_id"].tolist()
    export = export_embeddings(network, run.cache.gather(PLAIN_VIEW, all_ids), all_ids, out_dir / EXPORT_FILE)
    baseline = train_baseline(config, run.image_dir, photos, run.classes)

    train_epoch_s = float(np.median([h["train_seconds"] for h in history]))
    timing = {
        "trunk_images_per_s": naive["trunk_images_per_s"],
        "cache_fill_images_per_s": _round(fill.images_per_s),
        "cache_fill_seconds": round(fill.seconds, 1),
        "trunk_passes_run": fill.computed,
        "cache_hit": fill.computed == 0,
        "epoch_seconds_on_cache": round(train_epoch_s, 2),
        "epoch_seconds_on_cache_with_validation": round(float(np.median([h["seconds"] for h in history])), 2),
        "naive_epoch_seconds_estimate": round(naive["seconds_per_image"] * len(data["train"].image_ids), 1),
        "naive_over_cache_epoch_ratio": round(naive["seconds_per_image"] * len(data["train"].image_ids) / train_epoch_s, 1),
    }
    summary = {
        "backbone": network.architecture.backbone,
        "weights_sha256": run.weights_sha,
        "device": str(run.device),
        "cut": network.cut,
        "trainable": settings.trainable,
        "input_size": settings.input_size,
        "views": settings.views,
        "photos": {split: len(d.image_ids) for split, d in data.items()},
        "products_with_photos": {split: len(d.product_labels) for split, d in data.items()},
        "skipped_photos": fill.skipped,
        "epochs_run": len(history),
        "initial_val_loss": round(initial_val_loss, 4),
        "best_val_loss": round(history[best_epoch - 1]["val_loss"], 4),
        "best_epoch": best_epoch,
        "branch": branch,
        "baseline": baseline,
        "timing": timing,
        "export": export,
    }
    _save(network, run.classes, run.weights_file, run.weights_sha, config, summary, history, out_dir)
    summary["wall_time_s"] = round(time.perf_counter() - start, 1)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    print(format_summary(summary), file=sys.stderr)
    return summary


def download_weights(config: Config) -> dict[str, str]:
    """`fbm weights`: fetch ResNet-50 ImageNet weights into the torch hub cache (the one network call).

    EfficientNet-Lite0's weights ship with its pip package; both files are listed with their sha256.
    """
    weights = resnet50_weight_options()[0]
    if cached_resnet50_weights() is None:
        try:
            weights.get_state_dict(progress=True, weights_only=True)
        except OSError as exc:  # no network (URLError is an OSError), a refused connection, a full disk
            raise ValueError(
                f"could not download ResNet-50's ImageNet weights from {weights.url} ({exc}). Run `fbm weights` where the "
                f"internet is reachable, or copy that file into {hub_checkpoint(weights).parent}/; meanwhile the image "
                "branch uses EfficientNet-Lite0, whose weights ship with its pip package"
            ) from exc
    resnet_file = hub_checkpoint(cached_resnet50_weights() or weights)
    files = {"resnet50": resnet_file, "efficientnet_lite0": lite0_weights_file()}
    report = {name: f"{path} sha256={sha256_file(path)}" for name, path in files.items()}
    print(f"image backbone weights (torch hub dir {torch.hub.get_dir()}); image.backbone={config.image.backbone}:", file=sys.stderr)
    for name, line in report.items():
        print(f"  {name}: {line}", file=sys.stderr)
    return report


# ---------------------------------------------------------------- training


def fit(network: ImageNetwork, train: SplitData, val: SplitData, config: Config) -> tuple[list[dict], int, float]:
    """Train tail + embedding + classifier on cached views; keep the best validation epoch's weights.

    Returns the per-epoch history, the best epoch and the validation loss before training.
    """
    settings = config.image
    generator = torch.Generator().manual_seed(config.data.seed)
    groups = network.trainable_parameters()
    optimizer = torch.optim.AdamW(
        [{"params": groups["tail"], "lr": settings.lr * settings.tail_lr_scale}, {"params": groups["head"], "lr": settings.lr}],
        weight_decay=settings.weight_decay,
    )
    n_views, n = train.features.shape[:2]
    steps_per_epoch = math.ceil(n / settings.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps_per_epoch, settings.epochs * steps_per_epoch))

    initial_loss = predict_features(network, val.features[0], val.labels)[0]
    history: list[dict] = []
    best = {"score": -1.0, "epoch": 0, "state": _trained_state(network)}
    for epoch in range(1, settings.epochs + 1):
        epoch_start = time.perf_counter()
        network.train()
        order = torch.randperm(n, generator=generator)
        views = torch.randint(0, n_views, (n,), generator=generator)
        total_loss, correct = 0.0, 0
        for step in tqdm(range(steps_per_epoch), desc=f"image epoch {epoch}", unit="batch", leave=False):
            rows = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            labels = train.labels[rows].to(network.device)
            _, logits = network.from_cut(train.features[views[rows], rows])
            loss = F.cross_entropy(logits, labels, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(rows)
            correct += int((logits.argmax(1) == labels).sum())
        train_seconds = time.perf_counter() - epoch_start

        val_loss, _, val_probs = predict_features(network, val.features[0], val.labels)
        val_scores = score_split(val_probs, val)
        record = {
            "epoch": epoch,
            "train_loss": total_loss / n,
            "train_accuracy": correct / n,
            "val_loss": val_loss,
            "val_accuracy": val_scores["image"]["accuracy"],
            "val_product_accuracy": val_scores["product"]["accuracy"],
            "train_seconds": train_seconds,
            "seconds": time.perf_counter() - epoch_start,
        }
        history.append(record)
        print(
            f"image epoch {epoch}: train loss {record['train_loss']:.3f} acc {record['train_accuracy']:.3f} | "
            f"val loss {val_loss:.3f} acc {record['val_accuracy']:.3f} product acc {record['val_product_accuracy']:.3f} | "
            f"{train_seconds:.1f} s",
            file=sys.stderr,
        )
        if record["val_product_accuracy"] > best["score"]:
            best = {"score": record["val_product_accuracy"], "epoch": epoch, "state": _trained_state(network)}
        elif epoch - best["epoch"] >= settings.patience:
            break
    network.load_state_dict(network.state_dict() | best["state"])
    network.eval()
    return history, best["epoch"], initial_loss


def _trained_state(network: ImageNetwork) -> dict[str, torch.Tensor]:
    """A copy of everything training changes (the frozen trunk is left out: it never does)."""
    return {name: tensor.detach().clone() for name, tensor in network.state_dict().items() if not name.startswith("trunk.")}


def _warmup_cosine(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.inference_mode()
def predict_features(network: ImageNetwork, features: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """(mean cross-entropy or nan, embeddings, probabilities) of cached cut features, in eval mode."""
    network.eval()
    embeddings, logits = [], []
    for start in range(0, len(features), EVAL_BATCH):
        embedding, logit = network.from_cut(features[start : start + EVAL_BATCH])
        embeddings.append(embedding)
        logits.append(logit)
    logit = torch.cat(logits) if logits else torch.zeros((0, network.architecture.n_classes))
    logit = logit.cpu()
    loss = float(F.cross_entropy(logit, labels)) if labels is not None and len(labels) else float("nan")
    embedding = torch.cat(embeddings).cpu() if embeddings else torch.zeros((0, network.architecture.embed_dim))
    return loss, embedding.numpy(), torch.softmax(logit, dim=1).numpy()


def time_naive_loop(network: ImageNetwork, image_dir: Path, train: SplitData, config: Config) -> dict:
    """Time training steps that load, augment and run the trunk every time, on a copy of the network.

    Returns the seconds per training image of that loop and the trunk's own throughput in it.
    """
    settings, augmentation = config.image, Augmentation.of(config)
    model = copy.deepcopy(network).train()
    groups = model.trainable_parameters()
    optimizer = torch.optim.AdamW(groups["tail"] + groups["head"], lr=settings.lr * 0.01)
    rng = np.random.default_rng(augmentation.seed)
    sample = rng.permutation(len(train.image_ids))[:NAIVE_SAMPLE]
    trunk_seconds, timed = 0.0, 0
    start = time.perf_counter()
    for offset in tqdm(range(0, len(sample), settings.batch_size), desc="naive loop timing", unit="batch", leave=False):
        rows = sample[offset : offset + settings.batch_size]
        pixels = []
        for row in rows:
            image_id = train.image_ids[row]
            image = clean_image(photo_path(image_dir, image_id), config.data.image_size)
            pixels.append(make_view(image, settings.input_size, int(rng.integers(settings.views)), image_id, augmentation))
        trunk_start = time.perf_counter()
        cut = model.cut_features(to_batch(pixels)).clone()
        if cut.is_cuda:
            torch.cuda.synchronize()  # time the trunk, not its launch
        trunk_seconds += time.perf_counter() - trunk_start
        _, logits = model.from_cut(cut)
        loss = F.cross_entropy(logits, train.labels[torch.from_numpy(rows)].to(model.device), label_smoothing=settings.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        timed += len(rows)
    seconds = time.perf_counter() - start
    return {"seconds_per_image": seconds / max(1, timed), "trunk_images_per_s": round(timed / trunk_seconds, 1) if trunk_seconds else None}


# ---------------------------------------------------------------- data, metrics, outputs


def _initial_weights(backbone: str, random_init: bool) -> tuple[dict | None, Path | None, str]:
    if random_init:
        return None, None, RANDOM_INIT
    state_dict, path = pretrained_state_dict(backbone)
    return state_dict, path, sha256_file(path)


def product_groups(photos: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's product (an index into the products) and each product's label."""
    products, product_index = np.unique(photos["product_id"].to_numpy(), return_inverse=True)
    product_labels = photos.groupby("product_id")["label"].first().reindex(products).to_numpy() if len(products) else np.zeros(0, np.int64)
    return product_index, product_labels


def _split_data(cache: FeatureCache, photos: pd.DataFrame, n_views: int, augmentation: Augmentation) -> SplitData:
    image_ids = photos["image_id"].tolist()
    product_index, product_labels = product_groups(photos)
    features = torch.stack([cache.gather(view_name(k, augmentation), image_ids) for k in range(n_views)])
    return SplitData(image_ids, torch.tensor(photos["label"].to_numpy(np.int64)), product_index, product_labels, features)


def scores(probs: np.ndarray, labels: np.ndarray, product_index: np.ndarray, product_labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Per photo and per product (mean of its photos' probabilities)."""
    product_probs = per_product(probs, product_index, len(product_labels))
    return {"image": summarise(labels, probs), "product": summarise(product_labels, product_probs)}


def score_split(probs: np.ndarray, data: SplitData) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of a split's photo probabilities, per photo and per product (the mean of its photos')."""
    return scores(probs, data.labels.numpy(), data.product_index, data.product_labels)


def export_embeddings(network: ImageNetwork, plain_features: torch.Tensor, image_ids: list[str], path: Path) -> dict:
    """The 256-d embedding and probabilities of every usable photo (plain view) for fusion and the index."""
    _, embeddings, probs = predict_features(network, plain_features)
    np.savez(path, image_ids=np.array(image_ids, dtype=str), embeddings=embeddings.astype(np.float32), probs=probs.astype(np.float32))
    return {"path": str(path), "photos": len(image_ids), "dim": int(embeddings.shape[1]) if len(embeddings) else network.architecture.embed_dim}


def train_baseline(config: Config, image_dir: Path, photos: pd.DataFrame, classes: list[str]) -> dict:
    """HOG + linear SVM on the same photos and split; C chosen on validation photos."""
    start = time.perf_counter()
    images = (clean_image(photo_path(image_dir, i), config.data.image_size) for i in tqdm(photos["image_id"], desc="HOG photos", unit="img"))
    features = hog_features(images, config.data.loader_threads)
    split = photos["split"].to_numpy()
    labels = photos["label"].to_numpy(np.int64)
    train, val = split == "train", split == "val"
    candidates = {c: HogSvmBaseline.fit(features[train], labels[train], classes, c, config.data.seed) for c in config.image.hog_svm_cs}
    val_accuracy = {c: float((m.proba_from_features(features[val]).argmax(1) == labels[val]).mean()) for c, m in candidates.items()}
    best_c = max(candidates, key=lambda c: (val_accuracy[c], -c))
    model = candidates[best_c]
    metrics: dict = {"c": best_c, "val_accuracy_by_c": {str(c): round(a, 4) for c, a in val_accuracy.items()}}
    for name in ("val", "test"):
        probs = model.proba_from_features(features[split == name])
        metrics[name] = scores(probs, labels[split == name], *product_groups(photos[split == name]))
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    model.save(config.paths.image_model, metrics)
    return metrics


def _save(
    network: ImageNetwork,
    classes: list[str],
    weights_file: Path | None,
    weights_sha: str,
    config: Config,
    summary: dict,
    history: list[dict],
    out_dir: Path,
) -> None:
    torch.save(network.state_dict(), out_dir / MODEL_FILE)
    sidecar = {
        "architecture": network.architecture.to_json(),
        "backbone": network.architecture.backbone,
        "weights_file": str(weights_file) if weights_file else None,
        "weights_sha256": weights_sha,
        "classes": list(classes),
        "preprocessing": {
            "clean": f"listings.images.clean_photo(source, size={config.data.image_size})",
            "clean_size": config.data.image_size,
            "eval_transform": "image_model.preprocess.eval_view: bilinear resize of the whole photo",
            "input_size": network.architecture.input_size,
            "normalisation": network.normalisation,
            "cut": network.cut,
            "cut_dtype": "float16",
        },
        "settings": asdict(config.image),
        "metrics": {"branch": summary["branch"], "baseline": {k: summary["baseline"][k] for k in ("val", "test")}},
        "best_epoch": summary["best_epoch"],
        "history": history,
        "export": EXPORT_FILE,
    }
    (out_dir / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2))
    plot_curves(
        history,
        out_dir / CURVES_FILE,
        "Image branch",
        curve_labels(summary["products_with_photos"]["val"]),
        kept=summary["best_epoch"],
        kept_rule=KEPT_RULE,
        train_loss_label="train (label-smoothed)",
    )


def curve_labels(val_products_with_photo: int) -> dict[str, str]:
    """The score curves' legend labels; product accuracy is over the validation products that have a photo."""
    return {
        "train_accuracy": "train photo accuracy (augmented)",
        "val_accuracy": "validation photo accuracy",
        "val_product_accuracy": f"validation product accuracy ({val_products_with_photo:,} with a photo)",
    }


def headline(summary: dict) -> str:
    """The branch in one line, for the end of `fbm train`."""
    test = summary["branch"]["test"]["product"]["accuracy"], summary["baseline"]["test"]["product"]["accuracy"]
    return f"test product accuracy {figure(test[0])} of the products with a photo (HOG + SVM {figure(test[1])})"


def format_summary(summary: dict) -> str:
    t = summary["timing"]
    lines = [
        f"image branch: {summary['backbone']} (sha256 {summary['weights_sha256'][:12]}), cut {summary['cut']}, "
        f"{summary['input_size']} px, {summary['views']} views, best epoch {summary['best_epoch']}/{summary['epochs_run']}",
        f"  trunk {t['trunk_images_per_s']} img/s; epoch on cache {t['epoch_seconds_on_cache']} s vs naive "
        f"{t['naive_epoch_seconds_estimate']} s (x{t['naive_over_cache_epoch_ratio']}); wall {summary.get('wall_time_s', '?')} s",
        "                      val photo      val product    test photo     test product   (accuracy / macro-F1)",
    ]
    for name, result in (("branch", summary["branch"]), ("HOG+SVM baseline", summary["baseline"])):
        cells = [figure_pair(result[s][level]) for s in ("val", "test") for level in ("image", "product")]
        lines.append(f"  {name:<18}  " + "    ".join(cells))
    return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
