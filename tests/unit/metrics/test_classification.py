"""Image-level defect metrics (madd.metrics.classification) against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from madd.metrics import DefectMetrics

# Six test images, classes 0 = good (normal), 1 = crack, 2 = pore.
#              probs (good, crack, pore)   true  predicted (argmax)
PROBS = torch.tensor(
    [
        [0.70, 0.20, 0.10],  # good   good
        [0.30, 0.60, 0.10],  # good   crack   <- false alarm
        [0.50, 0.10, 0.40],  # good   good
        [0.20, 0.70, 0.10],  # crack  crack
        [0.60, 0.30, 0.10],  # crack  good    <- missed defect
        [0.10, 0.25, 0.65],  # pore   pore
    ]
)
TARGET = torch.tensor([0, 0, 0, 1, 1, 2])


def _metrics(normal_index=0) -> dict[str, float]:
    m = DefectMetrics(3, normal_index)
    m.update(PROBS[:4], TARGET[:4])  # two batches: accumulation across updates
    m.update(PROBS[4:], TARGET[4:])
    return m.compute()


def test_detection_rate_and_false_alarm_rate_by_hand():
    out = _metrics()
    # DR: defective images 3, 4, 5; predicted defective (argmax != good): 3 and 5 -> 2/3
    assert out["DR"] == pytest.approx(2 / 3)
    # FAR: normal images 0, 1, 2; predicted defective: image 1 -> 1/3
    assert out["FAR"] == pytest.approx(1 / 3)


def test_accuracy_f1_and_confusion_by_hand():
    m = DefectMetrics(3, 0)
    m.update(PROBS, TARGET)
    out = m.compute()
    # correct: images 0, 2, 3, 5 -> 4/6
    assert out["accuracy"] == pytest.approx(4 / 6)
    # per class F1 = 2TP / (2TP + FP + FN): good 2TP=4, FP=1 (img 4), FN=1 (img 1) -> 4/6;
    # crack 2TP=2, FP=1 (img 1), FN=1 (img 4) -> 2/4; pore -> 1.  macro: (2/3 + 1/2 + 1) / 3 = 13/18
    assert out["f1"] == pytest.approx(13 / 18)
    # rows true, columns predicted
    assert m.confusion_matrix().tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_map_by_hand():
    out = _metrics()
    # AP = sum_n (R_n - R_{n-1}) P_n over the ranking of each class's score (one vs rest):
    # good : scores .7(P) .6(N) .5(P) .3(P) .2 .1 -> 1/3*1 + 1/3*2/3 + 1/3*3/4 = 29/36
    # crack: scores .7(P) .6(N) .3(P) .25 .2 .1   -> 1/2*1 + 1/2*2/3          = 30/36
    # pore : the single positive ranks first       -> 1                        = 36/36
    assert out["mAP"] == pytest.approx((29 + 30 + 36) / 108)


def test_map_and_auroc_match_sklearn_on_random_scores():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(40, 4, generator=g).softmax(1)
    target = torch.arange(40) % 4
    m = DefectMetrics(4, None)
    m.update(probs, target)
    out = m.compute()
    onehot = np.eye(4)[target.numpy()]
    assert out["mAP"] == pytest.approx(average_precision_score(onehot, probs.numpy(), average="macro"), abs=1e-6)
    assert out["auroc"] == pytest.approx(roc_auc_score(target.numpy(), probs.numpy(), multi_class="ovr"), abs=1e-6)


def test_no_normal_class_means_no_dr_far():
    out = _metrics(normal_index=None)
    assert "DR" not in out and "FAR" not in out and "mAP" in out


def test_normal_class_need_not_be_index_zero():
    # make class 2 ("pore") the normal one: defective = images 0..4, predicted defective = argmax != 2
    out = _metrics(normal_index=2)
    assert out["DR"] == pytest.approx(1.0)  # none of 0..4 is predicted as class 2
    assert out["FAR"] == pytest.approx(0.0)  # the one normal image (5) is predicted normal


def test_reset_clears_state():
    m = DefectMetrics(3, 0)
    m.update(PROBS, TARGET)
    m.reset()
    m.update(PROBS[:1], TARGET[:1])
    assert m.confusion_matrix().sum() == 1


def test_image_auroc_and_dr_at_far_by_hand():
    # defect score 1 - p(good): normal images .3 .7 .5, defective .8 .4 .9
    out = _metrics()
    # pairs (defect > normal): .8 beats 3, .4 beats 1 (.3), .9 beats 3 -> 7 of 9
    assert out["image_auroc"] == pytest.approx(7 / 9)
    # FAR <= 5 %: no normal above the threshold -> threshold above .7 catches .8 and .9 -> 2/3
    assert out["DR_at_FAR"] == pytest.approx(2 / 3)
    # FAR <= 2/3 allows the normals .7 and .5 above: threshold .4 catches all three defects
    m = DefectMetrics(3, 0, target_far=0.67)
    m.update(PROBS, TARGET)
    assert m.compute()["DR_at_FAR"] == pytest.approx(1.0)
    assert "image_auroc" not in _metrics(normal_index=None)
