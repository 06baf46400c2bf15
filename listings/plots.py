"""The training-curve figure every stage writes (loss on the left, accuracy-like scores on the
right), and matplotlib for every figure, imported only when one is drawn."""
from __future__ import annotations

import math
from pathlib import Path


# Okabe & Ito's colours, told apart with any colour vision (the yellow is faint on white)
OKABE_ITO = {
    "orange": "#E69F00", "sky blue": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "vermilion": "#D55E00", "purple": "#CC79A7", "black": "#000000",
}


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend; imported here, when a figure is drawn, so
    that serving and the index never load matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def kept_label(kept: int, rule: str) -> str:
    """The legend entry of the kept epoch's marker, which says why that epoch was kept: it is often
    not the one of the lowest validation loss."""
    return f"kept: epoch {kept} ({rule})"


def score_name(scores: dict[str, str]) -> str:
    """What the score panel shows: accuracy, or accuracy and macro-F1 where a macro-F1 curve is drawn."""
    return "accuracy and macro-F1" if any(key.endswith("macro_f1") for key in scores) else "accuracy"


def epoch_ticks(first: int, last: int, most: int = 10) -> list[int]:
    """At most `most` whole epochs from `first` on, evenly spaced, so that the axis starts at the
    first epoch rather than at a round 0."""
    step = max(1, math.ceil((last - first + 1) / most))
    return list(range(first, last + 1, step))


def plot_curves(
    history: list[dict], path: Path, title: str, scores: dict[str, str], kept: int, kept_rule: str, train_loss_label: str = "train"
) -> None:
    """Per-epoch `train_loss` and `val_loss`, and the `scores` keys (key → legend label), as a PNG,
    with the epoch `kept` marked on both panels and `kept_rule`, how early stopping chose it, in its label.
    The score axis spans at least 0.1, so that a point of noise does not look like a swing."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 5))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label=train_loss_label)
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    values = []
    for key, label in scores.items():
        values += [h[key] for h in history]
        score_ax.plot(epochs, [h[key] for h in history], label=label)
    middle, half = (min(values) + max(values)) / 2, max(0.05, (max(values) - min(values)) / 2 + 0.01)
    name = score_name(scores)
    score_ax.set(xlabel="epoch", ylabel=f"{name} (share right)" if name == "accuracy" else name, title=name)
    score_ax.set_ylim(max(0.0, middle - half), min(1.0, middle + half))
    for ax in (loss_ax, score_ax):
        ax.axvline(kept, color="grey", linestyle="--", linewidth=1, label=kept_label(kept, kept_rule))
        ax.set_xlim(epochs[0], max(epochs[-1], epochs[0] + 1))
        ax.set_xticks(epoch_ticks(epochs[0], epochs[-1]))
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below the panel: over it, it hid the curves
        ax.grid(alpha=0.3)
    fig.suptitle(title)  # above both panels: a stage's title may be long
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
