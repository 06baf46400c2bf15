"""Train/val/test split by product, stratified by root category.

Products that share a photo (the same file bytes under two image ids) are kept together, so no
picture is seen in training and scored in test.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

SPLITS = ("train", "val", "test")


def group_products(image_digests: dict[str, list[str]]) -> dict[str, str]:
    """Union products that share an image digest; returns product id → group id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    by_digest: dict[str, str] = {}
    for product, digests in image_digests.items():
        find(product)
        for digest in digests:
            if digest in by_digest:
                parent[find(product)] = find(by_digest[digest])
            else:
                by_digest[digest] = product
    return {product: find(product) for product in parent}


def split_products(
    product_ids: list[str],
    labels: list[str],
    fractions: tuple[float, float, float],
    seed: int,
    groups: dict[str, str] | None = None,
) -> dict[str, str]:
    """Assign each product to train/val/test so that each class keeps the given fractions."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {fractions} must sum to 1")
    groups = groups or {}
    members: dict[str, list[str]] = defaultdict(list)
    group_label: dict[str, str] = {}
    for pid, label in zip(product_ids, labels):
        group = groups.get(pid, pid)
        members[group].append(pid)
        group_label.setdefault(group, label)

    by_label: dict[str, list[str]] = defaultdict(list)
    for group in sorted(members):
        by_label[group_label[group]].append(group)

    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(by_label):
        class_groups = by_label[label]
        order = rng.permutation(len(class_groups))
        total = sum(len(members[g]) for g in class_groups)
        targets = np.cumsum(fractions) * total
        placed = 0
        for i in order:
            group = class_groups[i]
            split = SPLITS[min(int(np.searchsorted(targets, placed, side="right")), len(SPLITS) - 1)]
            for pid in members[group]:
                assignment[pid] = split
            placed += len(members[group])
    return assignment
