"""Classification metrics of every stage: training reports, `fbm evaluate` and the benchmark."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support


NO_ANSWER = -1  # the answer of a model that had no input


def no_answer_where_absent(probs: np.ndarray, present: np.ndarray) -> np.ndarray:
    """A model's probability rows, NaN where it had no input (the image models on a listing without
    a photo): no answer, which the metrics score as wrong rather than as a guess of the first class."""
    return np.where(present[:, None], probs, np.nan).astype(np.float32)


def answers(probs: np.ndarray) -> np.ndarray:
    """Each row's most probable class; NO_ANSWER for a row of NaN."""
    answered = ~np.isnan(probs).any(axis=1)
    return np.where(answered, np.nan_to_num(probs, nan=0.0).argmax(axis=1), NO_ANSWER)


def summarise(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and top-3 accuracy of probability rows against integer labels; a row of
    NaN (no answer) is wrong.

    Macro-F1 averages over the classes the labels hold: a class absent from the data (a small
    evaluation set of a few categories) would otherwise count as F1 0 and drag the mean down."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "top3": float("nan")}
    pred = answers(probs)
    top3 = np.argsort(-np.nan_to_num(probs, nan=0.0), axis=1)[:, :3]
    in_top3 = (top3 == labels[:, None]).any(axis=1) & (pred != NO_ANSWER)
    return {
        "accuracy": float((pred == labels).mean()),
        "macro_f1": float(f1_score(labels, pred, average="macro", labels=np.unique(labels), zero_division=0)),
        "top3": float(in_top3.mean()),
    }


def per_class(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of every class (a row without an answer counts against its class's recall)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, answers(probs), labels=range(len(classes)), zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support)
    }


def per_product(row_values: np.ndarray, product_index: np.ndarray, n_products: int) -> np.ndarray:
    """Mean of row values over each product's rows."""
    sums = np.zeros((n_products, row_values.shape[1]), dtype=np.float64)
    np.add.at(sums, product_index, row_values)
    counts = np.bincount(product_index, minlength=n_products).clip(min=1)
    return (sums / counts[:, None]).astype(np.float32)


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of decision scores (the linear baselines' probabilities), float32."""
    scores = np.asarray(scores, dtype=np.float64)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def latency_percentiles(latency_ms: list[float] | np.ndarray) -> dict[str, float]:
    """p50 and p99 of per-query latencies in milliseconds, rounded to microseconds."""
    return {f"p{q}": round(float(np.percentile(latency_ms, q)), 3) for q in (50, 99)}


def figure(value: float | None, width: int = 0) -> str:
    """A metric for a table: three decimals, or a dash where there was nothing to measure (None, or
    the NaN of an empty split)."""
    return f"{value:>{width}.3f}" if value is not None and value == value else f"{'—':>{width}}"


def figure_pair(metrics: dict[str, float | None]) -> str:
    """`0.591/0.589`: accuracy and macro-F1 in a table column of 11 (a dash for either not measured)."""
    return f"{figure(metrics['accuracy'])}/{figure(metrics['macro_f1'])}".ljust(11)


def counted(counts: dict[str, int]) -> str:
    """`truncated (2), missing (1)`: counts by name for people, most first, not a Python dict."""
    return ", ".join(f"{name} ({count:,})" for name, count in sorted(counts.items(), key=lambda item: -item[1]))


def plural(count: int, noun: str) -> str:
    """`3 photos`, `1 photo`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
