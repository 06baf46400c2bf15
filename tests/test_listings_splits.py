"""The product split: disjoint, stratified, deterministic, and photo-sharing products kept together."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from listings.splits import SPLITS, group_products, split_products

FRACTIONS = (0.70, 0.15, 0.15)


def synthetic_products(seed: int = 0) -> tuple[list[str], list[str]]:
    """13 classes of unequal size (20 to 140 products), like the real dataset's imbalance."""
    rng = np.random.default_rng(seed)
    product_ids, labels = [], []
    for c in range(13):
        for i in range(int(rng.integers(20, 141))):
            product_ids.append(f"c{c}-p{i}")
            labels.append(f"class {c}")
    order = rng.permutation(len(product_ids))
    return [product_ids[i] for i in order], [labels[i] for i in order]


def test_every_product_in_exactly_one_split():
    product_ids, labels = synthetic_products()
    assignment = split_products(product_ids, labels, FRACTIONS, seed=42)
    assert set(assignment) == set(product_ids)
    assert set(assignment.values()) == set(SPLITS)
    members = {s: {p for p, split in assignment.items() if split == s} for s in SPLITS}
    assert not members["train"] & members["val"]
    assert not members["train"] & members["test"]
    assert not members["val"] & members["test"]


def test_each_class_keeps_the_split_fractions():
    product_ids, labels = synthetic_products()
    assignment = split_products(product_ids, labels, FRACTIONS, seed=42)
    per_class = Counter(labels)
    counts = Counter((label, assignment[pid]) for pid, label in zip(product_ids, labels))
    for label, total in per_class.items():
        for split, fraction in zip(SPLITS, FRACTIONS):
            # rounding moves at most one product of a class between neighbouring splits
            assert abs(counts[label, split] - fraction * total) <= 1.5, (label, split, counts[label, split], total)
    overall = Counter(assignment.values())
    for split, fraction in zip(SPLITS, FRACTIONS):
        assert abs(overall[split] / len(product_ids) - fraction) < 0.02


def test_deterministic_for_a_seed_and_varies_with_it():
    product_ids, labels = synthetic_products()
    first = split_products(product_ids, labels, FRACTIONS, seed=7)
    reordered = list(zip(product_ids, labels))[::-1]
    again = split_products([p for p, _ in reordered], [l for _, l in reordered], FRACTIONS, seed=7)
    assert first == again  # not even the input order matters
    assert first != split_products(product_ids, labels, FRACTIONS, seed=8)


def test_products_sharing_a_photo_digest_stay_together():
    product_ids, labels = synthetic_products()
    # chains of products sharing photos within a class, and one pair across classes
    digests: dict[str, list[str]] = {pid: [f"own-{pid}"] for pid in product_ids}
    by_class: dict[str, list[str]] = {}
    for pid, label in zip(product_ids, labels):
        by_class.setdefault(label, []).append(pid)
    shared_sets = []
    for k, members in enumerate(by_class.values()):
        chain = members[:4]  # a-b share d1, b-c share d2, c-d share d3: one group of four
        for i in range(3):
            digests[chain[i]].append(f"chain-{k}-{i}")
            digests[chain[i + 1]].append(f"chain-{k}-{i}")
        shared_sets.append(chain)
    across = [by_class["class 0"][10], by_class["class 5"][10]]
    for pid in across:
        digests[pid].append("across")
    shared_sets.append(across)

    groups = group_products(digests)
    for members in shared_sets:
        assert len({groups[pid] for pid in members}) == 1
    assert len(set(groups.values())) == len(product_ids) - 13 * 3 - 1

    for seed in range(5):
        assignment = split_products(product_ids, labels, FRACTIONS, seed=seed, groups=groups)
        for members in shared_sets:
            assert len({assignment[pid] for pid in members}) == 1, (seed, members)
        assert set(assignment) == set(product_ids)


def test_products_without_photos_are_their_own_group():
    groups = group_products({"a": ["d1"], "b": [], "c": ["d1"], "d": ["d2"]})
    assert groups["a"] == groups["c"]
    assert len({groups["a"], groups["b"], groups["d"]}) == 3


def test_a_product_that_joins_two_groups_merges_them_whatever_the_order():
    """b shares one photo with a and another with c, and comes last: all three are one group."""
    groups = group_products({"a": ["d1"], "c": ["d2"], "b": ["d1", "d2"]})
    assert groups["a"] == groups["b"] == groups["c"]


def test_a_tiny_class_is_still_assigned():
    assignment = split_products(["x", "y", "z"], ["big", "big", "tiny"], FRACTIONS, seed=0)
    assert set(assignment) == {"x", "y", "z"}


def test_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        split_products(["a"], ["x"], (0.7, 0.2, 0.2), seed=0)
