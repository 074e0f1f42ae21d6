"""Weights & Biases extras the ``WandbLogger`` does not log by itself; inert when no ``WandbLogger`` is attached.

* ``val/*_best`` run summaries: the best value of every ``val/`` metric so far (lowest for names ending in one
  of ``lower_is_better``, e.g. ``val/loss``, ``val/FAR``; highest otherwise; ``*_std`` spreads left out);
* a fixed set of validation images every ``every_n_epochs`` epochs: with the module's ``anomaly_map`` the map
  (``val/anomaly_map``) and its overlay on the image with the ground-truth mask as a W&B mask layer
  (``val/overlay``); without one the images captioned with the prediction (``val/predictions``);
* at test: PR curves (``test/pr_curve``, one-vs-rest per class) and the confusion matrix
  (``test/confusion_matrix``) through ``wandb.plot``, from the module's ``test_outputs``.

``train/*`` time series (loss terms, the threshold tau, acceptance rate, memory-bank fill, loss weights, ...) need
nothing here: whatever a module logs with ``self.log`` reaches W&B through the logger. The final checkpoint as
an artifact is the logger's own ``log_model`` option (``logger.wandb.log_model=true``).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """``(1-alpha) * image + alpha * colormap(amap)`` as ``uint8 (H, W, 3)``.

    ``image`` is ``(C, H, W)`` in [0, 1] (C = 1 or 3), ``amap`` ``(H, W)`` in [0, 1].
    """
    from matplotlib import colormaps

    rgb = np.repeat(image, 3, 0) if image.shape[0] == 1 else image[:3]
    heat = colormaps[cmap](np.clip(amap, 0.0, 1.0))[..., :3].transpose(2, 0, 1)
    blended = (1.0 - alpha) * rgb + alpha * heat
    return np.round(np.clip(blended, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] to ``uint8 (H, W, 3)`` (grey replicated)."""
    rgb = np.repeat(image, 3, 0) if image.shape[0] == 1 else image[:3]
    return np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8).transpose(1, 2, 0)


