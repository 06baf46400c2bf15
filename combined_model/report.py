"""The evaluation report: Markdown with when and from which trained models it was made, a key to
the models, a modality comparison chart, a confusion matrix per model, per-class F1 bars, the
served model's most confident mistakes, the retrieval figures where `fbm index --evaluate` wrote
them, and the training curves of every stage."""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from combined_model.fusion import LateWeights
from listings.artifacts import CURVES_FILE
from listings.config import Config
from listings.data import shorten, without_controls
from listings.metrics import figure, plural
from listings.plots import OKABE_ITO, pyplot

plt = pyplot()  # this module only draws: matplotlib loads with it


CONFIDENT_MISTAKES = 10
_MARKDOWN_MARK = re.compile(r"[\\`*_\[\]()!~|#]")
SHARE_WRITTEN = 0.03  # a confusion matrix cell shows its share from this share up
PHOTO_MODELS = ("image", "hog_svm_baseline")  # they answer only the products with a photo
SERVED_COLOUR = OKABE_ITO["black"]
# the other models' colours in turn: Okabe–Ito less its black (the served model's), its faint yellow last
OTHER_COLOURS = tuple(OKABE_ITO[name] for name in ("orange", "sky blue", "green", "blue", "vermilion", "purple", "yellow"))
MODEL_KEY = {
    "image": "the image branch: a CNN over each photo, a product's photos' probabilities averaged",
    "text": "the text branch: a text CNN over word2vec vectors of the title and description",
    "combined": "early fusion: a classifier over both branches' embeddings",
    "late_fusion": "late fusion: a weighted mean of the image branch's, the text CNN's and the TF-IDF model's probabilities",
    "tfidf_baseline": "a baseline on the text: TF-IDF of words and character n-grams, and a linear SVM",
    "hog_svm_baseline": "a baseline on the photos: HOG features and a linear SVM, a product's photos averaged",
}


def write_report(config: Config, result: dict, predictions: pd.DataFrame, out_dir: Path) -> Path:
    models = list(result["models"])
    _comparison_chart(result, models, out_dir / "modality_comparison.png")
    _confusion_grid(result, models, out_dir / "confusion_matrices.png")
    _per_class_f1(result, models, out_dir / "per_class_f1.png")
    curves = _collect_curves(config, out_dir)

    lines = [
        "# Evaluation report",
        "",
        generation_line(result),
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
    lines += ["", *model_key(result, models)]
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
        *retrieval_section(out_dir),
        "## Training curves and the word vectors",
        "",
    ]
    lines += [f"![{name}]({file})" for name, file in curves] or ["(no training curves found)"]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def generation_line(result: dict) -> str:
    """When the report was made and from which trained models: a stale report shows itself."""
    versions = ", ".join(f"{name} `{version}`" for name, version in result["model_versions"].items())
    return f"Generated {result['generated_at']} (UTC) from the trained models {versions} (the first 12 hex digits of each weights file's SHA-256)."


def model_key(result: dict, models: list[str]) -> list[str]:
    """What each model of the table is, which one is served, and what its last column counts."""
    weights = f"; weights chosen on validation: {LateWeights.from_json(result['late_weights']).describe()}"
    lines = [f"- **{name}**: {MODEL_KEY[name]}{weights if name == 'late_fusion' else ''}." for name in models]
    return [
        "Models:",
        "",
        *lines,
        "",
        f"**{result['served']}** is served (`/combined` answers with it): of early and late fusion, the one more accurate on validation. "
        "Photo-level accuracy counts each photo once: a product with three photos counts three times, and a text model's "
        "answer for a product counts once per photo of it; products without a photo are not in it.",
    ]


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
        f"| product id | title | true category | {served} answered | confidence in its answer | probability of the true category | photos scored |",
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


