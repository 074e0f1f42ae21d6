"""PaDiM in the madd pipeline: Gaussians fitted on the normal pool images, thresholds on validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from madd.models.backbones import Backbone
from madd.models.normal_only import POOL_SPLITS, NormalOnlyModule
from madd.models.padim.torch_model import PadimModel


class Padim(NormalOnlyModule):
    """``model=padim``. The keys of :class:`PadimModel` plus :class:`NormalOnlyModule`'s."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        normal_index: int | None = None,
        stages: Sequence[int] = (0, 1, 2),
        num_features: int = 100,
        channel_seed: int = 0,
        regularization: float = 0.01,
        blur_sigma: float = 4.0,
        fit_splits: Sequence[str] = POOL_SPLITS,
        threshold: Mapping[str, Any] | None = None,
        pixel_threshold: float = 0.5,
    ) -> None:
        model = PadimModel(backbone, stages, num_features, channel_seed, regularization, blur_sigma)
        super().__init__(model, num_classes, class_names, normal_index, fit_splits, threshold, pixel_threshold)