def pick_images(has_defect: Sequence[bool], count: int) -> list[int]:
    """Dataset positions of a fixed, deterministic choice of ``count`` images: defective ones first (three in
    four places), the rest normal, each group spread evenly over the split."""
    defective = [i for i, d in enumerate(has_defect) if d]
    normal = [i for i, d in enumerate(has_defect) if not d]

    def spread(items: list[int], k: int) -> list[int]:
        if k >= len(items):
            return list(items)
        return [items[int(j)] for j in np.linspace(0, len(items) - 1, k).round()]

    n_def = min(len(defective), max(count - count // 4, count - len(normal)))
    return sorted(spread(defective, n_def) + spread(normal, min(len(normal), count - n_def)))


class WandbMedia(L.Callback):
    """Args:
        num_images: how many fixed validation images to log each time.
        every_n_epochs: log the images every that many validation epochs.
        pr_curves, confusion_matrix: log them at test.
        lower_is_better: ``val/`` metric name endings whose best value is the minimum.
        alpha, cmap: the overlay's blending weight and matplotlib colormap.
    """

    def __init__(
        self,
        num_images: int = 8,
        every_n_epochs: int = 1,
        pr_curves: bool = True,
        confusion_matrix: bool = True,
        lower_is_better: Sequence[str] = ("loss", "FAR"),
        alpha: float = 0.5,
        cmap: str = "jet",
    ) -> None:
        self.num_images = num_images
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.pr_curves = pr_curves
        self.confusion_matrix = confusion_matrix
        self.lower_is_better = tuple(lower_is_better)
        self.alpha, self.cmap = alpha, cmap
        self.best: dict[str, float] = {}
        self._indices: list[int] | None = None

    # ------------------------------------------------------------------ state (resumes keep the bests)
    def state_dict(self) -> dict:
        return {"best": dict(self.best)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = {k: float(v) for k, v in state_dict.get("best", {}).items()}

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _logger(trainer: L.Trainer) -> WandbLogger | None:
        if not trainer.is_global_zero:
            return None
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def _better(self, name: str, new: float, old: float) -> bool:
        return new < old if name.endswith(self.lower_is_better) else new > old

    def update_best(self, metrics: dict[str, float]) -> dict[str, float]:
        """Fold one epoch's ``val/`` values into the bests; return the ``<name>_best`` summaries."""
        for name, value in metrics.items():
            # spreads (pixel_f1_std) have no "best"
            if not name.startswith("val/") or name.endswith(("_best", "_std")) or not np.isfinite(value):
                continue
            if name not in self.best or self._better(name, value, self.best[name]):
                self.best[name] = float(value)
        return {f"{k}_best": v for k, v in self.best.items()}

    # ------------------------------------------------------------------ validation
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: the module logs its val metrics in its own epoch-end
        # hook, which Lightning calls after the callbacks' one
        logger = self._logger(trainer)
        if logger is None or trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
        logger.experiment.summary.update(self.update_best(values))
        if self.num_images > 0 and trainer.current_epoch % self.every_n_epochs == 0:
            self._log_images(trainer, pl_module, logger)

    def _dataset(self, trainer: L.Trainer):
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        return getattr(loader, "dataset", None)

    def _log_images(self, trainer: L.Trainer, pl_module: L.LightningModule, logger: WandbLogger) -> None:
        import wandb

        dataset = self._dataset(trainer)
        if dataset is None or len(dataset) == 0:
            return
        normal = getattr(pl_module, "normal_index", None)
        if self._indices is None:
            samples = [dataset[i] for i in range(len(dataset))]
            defect = [bool(s["mask"].any()) or (normal is not None and int(s["label"]) != normal) for s in samples]
            self._indices = pick_images(defect, self.num_images)
        batch = [dataset[i] for i in self._indices]
        images = torch.stack([s["image"] for s in batch]).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            probs = pl_module(images).softmax(1).float().cpu()
            amap = pl_module.anomaly_map(images)
        pl_module.train(was_training)
        names = getattr(pl_module, "class_names", None) or [str(k) for k in range(probs.shape[1])]
        captions = [
            f"#{i} true={names[int(s['label'])]} pred={names[int(p.argmax())]} p={float(p.max()):.2f}"
            for i, s, p in zip(self._indices, batch, probs)
        ]
        pixels = images.float().cpu().numpy()
        if amap is None:
            media = {"val/predictions": [wandb.Image(to_uint8(img), caption=c) for img, c in zip(pixels, captions)]}
        else:
            maps = amap.float().detach().cpu().numpy()[:, 0]
            over, raw = [], []
            for img, m, s, c in zip(pixels, maps, batch, captions):
                layers = {}
                if bool(s["has_mask"]):
                    layers = {"ground_truth": {"mask_data": s["mask"][0].numpy().astype(np.uint8),
                                               "class_labels": {0: "background", 1: "defect"}}}
                over.append(wandb.Image(overlay(img, m, self.alpha, self.cmap), caption=c, masks=layers or None))
                raw.append(wandb.Image(np.round(np.clip(m, 0, 1) * 255).astype(np.uint8), caption=c))
            media = {"val/overlay": over, "val/anomaly_map": raw}
        logger.log_metrics(media, step=trainer.global_step)

    # ------------------------------------------------------------------ test
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # on_test_end: the base module concatenates test_outputs in its own on_test_epoch_end
        logger = self._logger(trainer)
        outputs = getattr(pl_module, "test_outputs", None) or {}
        if logger is None or not isinstance(outputs.get("probs"), torch.Tensor):
            return
        import wandb

        probs = outputs["probs"].float().numpy()
        target = outputs["target"].numpy()
        names = list(getattr(pl_module, "class_names", None) or [str(k) for k in range(probs.shape[1])])
        plots = {}
        if self.pr_curves:
            plots["test/pr_curve"] = wandb.plot.pr_curve(target, probs, labels=names)
        if self.confusion_matrix:
            plots["test/confusion_matrix"] = wandb.plot.confusion_matrix(
                y_true=target.tolist(), preds=probs.argmax(1).tolist(), class_names=names
            )
        if plots:
            logger.log_metrics(plots, step=trainer.global_step)
