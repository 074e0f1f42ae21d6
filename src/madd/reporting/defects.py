"""Detection rates of special defects from per-image test predictions (``test_predictions.csv``).

Definitions (paper, Sec. 3.1 and Table 4; the thresholds are ``report.py`` options):

* an image is *detected* when it is predicted defective (predicted class != normal class); on datasets without a
  normal class (every class a defect type, e.g. NEU-DET) when its class is predicted correctly;
* DR = detected defective test images / defective test images;
* *small defects*: defective test images whose defect covers less than ``small_fraction`` of the image
  (``0 < defect_area < small_fraction``; the paper's "area < 5 px²" on 256x256 images is a fraction of
  5 / 65536 ≈ 7.6e-5). Images without a mask or boxes have no known area and are left out;
* *rare defects*: test images of the defect classes with fewer than ``rare_below`` (5) labelled training images
  (the ``target_labeled`` split of that run).

Each rate is NaN when its set of images is empty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def detected(frame: pd.DataFrame, normal_index: int | None) -> np.ndarray:
    """Boolean per row: detected as defined above."""
    if normal_index is None:
        return (frame["pred"] == frame["target"]).to_numpy()
    return (frame["pred"] != normal_index).to_numpy()


def defective(frame: pd.DataFrame, normal_index: int | None) -> np.ndarray:
    return np.ones(len(frame), dtype=bool) if normal_index is None else (frame["target"] != normal_index).to_numpy()


def detection_rate(frame: pd.DataFrame, normal_index: int | None, keep: np.ndarray | None = None) -> float:
    """DR over the defective rows (restricted to ``keep`` when given)."""
    rows = defective(frame, normal_index) & (True if keep is None else keep)
    return float(detected(frame, normal_index)[rows].mean()) if rows.any() else math.nan


def small_defect_rate(frame: pd.DataFrame, normal_index: int | None, small_fraction: float) -> float:
    area = frame["defect_area"].to_numpy(dtype=float)
    small = np.isfinite(area) & (area > 0) & (area < small_fraction)
    return detection_rate(frame, normal_index, small)


def rare_classes(labelled_counts: Mapping[str, int], normal_class: str | None, rare_below: int = 5) -> list[str]:
    """Defect classes with fewer than ``rare_below`` labelled training images."""
    return [name for name, n in labelled_counts.items() if name != normal_class and int(n) < rare_below]


def rare_defect_rate(frame: pd.DataFrame, class_names: Sequence[str], normal_index: int | None,
                     rare: Sequence[str]) -> float:
    idx = [class_names.index(c) for c in rare]
    return detection_rate(frame, normal_index, frame["target"].isin(idx).to_numpy())


def per_class_detection_rate(frame: pd.DataFrame, class_names: Sequence[str],
                             normal_index: int | None) -> dict[str, float]:
    """DR of each defect class (the normal class left out)."""
    return {
        name: detection_rate(frame, normal_index, (frame["target"] == k).to_numpy())
        for k, name in enumerate(class_names)
        if k != normal_index
    }
