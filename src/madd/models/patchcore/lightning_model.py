"""PatchCore in the madd pipeline: the memory bank is fitted on the normal pool images, thresholds on validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from madd.models.backbones import Backbone
from madd.models.normal_only import POOL_SPLITS, NormalOnlyModule
from madd.models.patchcore.torch_model import PatchCoreModel


class PatchCore(NormalOnlyModule):
    """``model=patchcore``. The keys of :class:`PatchCoreModel` plus :class:`NormalOnlyModule`'s."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        normal_index: int | None = None,
        stages: Sequence[int] = (1, 2),
        coreset_ratio: float = 0.1,
        projection_dim: int | None = 128,
        num_neighbors: int = 9,
        coreset_seed: int = 0,
        blur_sigma: float = 4.0,
        fit_splits: Sequence[str] = POOL_SPLITS,
        threshold: Mapping[str, Any] | None = None,
        pixel_threshold: float = 0.5,
    ) -> None:
        model = PatchCoreModel(backbone, stages, coreset_ratio, projection_dim, num_neighbors, coreset_seed, blur_sigma)
        super().__init__(model, num_classes, class_names, normal_index, fit_splits, threshold, pixel_threshold)
