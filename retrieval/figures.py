"""The retrieval evaluation's figures (`fbm index --evaluate`): precision@k by query modality, and a
gallery of test listings beside the listings the index returns for them.

The gallery's queries are drawn at random (seeded), one per root category while others remain,
so it shows the index's misses as often as they happen rather than its best answers.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from listings.data import shorten
from listings.photos import PhotoStore
from listings.plots import OKABE_ITO, pyplot
from retrieval.listing import Hit

PRECISION_FIGURE = "retrieval_precision.png"
EXAMPLES_FIGURE = "retrieval_examples.png"
EVALUATION_FILE = "retrieval_evaluation.json"  # what `fbm index --evaluate` measured, which these figures draw
SAME_ROOT, OTHER_ROOT = OKABE_ITO["blue"], OKABE_ITO["vermilion"]
GOAL_NUMBER, ROOT_PRECISION_GOAL = 6, 0.85  # issue #6's goal on the root precision@10 of photo + text queries (`fbm bench` checks it)
MODALITY_NAMES = {"photo": "photo", "text": "text", "both": "photo + text"}
GALLERY_TITLE = (
    "Test listings (photo + text) and their nearest listings in the train + validation index\n"
    "blue frame, ✓: the query's root category; orange frame, ✗: another root category\n"
    "score, 0 to 1 (higher is closer): (1 + cosine similarity of the two listings' photo + text vectors) / 2, "
    "blended with the cosine of their words (index.term_weight)"
)


@dataclass
class Example:
    """One query listing (with a photo and a text) and what the index returned for it."""

    title: str
    root: str
    image_id: str
    hits: list[Hit]


def pick_examples(roots: list[str], rng: np.random.Generator, n: int) -> list[int]:
    """Up to `n` positions in `roots`, in a random order that shows every root category once before
    any twice."""
    order = rng.permutation(len(roots))
    first_of_root: dict[str, int] = {}
    for i in order:
        first_of_root.setdefault(roots[i], int(i))
    firsts = list(first_of_root.values())
    rest = [int(i) for i in order if int(i) not in set(firsts)]
    return (firsts + rest)[:n]


def goal_label() -> str:
    """The legend entry of the root-precision goal's line."""
    return f"goal (#{GOAL_NUMBER}): {ROOT_PRECISION_GOAL:g}"


def modality_tick(report: dict, mode: str) -> str:
    """A query modality's name and how many test listings were queried by it."""
    return f"{MODALITY_NAMES[mode]}\nn={report[f'queries_{mode}']:,}"


def plot_precision(report: dict, path: Path) -> None:
    """Same-root and same-path precision@k for each query modality, with what chance would give and
    the goal for same-root precision. Each bar shows its stored (already rounded) value as it is."""
    plt = pyplot()
    k = report["k"]
    modes = [mode for mode in ("photo", "text", "both") if report.get(f"precision@{k}_{mode}") is not None]
    x = np.arange(len(modes))
    fig, ax = plt.subplots(figsize=(7, 4))
    measures = (("precision", "same root category", "chance_precision", "C0"), ("path_precision", "same full category path", "chance_path_precision", "C1"))
    for offset, (key, label, chance, colour) in zip((-0.2, 0.2), measures):
        values = [report[f"{key}@{k}_{mode}"] for mode in modes]
        bars = ax.bar(x + offset, values, width=0.4, label=label, color=colour)
        ax.bar_label(bars, labels=[f"{value:g}" for value in values], fontsize=8)
        ax.axhline(report[chance], color=colour, linestyle="--", linewidth=1, label=f"{label}: chance")
    ax.axhline(ROOT_PRECISION_GOAL, color="black", linestyle=":", linewidth=1.2, label=goal_label())
    if not modes:
        ax.text(0.5, 0.5, "no test listing could be queried", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(x, [modality_tick(report, mode) for mode in modes])
    # the legend sits above the bars' highest possible value, so it never hides one
    ax.set(ylim=(0, 1.25), yticks=np.linspace(0, 1, 6), ylabel=f"precision@{k}", title=f"Test listings against the train + validation index ({report['catalogue']:,} listings)")
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def hit_caption(hit: Hit, query_root: str) -> str:
    """A result's caption: the item, its root category, whether that is the query's (in words and
    a mark, not in colour alone) and its score."""
    mark = "✓ same root" if hit.root == query_root else "✗ other root"
    return f"{shorten(hit.title, 28)}\n{shorten(hit.root, 34)}\n{mark}, score {hit.score:.2f}"


def plot_examples(examples: list[Example], photos: PhotoStore, path: Path) -> None:
    """One row per query: its photo, then each result's first photo, framed and captioned in blue
    with a ✓ when the result shares the query's root category and in orange with a ✗ when it does not."""
    plt = pyplot()
    if not examples:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no test listing has both a photo and a text to query by", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return
    columns = 1 + max(len(example.hits) for example in examples)
    size = (2.6 * columns, 3.2 * len(examples) + 0.5)
    # the constrained layout keeps the suptitle's lines clear of the first row's captions, as tight_layout did not
    fig, axes = plt.subplots(len(examples), columns, figsize=size, squeeze=False, layout="constrained")
    for row, example in zip(axes, examples):
        _photo_cell(row[0], photos, example.image_id, f"query: {shorten(example.title, 28)}\n{shorten(example.root, 34)}", "black")
        for ax, hit in zip(row[1:], example.hits):
            colour = SAME_ROOT if hit.root == example.root else OTHER_ROOT
            _photo_cell(ax, photos, hit.image_ids[0] if hit.image_ids else None, hit_caption(hit, example.root), colour)
        for ax in row[1 + len(example.hits) :]:
            ax.axis("off")
    fig.suptitle(GALLERY_TITLE, fontsize=10)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)  # an emoji in a title: drawn as a box
        fig.savefig(path, dpi=80)
    plt.close(fig)


def _photo_cell(ax, photos: PhotoStore, image_id: str | None, caption: str, colour: str) -> None:
    found = photos.path(image_id) if image_id else None
    if found is None:
        ax.imshow(np.full((8, 8, 3), 225, np.uint8))
        ax.text(3.5, 3.5, "no photo", ha="center", va="center", fontsize=8, color="0.4")
    else:
        with Image.open(found) as photo:
            ax.imshow(np.asarray(photo.convert("RGB")))
    ax.set_title(caption, fontsize=8, color=colour, parse_math=False)  # a seller's "$5 or $6" is text, not a formula
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3)
