"""Label-space-conditioned subset selection and rebalancing of a source dataset (RTLAOI-DD sections 2.4-2.5).

A transfer method that works on records and datasets only, so it lives in the data layer, which applies it
(``data.source_rebalance``); :mod:`madd.transfer` uses it from here.

Subset selection (2.4): keep only the source samples whose label maps into the target label space. That is
:func:`madd.data.sources.map_labels` (the data module's source split already does it, with ``label_mapping``);
:func:`subset_select` is the same call under the paper's name.

Rebalancing (2.5): minority classes are oversampled with augmented copies (flip, rotation, contrast, noise --
the paper's list) and majority classes undersampled until ``max count / min count <= imbalance_ratio``:

    g = geometric mean of the non-zero class counts
    floor = ceil(g / sqrt(rho)),  ceiling = max(floor, floor(rho * floor))
    n'_c = clip(n_c, floor, ceiling)

so over- and undersampling share the correction evenly on a log scale, and classes already within
``[floor, ceiling]`` are untouched. (The paper fixes no target count; this rule is ours.) Undersampling keeps a
seeded random subset; oversampling keeps every original and adds copies round-robin over the class's images
in a seeded order, each copy with its own seeded augmentation (so a resumed run sees the same copies). The
Gini coefficient (Eqs. 16-20) of the class counts before and after is reported.

Why hand-written: imbalanced-learn's samplers would add a dependency for two ``rng.choice`` calls and know
nothing about image augmentation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import kornia.augmentation as K
import numpy as np
import torch
from torch.utils.data import Dataset

from madd.data.dataset import boxes_from_mask
from madd.data.records import DatasetIndex, Record
from madd.data.sources import map_labels
from madd.errors import MaddConfigError
from madd.data.gini import gini

log = logging.getLogger(__name__)


def subset_select(source: DatasetIndex, target_class_names: Sequence[str],
                  label_mapping: Mapping[str, str | None] | None = None) -> list[Record]:
    """Section 2.4: the source records relabelled into the target classes; records outside them dropped."""
    return map_labels(source, target_class_names, label_mapping)


def rebalanced_counts(counts: Sequence[int], imbalance_ratio: float) -> np.ndarray:
    """Per-class counts after rebalancing (see the module docstring); empty classes stay empty."""
    n = np.asarray(counts, dtype=np.int64)
    if imbalance_ratio < 1:
        raise MaddConfigError(f"data.source_rebalance.imbalance_ratio must be >= 1, got {imbalance_ratio}")
    present = n > 0
    if not present.any():
        raise MaddConfigError("cannot rebalance a source with no images")
    g = math.exp(np.log(n[present]).mean())
    floor = max(1, math.ceil(g / math.sqrt(imbalance_ratio) - 1e-9))
    ceiling = max(floor, math.floor(imbalance_ratio * floor + 1e-9))
    return np.where(present, np.clip(n, floor, ceiling), 0)


@dataclass
class RebalancePlan:
    """Which base sample each position shows (``indices``) and whether it is an augmented copy (``copy > 0``)."""

    indices: np.ndarray
    copy: np.ndarray
    counts_before: np.ndarray
    counts_after: np.ndarray

    @property
    def gini_before(self) -> float:
        return gini(self.counts_before[self.counts_before > 0])

    @property
    def gini_after(self) -> float:
        return gini(self.counts_after[self.counts_before > 0])

    def summary(self, class_names: Sequence[str] | None = None) -> str:
        names = list(class_names) if class_names else [str(i) for i in range(len(self.counts_before))]
        per = ", ".join(f"{n}: {b}->{a}" for n, b, a in zip(names, self.counts_before, self.counts_after) if b)
        return (f"source rebalanced ({per}); Gini {self.gini_before:.3f} -> {self.gini_after:.3f}, "
                f"{int(self.counts_before.sum())} -> {len(self.indices)} images "
                f"({int((self.copy > 0).sum())} augmented copies)")


def rebalance_plan(labels: Sequence[int], num_classes: int, imbalance_ratio: float, seed: int) -> RebalancePlan:
    labels = np.asarray(labels, dtype=np.int64)
    before = np.bincount(labels, minlength=num_classes)
    after = rebalanced_counts(before, imbalance_ratio)
    rng = np.random.default_rng(seed)
    indices, copies = [], []
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        want = int(after[c])
        if want <= len(members):
            chosen = np.sort(members[:want])
            indices.append(chosen)
            copies.append(np.zeros(want, dtype=np.int64))
        else:
            extra = want - len(members)
            order = np.resize(members, extra)  # round-robin over the class's images, in the seeded order
            copy_no = np.arange(extra) // len(members) + 1
            indices += [np.sort(members), order]
            copies += [np.zeros(len(members), dtype=np.int64), copy_no]
    return RebalancePlan(np.concatenate(indices), np.concatenate(copies), before, after)


def oversampling_augmentation(with_boxes: bool = False) -> K.AugmentationSequential:
    """Section 2.5's manufacturing-typical changes: flips, rotation, contrast and noise (masks follow the geometry)."""
    keys = ["input", "mask", "bbox_xyxy"] if with_boxes else ["input", "mask"]
    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomVerticalFlip(p=0.5),
        K.RandomAffine(degrees=20.0, padding_mode="reflection", p=0.7),
        K.RandomContrast(contrast=(0.7, 1.3), p=0.7),
        K.RandomGaussianNoise(std=0.03, p=0.7),
        data_keys=keys,
    )


