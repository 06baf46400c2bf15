"""`fbm train combined`: fuse the frozen branches.

Trains the early-fusion classifier on the training split's cached branch embeddings (early
stopping on validation), picks the late fusion's weights on validation (image branch, text CNN
and the text stage's TF-IDF model, whose weight may be 0), and serves whichever of the two is
better on validation. Test figures are reported, never used for a choice.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from combined_model.features import BranchOutputs, check_branches_know, gather, load_branch_exports
from combined_model.fusion import EARLY, LATE, METRICS_KEY, FusionClassifier, LateWeights, combine
from combined_model.inference import MODEL_FILE, SIDECAR_FILE
from listings.artifacts import CURVES_FILE
from listings.config import Config, FusionConfig
from listings.metrics import figure, figure_pair, no_answer_where_absent, per_product, summarise
from listings.plots import plot_curves
from listings.prepare import load_prepared

def product_metrics(outputs: BranchOutputs, row_probs: np.ndarray) -> dict[str, float]:
    return summarise(outputs.labels, per_product(row_probs, outputs.product_index, len(outputs.labels)))


def fit_fusion(train: BranchOutputs, val: BranchOutputs, n_classes: int, config: Config) -> tuple[FusionClassifier, list[dict]]:
    """Minibatch training on the cached embeddings; keeps the epoch with the best validation accuracy."""
    cfg = config.fusion
    torch.manual_seed(config.data.seed)
    x, y = _tensors(train)
    x_val, y_val = _tensors(val)
    if len(x) == 0:
        raise ValueError("no training listing has both a photo and a text: the fusion has nothing to learn from")
    model = FusionClassifier(x.shape[1], n_classes, cfg.hidden, cfg.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict] = []
    best_acc, best_state, since_best = -1.0, None, 0
    for epoch in tqdm(range(cfg.epochs), desc="fusion", unit="epoch"):
        model.train()
        order = torch.randperm(len(x))
        total = 0.0
        for start in range(0, len(x), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            loss = loss_fn(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(x_val), y_val).item() if len(x_val) else float("nan")
        val_acc = product_metrics(val, fused_probs(model, val, EARLY, LateWeights()))["accuracy"]
        history.append({"epoch": epoch + 1, "train_loss": total / max(len(x), 1), "val_loss": val_loss, "val_accuracy": val_acc})
        if val_acc > best_acc:
            best_acc, best_state, since_best = val_acc, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, history


def _tensors(outputs: BranchOutputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows the fusion classifier is for: both modalities present."""
    both = outputs.has_image & outputs.has_text
    return torch.from_numpy(outputs.fusion_input[both]), torch.from_numpy(outputs.row_labels[both])


def fused_probs(model: FusionClassifier | None, outputs: BranchOutputs, method: str, late: LateWeights) -> np.ndarray:
    fusion = model.predict_proba(outputs.fusion_input) if (model is not None and method == EARLY) else None
    return combine(outputs.image_probs, outputs.text_probs, fusion, outputs.has_image, outputs.has_text, method, late, outputs.tfidf_probs)


def late_weight_grid(config: FusionConfig) -> list[LateWeights]:
    """Every mix on a `late_weight_step` grid of the simplex, each TF-IDF weight above 0 with every
    power of `tfidf_powers` (a weight of 0 with the first alone)."""
    step, powers = config.late_weight_step, config.tfidf_powers
    ticks = np.round(np.arange(0.0, 1.0 + step / 2, step), 6).tolist()  # plain floats, as the sidecar stores them
    grid = []
    for tfidf in ticks:
        for image in (tick for tick in ticks if tick <= 1.0 - tfidf + 1e-9):
            text = max(0.0, round(1.0 - tfidf - image, 6))
            for power in powers if tfidf else powers[:1]:
                grid.append(LateWeights(image, text, tfidf, float(power)))
    return grid


