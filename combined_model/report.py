"""The evaluation report: Markdown with a confusion matrix per model, per-class F1 bars, a
modality comparison chart and the training curves of every stage."""
from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from listings.artifacts import CURVES_FILE
from listings.config import Config
from listings.data import shorten, without_controls
from listings.metrics import figure, plural
from listings.plots import pyplot

plt = pyplot()  # this module only draws: matplotlib loads with it


CONFIDENT_MISTAKES = 10
_MARKDOWN_MARK = re.compile(r"[\\`*_\[\]()!~|#]")


def write_report(config: Config, result: dict, predictions: pd.DataFrame, out_dir: Path) -> Path:
    models = list(result["models"])
    _comparison_chart(result, models, out_dir / "modality_comparison.png")
    _confusion_grid(result, models, out_dir / "confusion_matrices.png")
    _per_class_f1(result, models, out_dir / "per_class_f1.png")
    curves = _collect_curves(config, out_dir)

    lines = [
        "# Evaluation report",
        "",
        f"Data: {_cell(result['source'])} — {plural(result['n_products'], 'product')}, {plural(result['n_images'], 'photo')}.",
        "",
        "| model | accuracy | macro-F1 | top-3 | photo-level accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in models:
        m, img = result["models"][name], result["per_image"][name]
        label = f"**{name}** (served)" if name == result["served"] else name
        lines.append(f"| {label} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['top3']:.3f} | {figure(img['accuracy'])} |")
    lines += [
        "",
        f"Either the image or the text branch is right on {result['either_branch_right']:.3f} of the listings: "
        "no fusion that picks between the two branches can score above that. One of image, text and the TF-IDF model "
        f"(late fusion's inputs) is right on {result['any_late_input_right']:.3f}.",
    ]
    lines += [line for warning in result.get("warnings", []) for line in ("", f"**Warning:** {warning}.")]
    for key, what in (
        ("unknown_categories", "Listings skipped for an unknown category"),
        ("rows_dropped", "CSV rows left out"),
        ("skipped_images", "Photos that could not be used, by reason (their listings were scored on what was left)"),
    ):
        if result.get(key):
            lines += ["", f"{what}: " + ", ".join(f"{_cell(name)} {count}" for name, count in result[key].items())]
    lines += [
        "",
        "![modality comparison](modality_comparison.png)",
        "",
        "## Confusion matrices (rows: true category, columns: predicted)",
        "",
        "![confusion matrices](confusion_matrices.png)",
        "",
        "## Per-class F1",
        "",
        "![per-class F1](per_class_f1.png)",
        "",
        *_confident_mistakes(predictions, result["served"]),
        "## Training curves and the word vectors",
        "",
    ]
    lines += [f"![{name}]({file})" for name, file in curves] or ["(no training curves found)"]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _confident_mistakes(predictions: pd.DataFrame, served: str) -> list[str]:
    """The served model's wrong answers it was surest of, as a Markdown section: often a listing
    filed under a category its photo and text do not suggest, sometimes the model's blind spot."""
    wrong = predictions[~predictions["served_correct"]].sort_values("served_confidence", ascending=False, kind="stable")
    lines = [
        f"## The served model's most confident mistakes ({len(wrong):,} of {len(predictions):,} listings wrong)",
        "",
        "Every listing's category and each model's answer are in [predictions.csv](predictions.csv).",
        "",
    ]
    if not len(wrong):
        return lines
    lines += [
        f"| product id | title | category | {served} answered | its probability | of the category | photos scored |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for row in wrong.head(CONFIDENT_MISTAKES).itertuples():
        cells = (row.product_id, shorten(row.title, 80), row.root, getattr(row, served))
        numbers = f"{row.served_confidence:.3f} | {row.served_p_root:.3f} | {row.photos_scored}"
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + f" | {numbers} |")
    return lines + [""]


def _cell(text: str) -> str:
    """A seller's `text` as literal text in Markdown, table cells included: on one line, its HTML
    (`<img …>`, `&lt;`) and Markdown (`**`, `[link](…)`, `![image](…)`, `|`) shown, not rendered."""
    text = without_controls(str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_MARK.sub(r"\\\g<0>", text)


def _comparison_chart(result: dict, models: list[str], path: Path) -> None:
    x = np.arange(len(models))
    fig, ax = plt.subplots(figsize=(9, 4))
    for offset, metric, label in ((-0.2, "accuracy", "accuracy"), (0.2, "macro_f1", "macro-F1")):
        values = [result["models"][m][metric] for m in models]
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)  # as the table prints them
    ax.set_xticks(x, models, rotation=20)
    ax.set(ylim=(0, 1), title="Product-level accuracy and macro-F1 by model")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _confusion_grid(result: dict, models: list[str], path: Path) -> None:
    """One confusion matrix per model, each row (a true category) as shares of its products, with
    the row's product count beside its name and a shared colour scale."""
    classes = result["classes"]
    cols = 2
    rows = int(np.ceil(len(models) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(9 * cols, 8 * rows))
    for ax, name in zip(np.ravel(axes), models):
        matrix = np.array(result["confusion"][name], dtype=float)
        normalised = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
        image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{name} (accuracy {result['models'][name]['accuracy']:.3f})", fontsize=11)
        ax.set_xticks(range(len(classes)), [_wrapped(c) for c in classes], rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), category_labels(classes, matrix.sum(axis=1), _wrapped), fontsize=7)  # each model's own products
        ax.set(xlabel="predicted category", ylabel="true category (products)")
    for ax in np.ravel(axes)[len(models) :]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 0.93, 0.97))
    fig.colorbar(image, cax=fig.add_axes((0.945, 0.3, 0.012, 0.4)), label="share of the true category's products")
    fig.suptitle("Confusion matrices, product level: each row sums to 1", fontsize=13)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def category_labels(classes: list[str], counts: Iterable[float], style: Callable[[str], str] = str) -> list[str]:
    """Each category name (through `style`) with its product count."""
    return [f"{style(name)} ({int(n)})" for name, n in zip(classes, counts)]


def _wrapped(name: str, width: int = 22) -> str:
    """A category name on lines of at most `width` characters, whole words kept."""
    return "\n".join(textwrap.wrap(name, width)) or name


def _per_class_f1(result: dict, models: list[str], path: Path) -> None:
    classes = result["classes"]
    y = np.arange(len(classes))
    height = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(classes) + 1.5))
    for i, name in enumerate(models):
        ax.barh(y + i * height, [result["per_class"][name][c]["f1"] for c in classes], height=height, label=name)
    support = [result["per_class"][models[0]][c]["support"] for c in classes]  # every product of the category, answered or not: the same for every model
    ax.set_yticks(y + 0.4 - height / 2, category_labels(classes, support), fontsize=7)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="F1", title="Per-class F1, product level (products in the category)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _collect_curves(config: Config, out_dir: Path) -> list[tuple[str, str]]:
    paths = config.paths
    found = []
    for stage, directory in (("image", paths.image_model), ("text", paths.text_model), ("combined", paths.combined_model)):
        source = directory / CURVES_FILE
        if source.exists():
            target = out_dir / f"curves_{stage}.png"
            shutil.copyfile(source, target)
            found.append((f"{stage} training curves", target.name))
    from text_model.train import TSNE_FILE  # the text stage's map of its word vectors

    if (paths.text_model / TSNE_FILE).exists():
        shutil.copyfile(paths.text_model / TSNE_FILE, out_dir / TSNE_FILE)
        found.append(("word2vec: the text branch's most frequent words, neighbours in meaning close together", TSNE_FILE))
    return found
