"""Classification metrics shared by every stage."""
from __future__ import annotations

import numpy as np
import pytest

from listings.metrics import NO_ANSWER, answers, no_answer_where_absent, per_class, per_product, summarise


def one_hot(pred: list[int], n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[pred]


def test_macro_f1_averages_over_the_classes_the_data_holds():
    labels = np.array([0, 0, 0, 0])  # a small evaluation set of one category among 13
    scores = summarise(labels, one_hot([0, 0, 0, 5], 13))
    assert scores["accuracy"] == 0.75
    assert scores["macro_f1"] == pytest.approx(2 * 0.75 / 1.75)  # class 0's own F1, not averaged with 12 zeros


def test_macro_f1_counts_every_present_class_even_one_never_predicted():
    scores = summarise(np.array([0, 1]), one_hot([0, 0], 3))
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_a_model_without_input_gives_no_answer_and_is_wrong():
    """A listing without a photo gave the image models uniform probabilities, whose argmax named the
    first class: right by chance whenever that was its category. No input is now no answer."""
    labels = np.array([0, 1, 0])
    probs = no_answer_where_absent(one_hot([0, 1, 2], 3), np.array([False, True, True]))
    assert list(answers(probs)) == [NO_ANSWER, 1, 2]
    scores = summarise(labels, probs)
    assert scores["accuracy"] == pytest.approx(1 / 3) and scores["top3"] == pytest.approx(2 / 3)
    assert scores["macro_f1"] == pytest.approx((0 + 1) / 2)  # class 0: never answered right
    assert per_class(labels, probs, ["a", "b", "c"])["a"]["recall"] == 0


def test_top3_counts_a_category_ranked_third_and_not_one_ranked_fourth():
    probs = np.array([[0.5, 0.3, 0.2, 0.0]], dtype=np.float32)
    third = summarise(np.array([2]), probs)
    assert third["accuracy"] == 0 and third["top3"] == 1
    assert summarise(np.array([3]), probs)["top3"] == 0


def test_a_products_probabilities_are_the_mean_of_its_photos():
    """One confident photo does not outvote two that agree (the maximum would say class 0)."""
    photos = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [1.0, 0.0]], dtype=np.float32)
    products = per_product(photos, np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(products[:2], [[1.4 / 3, 1.6 / 3], [1.0, 0.0]], rtol=1e-6)
    assert products[0].argmax() == 1


def test_per_class_precision_and_recall_are_not_swapped():
    labels = np.array([0, 0, 1])
    probs = np.eye(2, dtype=np.float32)[[0, 1, 1]]
    figures = per_class(labels, probs, ["a", "b"])
    assert figures["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert figures["b"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