def choose_late_weights(val: BranchOutputs, config: FusionConfig) -> LateWeights:
    """The late-fusion mix with the best validation product accuracy; ties go to the least TF-IDF
    weight, then to image and text weights closest to each other, then to the lowest power."""

    def rank(late: LateWeights) -> tuple[float, ...]:
        accuracy = product_metrics(val, fused_probs(None, val, LATE, late))["accuracy"]
        return accuracy, -late.tfidf, -abs(late.image - late.text), -late.tfidf_power

    return max(late_weight_grid(config), key=rank)


def train_combined(config: Config) -> dict:
    start = time.perf_counter()
    prepared = load_prepared(config, for_training=True)
    check_branches_know(config, prepared.encoder.classes)
    n_classes = len(prepared.encoder)
    image_export, text_export = load_branch_exports(config)
    splits = {name: gather(prepared.split(name), image_export, text_export, n_classes) for name in ("train", "val", "test")}

    model, history = fit_fusion(splits["train"], splits["val"], n_classes, config)
    late = choose_late_weights(splits["val"], config.fusion)

    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for split in ("val", "test"):
        out = splits[split]
        metrics[split] = {
            "image": product_metrics(out, no_answer_where_absent(out.image_probs, out.has_image)),
            "text": product_metrics(out, no_answer_where_absent(out.text_probs, out.has_text)),
            "combined": product_metrics(out, fused_probs(model, out, EARLY, late)),
            "late_fusion": product_metrics(out, fused_probs(model, out, LATE, late)),
        }
    served = EARLY if metrics["val"]["combined"]["accuracy"] >= metrics["val"]["late_fusion"]["accuracy"] else LATE

    out_dir = config.paths.combined_model
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / MODEL_FILE)
    sidecar = {
        "classes": prepared.encoder.classes,
        "in_dim": int(splits["train"].fusion_input.shape[1]),
        "hidden": config.fusion.hidden,
        "dropout": config.fusion.dropout,
        "served_method": served,
        "late_weights": late.to_json(),
        "metrics": metrics,
        "history": history,
        "config": asdict(config.fusion),
    }
    (out_dir / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2))
    kept = max(history, key=lambda h: h["val_accuracy"])["epoch"]  # the first best, as `fit_fusion` kept it
    plot_curves(
        history, out_dir / CURVES_FILE, curves_title(served), {"val_accuracy": "validation (product)"}, kept=kept, kept_rule=KEPT_RULE
    )
    summary = {
        "served_method": served,
        "late_weights": late.to_json(),
        "epochs": len(history),
        "metrics": metrics,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    print(format_summary(summary), file=sys.stderr)
    return summary


KEPT_RULE = "best validation product accuracy"  # how `fit_fusion` chooses the epoch it keeps, for the curves
SERVED_WORDS = {LATE: "late fusion", EARLY: "early fusion (the fusion classifier)"}


def curves_title(served: str) -> str:
    """The training curves' title: they are the early-fusion classifier's, which late fusion, when it
    was better on validation, leaves unserved."""
    unserved = " (not served: late fusion was better on validation)" if served == LATE else ""
    return f"Early fusion (fusion classifier){unserved}"


def headline(summary: dict) -> str:
    """The stage in one line, for the end of `fbm train`."""
    method = summary["served_method"]
    return f"serving {SERVED_WORDS[method]}: test accuracy {figure(summary['metrics']['test'][METRICS_KEY[method]]['accuracy'])}"


def format_summary(summary: dict) -> str:
    """The fusion stage's figures, product level, as the branches' stages print theirs."""
    late = LateWeights.from_json(summary["late_weights"])
    served = SERVED_WORDS[summary["served_method"]]
    lines = [
        f"fusion: serving {served}, the better on validation; late-fusion weights {late.describe()}; "
        f"classifier {summary['epochs']} epochs; {summary['wall_time_s']} s",
        "                 val             test            (product accuracy / macro-F1)",
    ]
    for model in summary["metrics"]["val"]:
        cells = [figure_pair(summary["metrics"][split][model]) for split in ("val", "test")]
        lines.append(f"  {model:<13}  " + "     ".join(cells))
    return "\n".join(lines)


