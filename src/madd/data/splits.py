"""Reproducible, stratified split logic: ratio splits, k-fold partitions and label budgets.

Everything takes integer class labels and a seed and returns index arrays, so it is independent of
how images are stored. Per-class rounding is hand-written (largest remainder) because
``sklearn.model_selection.train_test_split`` refuses classes with a single member, which small
industrial datasets have; k-fold partitions use scikit-learn's ``StratifiedKFold``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from madd.errors import DataError


def _largest_remainder(total: int, weights: Sequence[float]) -> np.ndarray:
    """Integer allocation of ``total`` proportional to ``weights`` whose sum is exactly ``total``."""
    w = np.asarray(weights, dtype=float)
    raw = total * w / w.sum()
    out = np.floor(raw).astype(int)
    # ties broken by index so the allocation is deterministic
    order = np.argsort(-(raw - out), kind="stable")
    out[order[: total - out.sum()]] += 1
    return out


def ratio_split(labels: Sequence[int], fractions: Mapping[str, float], seed: int) -> dict[str, np.ndarray]:
    """Split indices into named parts with the given fractions, stratified by class.

    Within each class the members are shuffled with ``seed`` and cut by largest-remainder rounding of
    ``n_class * fraction``, so every part holds its share of every class and no index is in two parts.
    """
    names = list(fractions)
    fr = np.array([fractions[n] for n in names], dtype=float)
    if (fr < 0).any() or fr.sum() <= 0:
        raise DataError(f"data.splits fractions must be non-negative and not all zero, got {dict(fractions)}")
    fr = fr / fr.sum()
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        sizes = _largest_remainder(len(members), fr)
        for name, chunk in zip(names, np.split(members, np.cumsum(sizes)[:-1])):
            parts[name].append(chunk)
    return {n: np.sort(np.concatenate(p)) if p else np.zeros(0, int) for n, p in parts.items()}


def kfold_split(labels: Sequence[int], num_folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (rest, held_out) for fold ``fold`` of a stratified ``num_folds``-fold partition.

    Over ``fold = 0..k-1`` the held-out parts partition the whole set. Stratified whenever at least one class
    has ``num_folds`` members (classes smaller than that are spread over as many folds as they have images);
    plain shuffled k-fold only when every class is smaller than ``num_folds`` (scikit-learn refuses then).
    """
    if num_folds < 2:
        raise DataError(f"data.num_folds must be >= 2 for cross-validation, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise DataError(f"data.fold={fold} is outside 0..{num_folds - 1} (data.num_folds={num_folds})")
    labels = np.asarray(labels)
    if len(labels) < num_folds:
        raise DataError(f"cannot make {num_folds} folds from {len(labels)} images; lower data.num_folds")
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    splitter = (
        StratifiedKFold(num_folds, shuffle=True, random_state=seed)
        if counts.max() >= num_folds
        else KFold(num_folds, shuffle=True, random_state=seed)
    )
    with warnings.catch_warnings():
        # "the least populated class has only n members": expected for rare defect classes, handled above
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        rest, held = list(splitter.split(np.zeros(len(labels)), labels))[fold]
    return np.sort(rest), np.sort(held)


def label_budget(
    labels: Sequence[int],
    pool: np.ndarray,
    seed: int,
    per_class: int | None = None,
    total: int | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the labelled subset from ``pool`` (indices into ``labels``); return (labeled, unlabeled).

    * ``per_class=n``: exactly ``n`` images of every class present in the pool.
    * ``total=n``: ``n`` images, allocated to classes proportionally (largest remainder) but with at least
      one per class when ``n`` allows it, so no class is left without a label.
    * neither: the whole pool is labelled (fully supervised).

    Raises a :class:`DataError` naming the key when a budget exceeds what the pool holds.
    """
    labels = np.asarray(labels)
    pool = np.asarray(pool)
    if per_class is not None and total is not None:
        raise DataError("set only one of data.label_budget.per_class and data.label_budget.total")
    if per_class is None and total is None:
        return np.sort(pool), np.zeros(0, dtype=int)
    rng = np.random.default_rng(seed)
    pool_labels = labels[pool]
    classes = np.unique(pool_labels)
    members = {c: rng.permutation(pool[pool_labels == c]) for c in classes}
    name = (lambda c: class_names[c]) if class_names else str
    if per_class is not None:
        if per_class < 1:
            raise DataError(f"data.label_budget.per_class must be >= 1, got {per_class}")
        short = {name(c): len(m) for c, m in members.items() if len(m) < per_class}
        if short:
            raise DataError(
                f"data.label_budget.per_class={per_class} exceeds the training pool of classes {short}; "
                "lower the budget or use data.label_budget.total"
            )
        take = {c: per_class for c in classes}
    else:
        if not 1 <= total <= len(pool):
            raise DataError(
                f"data.label_budget.total={total} is outside 1..{len(pool)} (the training pool size); "
                "lower the budget"
            )
        sizes = np.array([len(members[c]) for c in classes])
        base = np.minimum(1, sizes) if total >= len(classes) else np.zeros_like(sizes)
        extra = _largest_remainder(total - base.sum(), sizes) if total > base.sum() else np.zeros_like(sizes)
        alloc = base + extra
        # proportional rounding can exceed a tiny class: move the surplus to classes with room
        while (alloc > sizes).any():
            over = np.flatnonzero(alloc > sizes)[0]
            surplus = alloc[over] - sizes[over]
            alloc[over] = sizes[over]
            room = np.flatnonzero(alloc < sizes)
            alloc[room[np.argmax(sizes[room] - alloc[room])]] += surplus
        take = dict(zip(classes, alloc))
    labeled = np.concatenate([members[c][: take[c]] for c in classes])
    unlabeled = np.concatenate([members[c][take[c] :] for c in classes])
    return np.sort(labeled), np.sort(unlabeled)