def retrieval_section(out_dir: Path) -> list[str]:
    """A section on similar-listing search, from what `fbm index --evaluate` wrote in `out_dir`; none where it wrote nothing."""
    from retrieval.figures import EVALUATION_FILE, EXAMPLES_FIGURE, PRECISION_FIGURE

    if not (out_dir / EVALUATION_FILE).is_file():
        return []
    scores = json.loads((out_dir / EVALUATION_FILE).read_text())
    k = scores["k"]
    modes = [key.removeprefix(f"precision@{k}_") for key in scores if key.startswith(f"precision@{k}_")]
    lines = [
        "## Retrieval",
        "",
        f"Each of the {scores['test_listings']:,} test listings searched an index of the {scores['catalogue']:,} train and validation "
        f"listings; precision@{k} is the share of its {k} results in its root category (chance {figure(scores['chance_precision'])}) "
        f"and in its full category path (chance {figure(scores['chance_path_precision'])}). From [{EVALUATION_FILE}]({EVALUATION_FILE}).",
        "",
        f"| query | precision@{k}, root category | precision@{k}, category path | queries |",
        "|---|---:|---:|---:|",
    ]
    for mode in modes:
        root, path = scores[f"precision@{k}_{mode}"], scores[f"path_precision@{k}_{mode}"]
        lines.append(f"| {mode} | {figure(root)} | {figure(path)} | {scores[f'queries_{mode}']:,} |")
    return lines + ["", f"![retrieval precision]({PRECISION_FIGURE})", "", f"![retrieval examples]({EXAMPLES_FIGURE})", ""]


def _comparison_chart(result: dict, models: list[str], path: Path) -> None:
    """Accuracy and macro-F1 per model, the served model's bars hatched, against dashed lines for
    chance and for the ceilings of picking between models' answers."""
    x = np.arange(len(models))
    served = result["served"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for offset, metric, label, colour in ((-0.2, "accuracy", "accuracy", OKABE_ITO["blue"]), (0.2, "macro_f1", "macro-F1", OKABE_ITO["orange"])):
        bars = ax.bar(x + offset, [result["models"][m][metric] for m in models], width=0.4, label=label, color=colour)
        bars[models.index(served)].set(hatch="//", edgecolor=SERVED_COLOUR, linewidth=1.2)
        for text in ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2):  # as the table prints them
            text.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.5})  # over a dashed line that crosses it
    for value, label, colour in reference_lines(result):
        ax.axhline(value, linestyle="--", linewidth=1, color=colour, label=label, zorder=0)
    ax.set_xticks(x, [f"{m}\n(served)" if m == served else m for m in models], fontsize=9)
    ax.get_xticklabels()[models.index(served)].set_fontweight("bold")
    ax.set(ylim=(0, 1), ylabel="accuracy or macro-F1", title="Product-level accuracy and macro-F1 by model")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reference_lines(result: dict) -> list[tuple[float, str, str]]:
    """(height, legend label, colour) of the lines the bars are read against: chance, and the
    ceilings of picking between models' answers where the metrics hold them."""
    chance = 1 / len(result["classes"])
    lines = [(chance, f"chance, 1 in {len(result['classes'])}: {chance:.3f}", "#777777")]
    ceilings = (("either_branch_right", "image or text right", OKABE_ITO["green"]), ("any_late_input_right", "image, text or TF-IDF right", OKABE_ITO["purple"]))
    return lines + [(result[key], f"ceiling, {words}: {result[key]:.3f}", colour) for key, words, colour in ceilings if key in result]


