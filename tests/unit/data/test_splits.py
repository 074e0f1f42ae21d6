"""Split logic (madd.data.splits): disjoint named parts, exact label budgets, seeds, k-fold partitions."""

from __future__ import annotations

import numpy as np
import pytest

from madd.data.splits import kfold_split, label_budget, ratio_split
from madd.errors import DataError

# 99 images, normal-dominant like a production line: 60 good, 20 crack, 10 pore, 6 burn, 3 weld
LABELS = np.repeat(np.arange(5), [60, 20, 10, 6, 3])
NAMES = ["good", "crack", "pore", "burn", "weld"]
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def _counts(idx: np.ndarray) -> list[int]:
    return np.bincount(LABELS[idx], minlength=5).tolist()


# ----------------------------------------------------------------------------------------- ratio split


def test_ratio_split_parts_are_disjoint_and_cover_everything():
    parts = ratio_split(LABELS, FRACTIONS, seed=0)
    assert set(parts) == {"train", "val", "test"}
    joined = np.concatenate(list(parts.values()))
    assert len(joined) == len(set(joined.tolist())) == len(LABELS)  # no image in two parts, none lost


def test_ratio_split_is_stratified_with_exact_per_class_rounding():
    parts = ratio_split(LABELS, FRACTIONS, seed=0)
    # per class, largest-remainder rounding of n * (0.7, 0.1, 0.2):
    #   good 60 -> 42 / 6 / 12;  crack 20 -> 14 / 2 / 4;  pore 10 -> 7 / 1 / 2   (exact)
    #   burn  6 -> 4.2 / 0.6 / 1.2 -> floors 4 / 0 / 1, the missing one goes to the largest remainder (val .6)
    #   weld  3 -> 2.1 / 0.3 / 0.6 -> floors 2 / 0 / 0, the missing one goes to test (.6)
    assert _counts(parts["train"]) == [42, 14, 7, 4, 2]
    assert _counts(parts["val"]) == [6, 2, 1, 1, 0]
    assert _counts(parts["test"]) == [12, 4, 2, 1, 1]


