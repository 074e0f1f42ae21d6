"""The W&B media callback (madd.callbacks.wandb_media) on its own: overlays, the fixed image pick, best-value
summaries. The offline runs that log through it are in tests/integration/test_wandb.py."""

from __future__ import annotations

import numpy as np

from madd.callbacks.wandb_media import WandbMedia, overlay, pick_images


def test_overlay_blends_image_and_colormap():
    image = np.full((1, 2, 2), 0.2)
    amap = np.ones((2, 2))
    # gray colormap: amap 1 -> white; 0.5 * 0.2 + 0.5 * 1.0 = 0.6 -> 153
    assert (overlay(image, amap, alpha=0.5, cmap="gray") == 153).all()
    assert overlay(np.zeros((3, 4, 5)), np.zeros((4, 5)), alpha=0.0).shape == (4, 5, 3)


def test_pick_images_prefers_defects_and_is_fixed():
    has_defect = [False] * 10 + [True] * 10
    picked = pick_images(has_defect, 8)
    assert picked == pick_images(has_defect, 8)
    assert sum(has_defect[i] for i in picked) == 6 and len(picked) == 8
    assert pick_images([False, True], 8) == [0, 1]


def test_best_summaries_follow_direction():
    cb = WandbMedia()
    cb.update_best({"val/mAP": 0.5, "val/loss": 1.0, "val/FAR": 0.2, "train/loss": 9.0})
    best = cb.update_best({"val/mAP": 0.4, "val/loss": 0.7, "val/FAR": 0.3, "val/pixel_f1_std": 0.1})
    assert best == {"val/mAP_best": 0.5, "val/loss_best": 0.7, "val/FAR_best": 0.2}
    restored = WandbMedia()
    restored.load_state_dict(cb.state_dict())
    assert restored.best == cb.best
