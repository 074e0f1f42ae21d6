"""Subset selection and rebalancing of the source (RTLAOI-DD 2.4-2.5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from madd.data.datamodule import DefectDataModule
from madd.data.records import DatasetIndex, Record
from madd.errors import DataError, MaddConfigError
from madd.data.gini import gini
from madd.data.rebalance import RebalancedDataset, rebalance_plan, rebalanced_counts, subset_select



def test_rebalanced_counts_hand_values():
    # geometric mean 100, rho 4: floor = ceil(100 / 2) = 50, ceiling = 200
    assert rebalanced_counts([1000, 100, 10], 4.0).tolist() == [200, 100, 50]
    # classes inside [floor, ceiling] are untouched, empty classes stay empty
    assert rebalanced_counts([12, 10, 0, 9], 2.0).tolist() == [12, 10, 0, 9]
    assert rebalanced_counts([7, 3], 1.0).tolist() == [5, 5]
    with pytest.raises(MaddConfigError, match="imbalance_ratio"):
        rebalanced_counts([3, 4], 0.5)


@pytest.mark.parametrize("ratio", [1.0, 1.5, 2.0, 5.0])
def test_plan_respects_ratio_and_lowers_gini(ratio):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), [300, 80, 20, 6, 2])
    labels = rng.permutation(labels)
    plan = rebalance_plan(labels, 6, ratio, seed=3)  # class 5 has no images
    after = np.bincount(labels[plan.indices], minlength=6)
    assert np.array_equal(after, plan.counts_after)
    assert after[5] == 0
    assert after[:5].max() / after[:5].min() <= ratio + 1e-9
    assert plan.gini_after < plan.gini_before
    assert plan.gini_before == pytest.approx(gini([300, 80, 20, 6, 2]))
    # undersampled classes: distinct originals; oversampled ones: every original once plus augmented copies
    for c in range(5):
        idx, copy = plan.indices[labels[plan.indices] == c], plan.copy[labels[plan.indices] == c]
        originals = idx[copy == 0]
        assert len(set(originals.tolist())) == len(originals)
        if after[c] > np.sum(labels == c):
            assert set(originals.tolist()) == set(np.flatnonzero(labels == c).tolist())
        else:
            assert (copy == 0).all()
    again = rebalance_plan(labels, 6, ratio, seed=3)
    assert np.array_equal(plan.indices, again.indices) and np.array_equal(plan.copy, again.copy)


class _Base:
    """Three classes with masks (defects) or boxes only; enough for the dataset contract."""

    def __init__(self, labels):
        self.lab = list(labels)
        self.records = [Record(f"img{i}.png", c) for i, c in enumerate(self.lab)]

    @property
    def labels(self):
        return np.array(self.lab)

    def __len__(self):
        return len(self.lab)

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        mask = torch.zeros(1, 32, 32)
        mask[0, 4:10, 18:30] = 1.0
        return {"image": torch.rand(3, 32, 32, generator=g), "label": torch.tensor(self.lab[i]), "mask": mask,
                "has_mask": torch.tensor(i % 2 == 0), "boxes": torch.tensor([[float(self.lab[i]), 18, 4, 30, 10]]),
                "index": torch.tensor(i)}


def test_rebalanced_dataset_augments_copies_deterministically():
    base = _Base([0] * 12 + [1] * 2 + [2] * 5)
    plan = rebalance_plan(base.labels, 3, 2.0, seed=0)
    ds = RebalancedDataset(base, plan, seed=0)
    assert len(ds) == len(plan.indices) and [r.label for r in ds.records] == ds.labels.tolist()
    copies = np.flatnonzero(plan.copy > 0)
    assert len(copies) > 0
    state = torch.random.get_rng_state()
    for i in copies:
        a, b = ds[i], ds[i]
        orig = base[int(plan.indices[i])]
        assert torch.equal(a["image"], b["image"])  # the same copy every epoch
        assert not torch.equal(a["image"], orig["image"])  # but not the original
        assert a["image"].min() >= 0 and a["image"].max() <= 1
        assert set(a["mask"].unique().tolist()) <= {0.0, 1.0}
        assert a["boxes"].shape[1] == 5 and int(a["index"]) == i
        if bool(orig["has_mask"]):  # boxes follow the (augmented) mask
            assert a["boxes"].shape[0] >= 1 and a["mask"].sum() > 0
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    for i in np.flatnonzero(plan.copy == 0):
        assert torch.equal(ds[i]["image"], base[int(plan.indices[i])]["image"])


def test_subset_select_keeps_only_target_label_space():
    index = DatasetIndex([Record("a", 0), Record("b", 1), Record("c", 2), Record("d", 1)], ["good", "crack", "scratch"])
    kept = subset_select(index, ["good", "crack", "pore"])
    assert [(r.path, r.label) for r in kept] == [("a", 0), ("b", 1), ("d", 1)]
    mapped = subset_select(index, ["ok", "defect"], {"good": "ok", "crack": "defect", "scratch": "defect"})
    assert [r.label for r in mapped] == [0, 1, 1, 1]
    with pytest.raises(DataError):
        subset_select(index, ["pore"])


def test_datamodule_source_rebalance(data_dir, caplog):
    root = str(data_dir / "synthetic")
    dm = DefectDataModule(
        target={"reader": "synthetic", "domain": "awdd", "root": root, "num_images": 40, "image_size": 32, "seed": 0},
        class_names=["good", "crack", "pore", "edge_burn", "incomplete_weld"],
        source={"reader": "synthetic", "domain": "metal", "root": root, "num_images": 60, "image_size": 32,
                "seed": 1, "class_proportions": [0.7, 0.2, 0.1, 0.0]},
        source_class_names=["good", "crack", "pore", "scratch"],
        image_size=32, label_budget={"total": 10}, batch_size=4, train_splits=["source"],
        source_rebalance={"enabled": True, "imbalance_ratio": 1.5},
    )
    with caplog.at_level("INFO"):
        dm.setup()
    src = dm.datasets["source"]
    assert isinstance(src, RebalancedDataset)
    counts = np.bincount(src.labels, minlength=5)
    present = counts[counts > 0]
    assert present.max() / present.min() <= 1.5
    assert src.plan.gini_after < src.plan.gini_before
    assert "Gini" in caplog.text
    assert dm.summary()["source"]["good"] == counts[0]
    batch = next(iter(dm.split_loader("source", train=True)))
    assert batch["image"].shape[1:] == (3, 32, 32) and len(batch["boxes"]) == batch["image"].shape[0]