def test_ratio_split_reproducible_by_seed_and_different_across_seeds():
    a, b, c = (ratio_split(LABELS, FRACTIONS, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(a[k], b[k]) for k in FRACTIONS)
    assert not all(np.array_equal(a[k], c[k]) for k in FRACTIONS)
    assert all(_counts(a[k]) == _counts(c[k]) for k in FRACTIONS)  # same sizes, other images


def test_ratio_split_rejects_negative_fractions():
    with pytest.raises(DataError, match="data.splits"):
        ratio_split(LABELS, {"train": 1.0, "val": -0.1, "test": 0.1}, seed=0)


# ----------------------------------------------------------------------------------------- label budget


def test_per_class_budget_is_exact_and_the_rest_is_unlabeled():
    pool = ratio_split(LABELS, FRACTIONS, seed=0)["train"]
    lab, unl = label_budget(LABELS, pool, seed=0, per_class=1, class_names=NAMES)
    assert _counts(lab) == [1, 1, 1, 1, 1]
    assert not set(lab.tolist()) & set(unl.tolist())
    assert sorted(np.concatenate([lab, unl]).tolist()) == sorted(pool.tolist())


def test_total_budget_is_exact_proportional_and_has_one_per_class():
    pool = np.arange(len(LABELS))
    lab, unl = label_budget(LABELS, pool, seed=0, total=10)
    # one per class first (5); the other 5 proportional to the sizes 60/20/10/6/3 (sum 99):
    # 5 * n / 99 = 3.03 / 1.01 / 0.505 / 0.303 / 0.152 -> floors 3/1/0/0/0, the last one to pore (.505)
    assert len(lab) == 10 and len(unl) == 89
    assert _counts(lab) == [1 + 3, 1 + 1, 1 + 1, 1, 1]


def test_total_budget_smaller_than_class_count_is_still_exact():
    lab, _ = label_budget(LABELS, np.arange(len(LABELS)), seed=0, total=3)
    # 3 * n / 99 = 1.82 / 0.61 / 0.30 / ... -> floors 1/0/0/0/0, then good (.82) and crack (.61)
    assert _counts(lab) == [2, 1, 0, 0, 0]


def test_total_budget_surplus_moves_off_a_tiny_class():
    labels = np.array([0] * 50 + [1])  # one image in class 1
    lab, unl = label_budget(labels, np.arange(51), seed=0, total=50)
    assert len(lab) == 50 and np.bincount(labels[lab]).tolist() == [49, 1] and len(unl) == 1


def test_no_budget_labels_the_whole_pool():
    pool = np.arange(0, 100, 3)
    lab, unl = label_budget(LABELS, pool, seed=0)
    assert np.array_equal(lab, pool) and len(unl) == 0


def test_budget_reproducible_by_seed_and_different_across_seeds():
    pool = np.arange(len(LABELS))
    a = label_budget(LABELS, pool, seed=1, total=20)[0]
    b = label_budget(LABELS, pool, seed=1, total=20)[0]
    c = label_budget(LABELS, pool, seed=2, total=20)[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_budget_larger_than_pool_names_the_key():
    pool = np.arange(len(LABELS))
    with pytest.raises(DataError, match=r"data\.label_budget\.total=100 .*1\.\.99"):
        label_budget(LABELS, pool, seed=0, total=100)
    # weld has only 3 images: per_class=4 names the class that is short
    with pytest.raises(DataError, match=r"data\.label_budget\.per_class=4 .*'weld': 3"):
        label_budget(LABELS, pool, seed=0, per_class=4, class_names=NAMES)


def test_budget_bad_values():
    pool = np.arange(len(LABELS))
    with pytest.raises(DataError, match="only one of"):
        label_budget(LABELS, pool, seed=0, per_class=1, total=5)
    with pytest.raises(DataError, match="per_class must be >= 1"):
        label_budget(LABELS, pool, seed=0, per_class=0)
    with pytest.raises(DataError, match="total=0"):
        label_budget(LABELS, pool, seed=0, total=0)


# ----------------------------------------------------------------------------------------- k-fold


@pytest.mark.parametrize(
    "labels",
    [LABELS, np.repeat(np.arange(3), [30, 9, 1]), np.array([0, 1, 2, 3, 4, 0, 1, 2])],
    ids=["stratified", "rare-class", "all-classes-tiny"],
)
def test_folds_partition_the_pool(labels):
    k = 5
    held = [kfold_split(labels, k, f, seed=0) for f in range(k)]
    tests = np.concatenate([h for _, h in held])
    assert sorted(tests.tolist()) == list(range(len(labels)))  # every image held out exactly once
    for rest, test in held:
        assert not set(rest.tolist()) & set(test.tolist())
        assert len(rest) + len(test) == len(labels)


def test_folds_are_stratified_even_with_a_rare_class():
    labels = np.repeat(np.arange(4), [50, 25, 10, 2])  # 2 < 5 folds: the rare class lands in 2 folds
    folds = [np.bincount(labels[kfold_split(labels, 5, f, seed=0)[1]], minlength=4).tolist() for f in range(5)]
    assert all(c[:3] == [10, 5, 2] for c in folds)  # 50/5, 25/5, 10/5 in every fold
    assert sorted(c[3] for c in folds) == [0, 0, 0, 1, 1]


def test_folds_reproducible_by_seed():
    a = kfold_split(LABELS, 4, 1, seed=7)[1]
    b = kfold_split(LABELS, 4, 1, seed=7)[1]
    c = kfold_split(LABELS, 4, 1, seed=8)[1]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_fold_out_of_range_and_bad_fold_count():
    with pytest.raises(DataError, match=r"data\.fold=5 is outside 0\.\.4"):
        kfold_split(LABELS, 5, 5, seed=0)
    with pytest.raises(DataError, match=r"data\.fold=-1"):
        kfold_split(LABELS, 5, -1, seed=0)
    with pytest.raises(DataError, match=r"data\.num_folds must be >= 2"):
        kfold_split(LABELS, 1, 0, seed=0)
    with pytest.raises(DataError, match="cannot make 5 folds from 3 images"):
        kfold_split(np.array([0, 1, 1]), 5, 0, seed=0)
