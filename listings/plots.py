"""The training-curve figure every stage writes (loss on the left, accuracy-like scores on the
right), and matplotlib for every figure, imported only when one is drawn."""
from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend; imported here, when a figure is drawn, so
    that serving and the index never load matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path, title: str, scores: dict[str, str], kept: int, train_loss_label: str = "train") -> None:
    """Per-epoch `train_loss` and `val_loss`, and the `scores` keys (key → legend label), as a PNG,
    with the epoch `kept` (the best on validation, as early stopping chose it) marked on both panels.
    The score axis spans at least 0.1, so that a point of noise does not look like a swing."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label=train_loss_label)
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title=f"{title}: loss")
    values = []
    for key, label in scores.items():
        values += [h[key] for h in history]
        score_ax.plot(epochs, [h[key] for h in history], label=label)
    middle, half = (min(values) + max(values)) / 2, max(0.05, (max(values) - min(values)) / 2 + 0.01)
    score_ax.set(xlabel="epoch", ylabel="accuracy (share right)", title=f"{title}: accuracy", ylim=(max(0.0, middle - half), min(1.0, middle + half)))
    for ax in (loss_ax, score_ax):
        ax.axvline(kept, color="grey", linestyle="--", linewidth=1, label=f"kept: epoch {kept}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
