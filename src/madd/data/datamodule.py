"""The one LightningDataModule: named splits, label budgets, k-fold, source domain and label mapping.

Splits (all explicit, all named):

* ``source``: labelled images of another domain, relabelled into the target classes via ``label_mapping``
  (unmapped source classes dropped);
* ``target_labeled``: the label budget, drawn stratified from the target training pool with ``seed``;
* ``target_unlabeled``: the rest of the training pool. Its labels stay in the records for diagnostics
  (pseudo-label precision) but models must never train on them;
* ``val`` and ``test``: held out from the target dataset.

Without folds the target set is cut by ``splits`` fractions (e.g. 7:1:2). With ``num_folds = k > 1`` the
target set is partitioned into ``k`` stratified folds; fold ``fold`` is the ``test`` split and ``val`` is cut
from the other folds with the ``val`` share of ``splits`` (so over ``fold = 0..k-1`` every image is tested
exactly once). Datasets shipped with their own train/val folders are re-split this way too, unless
``splits="predefined"``: then the dataset's own split (``Record.split``) is kept: its ``test`` part is the
test split, its ``val`` part (or ``val_fraction`` of its train part) the val split, and label budgets and
folds draw from its train part only.

Training batches are a dict ``{split_name: batch}`` for the names in ``train_splits`` combined by
Lightning's ``CombinedLoader`` (``max_size_cycle``: an epoch is the longest split; shorter ones cycle).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from madd.data.dataset import DefectDataset, collate
from madd.data.image_io import verify_records
from madd.data.integrity import check_split_isolation
from madd.data.rebalance import rebalance_dataset
from madd.data.records import ReadReport, Record
from madd.data.sources import build_index, map_labels, merge_classes
from madd.data.splits import kfold_split, label_budget, ratio_split
from madd.data.summary import format_summary
from madd.errors import DataError

#: ``data.modality``: how the images were acquired. A property of the data, read by methods whose augmentation
#: imitates the sensor's noise (MADD's strong view: salt-and-pepper speckle for ultrasonic scans, ring and streak
#: artifacts for CT, blur and sensor noise for cameras).
IMAGING_MODALITIES = ("visual", "ultrasonic", "ct")

log = logging.getLogger(__name__)

SPLITS = ("source", "target_labeled", "target_unlabeled", "val", "test")


class EpochSeededRandomSampler(Sampler[int]):
    """A random permutation that depends only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` every epoch, so a run resumed from a checkpoint draws exactly the batches
    the uninterrupted run would have drawn (torch's ``RandomSampler`` depends on global RNG history).
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


class DefectDataModule(L.LightningDataModule):
    """Args:
        target: the target dataset entry (``reader`` + arguments, see :mod:`madd.data.sources`).
        class_names: the target classes, in order (the config is the source of truth for the order).
        normal_class: name of the normal ("good") class, or ``None`` when every class is a defect type
            (then DR/FAR are not defined and not logged).
        source: optional source dataset entry; ``source_class_names`` optionally pins its classes.
        label_mapping: source class -> target class (``null`` drops); default: identical names.
        image_size, channels: decoded tensor shape.
        modality: how the images were acquired (:data:`IMAGING_MODALITIES`); the data's property, so that a
            method swapped in by ``model=...`` keeps it (MADD's ``model.views.modality`` reads it).
        splits: fractions of ``train``/``val``/``test``, or ``"predefined"`` to keep the dataset's own split.
        val_fraction: with ``splits="predefined"`` and no ``val`` part in the dataset, the share of its train
            part held out (stratified) as ``val``.
        label_budget: ``{per_class: n}`` or ``{total: n}`` or neither (all training images labelled).
        num_folds, fold: k-fold cross-validation (``num_folds=1`` disables it).
        seed: drives every split and the sampling order.
        batch_size: labelled batch size; ``unlabeled_batch_size``/``source_batch_size`` default to it.
        train_splits: which splits a training batch combines (a model's config sets this).
        max_source_images: cap on source images (stratified), for CPU presets.
        class_merge: ``{new_class: [dataset classes]}`` merges target classes (e.g. every defect type into
            ``defect`` for a binary task); unlisted dataset classes keep their name. ``class_names`` then
            lists the merged classes.
        verify: decode every image once before training so a corrupt file fails at start, by name.
        source_candidates, source_selection: ``source="auto"`` picks the source among the candidates by the
            domain discrepancy score; ``madd.pipeline.train`` resolves it before this class is built (see
            :func:`madd.transfer.source_selection.resolve_auto_source`).
        source_rebalance: ``{enabled, imbalance_ratio}``: oversample minority / undersample majority source
            classes (:mod:`madd.data.rebalance`).
    """

    def __init__(
        self,
        target: Mapping[str, Any],
        class_names: Sequence[str],
        normal_class: str | None = "good",
        source: Mapping[str, Any] | None = None,
        source_class_names: Sequence[str] | None = None,
        label_mapping: Mapping[str, str | None] | None = None,
        image_size: int | Sequence[int] = 128,
        channels: int = 3,
        modality: str = "visual",
        splits: Mapping[str, float] | str | None = None,
        val_fraction: float = 0.1,
        label_budget: Mapping[str, int | None] | None = None,
        num_folds: int = 1,
        fold: int = 0,
        seed: int = 0,
        batch_size: int = 16,
        unlabeled_batch_size: int | None = None,
        source_batch_size: int | None = None,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        train_splits: Sequence[str] = ("target_labeled",),
        max_source_images: int | None = None,
        cache: bool = True,
        class_merge: Mapping[str, Sequence[str]] | None = None,
        verify: bool = True,
        source_candidates: Sequence[Any] | None = None,
        source_selection: Mapping[str, Any] | None = None,
        source_rebalance: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if source == "auto":
            raise DataError("data.source=auto must be resolved before the data module is built: run through "
                            "madd.pipeline.train, or call madd.transfer.source_selection.resolve_auto_source(cfg)")
        self.source_rebalance = dict(source_rebalance or {})
        self.target_spec = dict(target)
        self.class_names = list(class_names)
        if normal_class is not None and normal_class not in self.class_names:
            raise DataError(f"data.normal_class={normal_class!r} is not in data.class_names {self.class_names}")
        self.normal_class = normal_class
        self.source_spec = dict(source) if source else None
        self.source_class_names = list(source_class_names) if source_class_names else None
        self.label_mapping = dict(label_mapping) if label_mapping else None
        self.image_size = image_size
        self.channels = channels
        if modality not in IMAGING_MODALITIES:
            raise DataError(f"data.modality={modality!r} is unknown; choose from {list(IMAGING_MODALITIES)}")
        self.modality = modality
        self.predefined = isinstance(splits, str)
        if self.predefined and splits != "predefined":
            raise DataError(f"data.splits={splits!r}: use fractions {{train, val, test}} or the word 'predefined'")
        self.split_fractions = {} if self.predefined else dict(splits or {"train": 0.7, "val": 0.1, "test": 0.2})
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.val_fraction = val_fraction
        budget = dict(label_budget or {})
        self.budget_per_class, self.budget_total = budget.get("per_class"), budget.get("total")
        self.num_folds, self.fold, self.seed = num_folds, fold, seed
        self.batch_size = batch_size
        self.unlabeled_batch_size = unlabeled_batch_size or batch_size
        self.source_batch_size = source_batch_size or batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        bad = [s for s in train_splits if s not in SPLITS[:3]]
        if bad:
            raise DataError(f"data.train_splits has unknown split(s) {bad}; choose from {list(SPLITS[:3])}")
        if "source" in train_splits and source is None:
            raise DataError("data.train_splits includes `source` but data.source is null; set a source dataset")
        self.train_splits = list(train_splits)
        self.max_source_images = max_source_images
        self.class_merge = {k: list(v) for k, v in class_merge.items()} if class_merge else None
        self.cache, self.verify = cache, verify
        self.records: dict[str, list[Record]] = {}
        self.read_report = ReadReport()
        self.datasets: dict[str, DefectDataset] = {}
        self._verified: set[str] = set()

    # ------------------------------------------------------------------ properties used by models
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def normal_index(self) -> int | None:
        return None if self.normal_class is None else self.class_names.index(self.normal_class)

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        # Runs on one process: generates (and caches) synthetic data before the other ranks read it.
        build_index(self.target_spec, None if self.class_merge else self.class_names)
        if self.source_spec:
            build_index(self.source_spec, self.source_class_names)

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self._build()
        if self.verify:
            # decode every file a stage will read, once, before it starts: a corrupt image fails now, by name.
            # fit also checks test, so a bad test image cannot end a long run; splits nothing reads are skipped.
            used = {"val", "test"} | (set(self.train_splits) if stage in (None, "fit") else set())
            todo = sorted(s for s in used - self._verified if s in self.records)
            verify_records([r for k in todo for r in self.records[k]], self.channels)
            self._verified |= set(todo)

    def _build(self) -> None:
        target = build_index(self.target_spec, None if self.class_merge else self.class_names)
        if self.class_merge:
            target = merge_classes(target, self.class_names, self.class_merge)
        labels = np.array([r.label for r in target.records])
        empty = [n for n, c in zip(self.class_names, np.bincount(labels, minlength=self.num_classes)) if c == 0]
        if empty:
            raise DataError(f"classes {empty} have no images in {target.root}; remove them from data.class_names")
        parts = self._split(labels, [r.split for r in target.records], target.root)
        labeled, unlabeled = label_budget(
            labels, parts["train"], self.seed, self.budget_per_class, self.budget_total, self.class_names
        )
        idx = {"target_labeled": labeled, "target_unlabeled": unlabeled, "val": parts["val"], "test": parts["test"]}
        self.records = {k: [target.records[i] for i in v] for k, v in idx.items()}
        check_split_isolation(self.records)
        self.read_report = target.report
        if rank_zero_only.rank == 0:
            log.info("%s", format_summary(self.records, self.class_names, target.report))
        if self.source_spec:
            source = build_index(self.source_spec, self.source_class_names)
            recs = map_labels(source, self.class_names, self.label_mapping)
            if self.max_source_images and len(recs) > self.max_source_images:
                # exactly max_source_images, stratified, at least one per class (the label-budget rule)
                keep, _ = label_budget([r.label for r in recs], np.arange(len(recs)), self.seed,
                                       total=self.max_source_images)
                recs = [recs[i] for i in keep]
            self.records["source"] = recs
            if rank_zero_only.rank == 0:
                log.info("%s", format_summary({"source": recs}, self.class_names, source.report, "source"))
        self.datasets = {
            k: DefectDataset(v, self.image_size, self.channels, cache=self.cache) for k, v in self.records.items()
        }
        if self.source_rebalance.get("enabled") and "source" in self.datasets:
            self.datasets["source"] = rebalance_dataset(self.datasets["source"], self.num_classes,
                                                        self.source_rebalance.get("imbalance_ratio", 2.0),
                                                        self.seed, self.class_names)
            self.records["source"] = self.datasets["source"].records

    def _split(self, labels: np.ndarray, given: Sequence[str | None], where: str) -> dict[str, np.ndarray]:
        if self.predefined:
            return self._predefined_split(labels, given, where)
        if self.num_folds > 1:
            rest, test = kfold_split(labels, self.num_folds, self.fold, self.seed)
            f = self.split_fractions
            inner = ratio_split(labels[rest], {"train": f.get("train", 0.7), "val": f.get("val", 0.1)}, self.seed)
            return {"train": rest[inner["train"]], "val": rest[inner["val"]], "test": test}
        parts = ratio_split(labels, self.split_fractions, self.seed)
        missing = [k for k in ("train", "val", "test") if k not in parts]
        if missing:
            raise DataError(f"data.splits must define train, val and test fractions; missing {missing}")
        return parts

    def _predefined_split(self, labels: np.ndarray, given: Sequence[str | None], where: str) -> dict[str, np.ndarray]:
        """The dataset's own train / val / test parts; folds and the val cut only ever touch its train part."""
        given = np.array([g or "" for g in given])
        unknown = sorted(set(given) - {"train", "val", "test"})
        if unknown:
            raise DataError(
                f"data.splits=predefined but the dataset at {where} gives no split for some images (or an unknown "
                f"one: {unknown}): use a reader that keeps the dataset's split folders (class_folders with "
                "split_dirs, mvtec, folder, files with a (?P<split>...) group) or set data.splits fractions"
            )
        parts = {k: np.flatnonzero(given == k) for k in ("train", "val", "test")}
        if not len(parts["train"]) or not len(parts["test"]):
            raise DataError(f"data.splits=predefined but the dataset at {where} has "
                            f"{len(parts['train'])} train and {len(parts['test'])} test images; it needs both")
        train = parts["train"]
        if self.num_folds > 1:
            rest, held = kfold_split(labels[train], self.num_folds, self.fold, self.seed)
            return {"train": train[rest], "val": np.sort(np.concatenate([parts["val"], train[held]])),
                    "test": parts["test"]}
        if len(parts["val"]) or self.val_fraction == 0:
            return parts
        inner = ratio_split(labels[train], {"train": 1 - self.val_fraction, "val": self.val_fraction}, self.seed)
        return {"train": train[inner["train"]], "val": train[inner["val"]], "test": parts["test"]}

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        ds = self.datasets[split]
        if len(ds) == 0:
            raise DataError(f"split `{split}` is empty; check data.label_budget and data.splits")
        sampler = None
        if train:
            seed = self.seed + SPLITS.index(split)
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                # one shard per rank. torch's DistributedSampler also draws from (seed, epoch) only, and Lightning
                # leaves it as it is; it would wrap our sampler and never pass set_epoch on (same order every epoch)
                sampler = DistributedSampler(ds, shuffle=True, seed=seed)
            else:
                sampler = EpochSeededRandomSampler(len(ds), seed)
        return DataLoader(
            ds,
            batch_size=min(batch_size, len(sampler)) if train else batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
        )

    def split_loader(self, split: str, train: bool = False) -> DataLoader:
        """A loader of one named split (for tools: source selection, transferability, reports)."""
        self.setup()
        sizes = {"target_unlabeled": self.unlabeled_batch_size, "source": self.source_batch_size}
        return self._loader(split, sizes.get(split, self.batch_size) if train else self.eval_batch_size, train)

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader({s: self.split_loader(s, train=True) for s in self.train_splits}, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        return self.split_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.split_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.split_loader("test")

    def summary(self) -> dict[str, dict[str, int]]:
        """Per-split class counts (printed at the start of a run)."""
        out = {}
        for split, recs in self.records.items():
            counts = np.bincount([r.label for r in recs], minlength=self.num_classes)
            out[split] = {n: int(c) for n, c in zip(self.class_names, counts)}
        return out