def _confusion_grid(result: dict, models: list[str], path: Path) -> None:
    """One confusion matrix per model, each row (a true category) as shares of its products, with
    the row's product count beside its name, the larger shares written in their cells and a shared
    colour scale."""
    classes = result["classes"]
    cols = 2
    rows = int(np.ceil(len(models) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(8.5 * cols, 8 * rows))
    for ax, name in zip(np.ravel(axes), models):
        matrix = np.array(result["confusion"][name], dtype=float)
        normalised = matrix / matrix.sum(axis=1, keepdims=True).clip(min=1)
        image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        _write_shares(ax, normalised)
        ax.set_title(panel_title(name, result["models"][name]["accuracy"], int(matrix.sum()), result["n_products"]), fontsize=11)
        ax.set_xticks(range(len(classes)), [_two_lines(c) for c in classes], rotation=90, fontsize=8.5)
        ax.set_yticks(range(len(classes)), category_labels(classes, matrix.sum(axis=1), _two_lines), fontsize=8.5)  # each model's own products
        ax.set(xlabel="predicted category", ylabel="true category (products)")
    for ax in np.ravel(axes)[len(models) :]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 0.93, 0.97))
    fig.colorbar(image, cax=fig.add_axes((0.945, 0.3, 0.012, 0.4)), label="share of the true category's products")
    fig.suptitle("Confusion matrices, product level: each row sums to 1", fontsize=13)
    fig.savefig(path, dpi=115)
    plt.close(fig)


def panel_title(name: str, accuracy: float, shown: int, n_products: int) -> str:
    """A confusion matrix's title: the model's accuracy over every product, and, where the matrix
    shows fewer (a photo model sees only the products with a photo), what the accuracy counts that it does not show."""
    title = f"{name}: accuracy {accuracy:.3f}"
    unshown = n_products - shown
    if not unshown:
        return title
    shown_words, unshown_words = ("with a photo", "without") if name in PHOTO_MODELS else ("answered", "unanswered")
    return f"{title}\n({shown} {shown_words} shown; {unshown} {unshown_words}, counted wrong, not shown)"


def _write_shares(ax, shares: np.ndarray) -> None:
    """Each share of at least `SHARE_WRITTEN` in its cell, as `.12`: dark on light cells, light on dark ones."""
    for (row, col), share in np.ndenumerate(shares):
        if share >= SHARE_WRITTEN:
            text = f"{share:.2f}".removeprefix("0")
            ax.text(col, row, text, ha="center", va="center", fontsize=7.5, color="white" if share > 0.55 else "#1a1a1a")


def category_labels(classes: list[str], counts: Iterable[float], style: Callable[[str], str] = str) -> list[str]:
    """Each category name (through `style`) with its product count."""
    return [f"{style(name)} ({int(n)})" for name, n in zip(classes, counts)]


def _two_lines(name: str, width: int = 20) -> str:
    """A category name longer than `width` on two lines, broken at the space nearest its middle; whole otherwise."""
    spaces = [i for i, char in enumerate(name) if char == " "]
    if len(name) <= width or not spaces:
        return name
    middle = min(spaces, key=lambda i: abs(i - len(name) / 2))
    return name[:middle] + "\n" + name[middle + 1 :]


def _per_class_f1(result: dict, models: list[str], path: Path) -> None:
    """F1 per category and model, the categories sorted by the served model's F1 (best first), its bars in black."""
    served = result["served"]
    by_served = sorted(result["classes"], key=lambda c: -result["per_class"][served][c]["f1"])
    y = np.arange(len(by_served))
    height = 0.8 / len(models)
    colours = model_colours(models, served)
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(by_served) + 1.5))
    for i, name in enumerate(models):
        f1 = [result["per_class"][name][c]["f1"] for c in by_served]
        ax.barh(y + i * height, f1, height=height, color=colours[name], label=f"{name} (served)" if name == served else name)
    support = [result["per_class"][models[0]][c]["support"] for c in by_served]  # every product of the category, answered or not: the same for every model
    ax.set_yticks(y + 0.4 - height / 2, category_labels(by_served, support), fontsize=8.5)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="F1", title=f"Per-class F1, product level (products in the category), sorted by {served}'s F1")
    ax.legend(fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def model_colours(models: list[str], served: str) -> dict[str, str]:
    """Each model's colour: black for the served one, the other Okabe–Ito colours in turn for the rest."""
    others = iter(OTHER_COLOURS)
    return {name: SERVED_COLOUR if name == served else next(others) for name in models}


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
