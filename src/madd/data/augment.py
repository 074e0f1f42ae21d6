"""Batch augmentations on tensors with kornia (they run wherever the batch is, GPU included).

Named presets keep configs short (``model.augment=weak``); every preset takes and returns ``(B, C, H, W)``
in [0, 1]. ``strong`` follows FixMatch's RandAugment-style strong view plus cutout.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
from torch import nn

from madd.errors import MaddConfigError


def build_augmentation(name: str | None, data_keys: Sequence[str] = ("input",)) -> nn.Module:
    """``none``, ``weak`` (flips + small shift), ``standard`` (+ rotation, contrast) or ``strong`` (RandAugment + cutout).

    ``data_keys=("input", "mask")`` moves masks with their images (nearest resampling; photometric ops skip them).
    """
    if name in (None, "none"):
        return nn.Identity()
    weak = [K.RandomHorizontalFlip(), K.RandomVerticalFlip(), K.RandomAffine(degrees=0.0, translate=(0.0625, 0.0625))]
    presets = {
        "weak": weak,
        "standard": [
            K.RandomHorizontalFlip(),
            K.RandomVerticalFlip(),
            K.RandomAffine(degrees=15.0, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            K.ColorJitter(brightness=0.2, contrast=0.2, p=0.8),
        ],
        "strong": [*weak, K.auto.RandAugment(n=2, m=10), K.RandomErasing(scale=(0.02, 0.15), p=0.5)],
    }
    if name not in presets:
        raise MaddConfigError(f"augmentation {name!r} is unknown; choose from {['none', *presets]}")
    return K.AugmentationSequential(*presets[name], data_keys=list(data_keys), same_on_batch=False)