class RebalancedDataset(Dataset):
    """A dataset seen through a :class:`RebalancePlan`: originals as they are, copies augmented.

    Copy ``i`` is augmented with a seed derived from ``(seed, i)`` under a forked RNG, so it is the same image
    every epoch and in a resumed run, and the global RNG is untouched. Samples keep the batch contract of
    :mod:`madd.data.dataset` (masks and boxes follow flips and rotations; ``index`` is the position here).
    """

    def __init__(self, base: Dataset, plan: RebalancePlan, seed: int = 0) -> None:
        self.base, self.plan, self.seed = base, plan, seed
        self._aug = oversampling_augmentation(False)
        self._aug_boxes = oversampling_augmentation(True)

    def __len__(self) -> int:
        return len(self.plan.indices)

    @property
    def records(self) -> list[Record]:
        return [self.base.records[i] for i in self.plan.indices]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.base.labels)[self.plan.indices]

    def __getattr__(self, name: str):  # size_hw, channels, ... of the wrapped dataset
        if name in ("base", "plan", "seed", "_aug", "_aug_boxes"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, i: int) -> dict:
        sample = dict(self.base[int(self.plan.indices[i])])
        sample["index"] = torch.tensor(i, dtype=torch.long)
        if self.plan.copy[i] == 0:
            return sample
        boxes = sample["boxes"]
        annotated = len(boxes) > 0 and not bool(sample["has_mask"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + i)
            if annotated:
                img, mask, b = self._aug_boxes(sample["image"][None], sample["mask"][None], boxes[None, :, 1:])
            else:
                img, mask = self._aug(sample["image"][None], sample["mask"][None])
        h, w = img.shape[-2:]
        sample["image"] = img[0].clamp(0.0, 1.0)
        sample["mask"] = (mask[0] > 0.5).float()
        if annotated:
            xyxy = b[0].clone()
            xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clamp(0, w)
            xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clamp(0, h)
            sample["boxes"] = torch.cat([boxes[:, :1], xyxy], 1)
        else:
            label = int(sample["label"])
            sample["boxes"] = torch.from_numpy(boxes_from_mask(sample["mask"][0].numpy() > 0.5, label))
        return sample


def rebalance_dataset(dataset: Dataset, num_classes: int, imbalance_ratio: float = 2.0, seed: int = 0,
                      class_names: Sequence[str] | None = None) -> RebalancedDataset:
    """Wrap a source dataset (with ``.labels``) so its class counts respect ``imbalance_ratio``; log the Gini."""
    plan = rebalance_plan(dataset.labels, num_classes, imbalance_ratio, seed)
    log.info("%s", plan.summary(class_names))
    return RebalancedDataset(dataset, plan, seed)
