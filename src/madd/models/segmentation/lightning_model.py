"""Defect segmentation on segmentation_models_pytorch: U-Net (or any smp architecture) with any smp encoder.

Trains on the masks of the ``target_labeled`` split (for segmentation usually every training image:
``data.label_budget.total=null``) with the Dice loss of the U-Net backbone study (or any smp loss by config).

Masks:

* ``mode=binary``: one output channel, foreground = any defect pixel;
* ``mode=multiclass``: one channel per class. The datasets' masks are binary with one image label, so a
  pixel's class is the image's label where the mask is set and the background elsewhere. The background
  channel is the normal class (``normal_index``); without a normal class, channel 0 is an added background
  and class ``k`` is channel ``k + 1``.

Evaluation (``val/...``, ``test/...``):

* pixel level on defect-vs-background (``P(defect) = 1 - P(background)``) through
  :class:`madd.metrics.PixelMetrics`: per-image F1 and IoU with its empty-mask rule (both empty = 1, one
  empty = 0), their mean and std over the images, pixel AUROC; plus ``pixel_f1_defective`` /
  ``pixel_iou_defective``, the same means over the images whose ground truth has defect pixels (on
  normal-dominant data the mean over all images mostly counts correctly empty predictions); multi-class
  mode adds ``pixel_miou`` (torchmetrics ``MulticlassJaccardIndex``, macro over the channels, all pixels);
* image level through :class:`madd.metrics.DefectMetrics`: an image is predicted defective when any
  pixel's defect probability reaches ``pixel_threshold`` (so DR/FAR follow from the masks). In binary mode
  the image classes are ``[normal, defect]``, the truth being ``label != normal`` (or, without a normal
  class, a non-empty mask); in multi-class mode the dataset's classes, the defective class being the one
  with the highest pixel probability;
* ``test/train_time_s``: wall time of the fit loop (Lightning's ``Timer``; kept across resumes) and
  ``test/num_params``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from lightning.pytorch.callbacks import Timer
from torchmetrics.classification import MulticlassJaccardIndex

from madd.data.augment import build_augmentation
from madd.data.dataset import image_hw
from madd.errors import DataError, MaddConfigError
from madd.metrics import PixelMetrics
from madd.models.base import DefectModule
from madd.models.segmentation.loss import SegmentationLoss
from madd.models.segmentation.torch_model import SegmentationNet, output_channels


def threshold_to_half(score: torch.Tensor, threshold: float) -> torch.Tensor:
    """Monotone piecewise-linear map of [0, 1] onto itself sending ``threshold`` to 0.5.

    Image scores go through it before :class:`DefectMetrics`, whose decision is an argmax: ``[1 - s', s']``
    then says "defect" exactly when ``s >= threshold`` (ties at the threshold itself count as normal), while
    ranking metrics (AUROC, AP) are unchanged because the map is increasing.
    """
    t = float(threshold)
    low = score / (2 * t)
    high = 0.5 + (score - t) / (2 * (1 - t))
    return torch.where(score < t, low, high).clamp(0, 1)


class SegmentationModule(DefectModule):
    """Args:
        num_classes, class_names, normal_index: the dataset's classes (from the data config).
        arch, encoder_name, encoder_weights, encoder_depth, arch_options, normalization: the network, see
            :class:`~madd.models.segmentation.torch_model.SegmentationNet`.
        mode: ``binary`` or ``multiclass`` masks.
        loss, loss_options: ``{smp loss name: weight}`` and per-loss keyword arguments, see
            :class:`~madd.models.segmentation.loss.SegmentationLoss`.
        augment: kornia preset (``none``/``weak``/``standard``) applied to images and masks together.
        pixel_threshold: defect-probability threshold for predicted masks, per-image F1/IoU and image decisions.
        image_size: ``data.image_size``, checked against the encoder's input divisor at construction.
        optimizer, scheduler: partials, as for every method.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        normal_index: int | None = None,
        arch: str = "Unet",
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        arch_options: Mapping | None = None,
        normalization: Mapping | None = None,
        mode: str = "binary",
        loss: Mapping[str, float] | None = None,
        loss_options: Mapping[str, Mapping] | None = None,
        augment: str | None = "weak",
        pixel_threshold: float = 0.5,
        image_size: int | Sequence[int] | None = None,
        optimizer=None,
        scheduler=None,
    ) -> None:
        names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        channels = output_channels(mode, num_classes, normal_index)
        if mode == "binary":
            image_classes = [names[normal_index] if normal_index is not None else "normal", "defect"]
            image_normal = 0
        else:
            image_classes, image_normal = names, normal_index
        if not 0.0 < pixel_threshold < 1.0:
            raise MaddConfigError(f"model.pixel_threshold={pixel_threshold} must lie strictly between 0 and 1")
        # `model/scheduler=none` composes to an empty mapping, which means "no scheduler"
        scheduler = scheduler or None
        super().__init__(len(image_classes), image_classes, image_normal, optimizer, scheduler, pixel_threshold)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.mode = mode
        self.dataset_normal_index = normal_index
        self.background = normal_index if normal_index is not None else 0
        self.net = SegmentationNet(arch, encoder_name, encoder_weights, channels, encoder_depth, normalization,
                                   arch_options)
        if image_size is not None:
            self.check_image_size(image_size)
        self.loss_fn = SegmentationLoss(mode, loss or {"dice": 1.0}, loss_options)
        self.augment = None if augment in (None, "none") else build_augmentation(augment, ("input", "mask"))
        # the same per-image F1/IoU, over the images whose ground truth has defect pixels
        self.val_pixel_defective = PixelMetrics(pixel_threshold)
        self.test_pixel_defective = PixelMetrics(pixel_threshold)
        self.val_miou = MulticlassJaccardIndex(channels, average="macro") if mode == "multiclass" else None
        self.test_miou = MulticlassJaccardIndex(channels, average="macro") if mode == "multiclass" else None
        self._timer: Timer | None = None
        self.train_time_s: float | None = None  # wall time of the fit loop, set when it ends

    # ----------------------------------------------------------------- checks
    def check_image_size(self, image_size: int | Sequence[int]) -> None:
        hw = image_hw(image_size)
        d = self.net.size_divisor
        if any(v % d for v in hw):
            fixed = [-(-v // d) * d for v in hw]
            raise MaddConfigError(
                f"data.image_size={list(hw)} is not divisible by {d}, which {self.hparams.arch} with encoder "
                f"{self.hparams.encoder_name} (depth {self.hparams.encoder_depth}) requires; set "
                f"data.image_size={fixed if len(set(fixed)) > 1 else fixed[0]}"
            )

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None:
            return
        if getattr(dm, "image_size", None) is not None:
            self.check_image_size(dm.image_size)
        if stage == "fit" and getattr(dm, "records", None):  # the datamodule's setup ran first
            missing = [r.path for r in dm.records.get("target_labeled", []) if not r.has_localisation]
            if missing:
                raise DataError(
                    f"segmentation trains on pixel masks, but {len(missing)} labelled training images have none "
                    f"(e.g. {missing[0]}); use a dataset with masks or polygons (image_mask, coco, yolo "
                    "segmentation, synthetic) in data.target"
                )

    # ----------------------------------------------------------------- network
    def train_splits(self) -> list[str]:
        return ["target_labeled"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Mask logits ``(B, channels, H, W)`` of raw ``[0, 1]`` images."""
        return self.net(images)

    def defect_probability(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` probability that a pixel is a defect (any class but the background)."""
        if self.mode == "binary":
            return logits.sigmoid()
        return 1.0 - logits.softmax(1)[:, self.background : self.background + 1]

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.defect_probability(self(images))

    def predicted_mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Binary mode: boolean ``(B, 1, H, W)``; multi-class: channel index ``(B, H, W)``, background where
        the defect probability stays below ``pixel_threshold``."""
        defect = self.defect_probability(logits) >= self.pixel_threshold
        if self.mode == "binary":
            return defect
        fg = logits.clone()
        fg[:, self.background] = float("-inf")
        return torch.where(defect[:, 0], fg.argmax(1), torch.full_like(fg[:, 0], self.background, dtype=torch.long))

    def mask_target(self, masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss target: the float mask (binary) or the per-pixel channel index (multi-class)."""
        if self.mode == "binary":
            return masks
        channel = labels if self.dataset_normal_index is not None else labels + 1
        return torch.where(masks[:, 0] > 0.5, channel.view(-1, 1, 1), self.background).long()

    def image_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Image-level class scores from the mask logits, for :class:`DefectMetrics` (see the module doc)."""
        defect = threshold_to_half(self.defect_probability(logits).flatten(1).amax(1), self.pixel_threshold)
        if self.mode == "binary":
            return torch.stack([1 - defect, defect], 1)
        peak = logits.softmax(1).flatten(2).amax(2)  # (B, channels): the most confident pixel of each class
        if self.dataset_normal_index is None:
            return peak[:, 1:] / peak[:, 1:].amax(1, keepdim=True).clamp_min(1e-12)
        fg = peak.clone()
        fg[:, self.background] = 0.0
        scores = defect[:, None] * fg / fg.amax(1, keepdim=True).clamp_min(1e-12)
        scores[:, self.background] = 1 - defect
        return scores

    def image_target(self, batch: dict) -> torch.Tensor:
        """Image-level truth: the label (multi-class), label != normal (binary), else "mask not empty"."""
        if self.mode == "multiclass":
            return batch["label"]
        if self.dataset_normal_index is not None:
            return (batch["label"] != self.dataset_normal_index).long()
        return batch["mask"].flatten(1).amax(1).gt(0.5).long()

    # ----------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        b = batch["target_labeled"]
        if not bool(b["has_mask"].all()):
            raise DataError("a labelled training batch holds images without masks; segmentation needs masks")
        images, masks = b["image"], b["mask"]
        if self.augment is not None:
            with torch.no_grad():
                images, masks = self.augment(images, masks)
        logits = self(images)
        loss, parts = self.loss_fn(logits, self.mask_target(masks, b["label"]))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        if len(parts) > 1:
            self.log_dict({f"train/loss_{k}": v for k, v in parts.items()}, batch_size=len(images))
        return loss

    # ----------------------------------------------------------------- evaluation
    def _eval_step(self, batch: dict, stage: str) -> None:
        images = batch["image"]
        logits = self(images)
        keep = batch["has_mask"]
        if keep.any():
            target = self.mask_target(batch["mask"][keep], batch["label"][keep])
            loss, _ = self.loss_fn(logits[keep], target)
            self.log(f"{stage}/loss", loss, batch_size=int(keep.sum()), sync_dist=True)
            amap = self.defect_probability(logits[keep])
            masks = batch["mask"][keep]
            getattr(self, f"{stage}_pixel").update(amap, masks)
            defective = masks.flatten(1).amax(1) > 0.5
            if defective.any():
                getattr(self, f"{stage}_pixel_defective").update(amap[defective], masks[defective])
            miou = getattr(self, f"{stage}_miou")
            if miou is not None:
                miou.update(self.predicted_mask(logits[keep]), target)
        scores = self.image_scores(logits)
        target = self.image_target(batch)
        getattr(self, f"{stage}_metrics").update(scores, target)
        if stage == "test":
            self.test_outputs.setdefault("probs", []).append(scores.detach().cpu())
            self.test_outputs.setdefault("target", []).append(target.detach().cpu())
            self.test_outputs.setdefault("index", []).append(batch["index"].detach().cpu())

    def _eval_epoch_end(self, stage: str) -> None:
        extra: dict[str, float] = {}
        defective = getattr(self, f"{stage}_pixel_defective")
        if defective.f1.update_count:
            values = defective.compute()
            extra.update({f"{k}_defective": values[k] for k in ("pixel_f1", "pixel_iou")})
        defective.reset()
        miou = getattr(self, f"{stage}_miou")
        if miou is not None and miou.update_count:
            extra["pixel_miou"] = float(miou.compute())
            miou.reset()
        if stage == "test":
            if self.train_time_s is not None:
                extra["train_time_s"] = self.train_time_s
            extra["num_params"] = float(sum(p.numel() for p in self.net.parameters()))
        for k, v in extra.items():
            self.log(f"{stage}/{k}", v, sync_dist=True)
        super()._eval_epoch_end(stage)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        logits = self(batch["image"])
        scores = self.image_scores(logits)
        return {"anomaly_map": self.defect_probability(logits), "mask": self.predicted_mask(logits),
                "probs": scores, "pred": scores.argmax(1)}

    # ----------------------------------------------------------------- training time
    def on_train_end(self) -> None:
        # read here, not at test time: `trainer.test(ckpt_path=best)` restores the Timer's state from that
        # checkpoint on top of the running count, which would count the time up to the best epoch twice
        timer = next((cb for cb in self.trainer.callbacks if isinstance(cb, Timer)), None)
        if timer is not None:
            self.train_time_s = float(timer.time_elapsed("train"))

    def configure_callbacks(self):
        # Lightning's Timer measures the fit loop and keeps its count in checkpoints (exact after resume).
        # A Timer already configured (e.g. with a time limit) is used as is; else this module brings one,
        # the same instance every call so that `trainer.test` after `fit` does not replace it.
        if any(isinstance(cb, Timer) for cb in self.trainer.callbacks):
            return []
        if self._timer is None:
            self._timer = Timer(verbose=False)
        return [self._timer]
