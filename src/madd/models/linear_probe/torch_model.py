"""The frozen-feature probe's computing: a logistic regression on standardised pooled features, folded into the
classifier's linear head so the probe is one ordinary :class:`~madd.models.classifier.ImageClassifier`."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn


def fit_logistic_head(head: nn.Linear, features: np.ndarray, labels: np.ndarray, num_classes: int, c: float = 1.0,
                      class_weight: str | None = None, max_iter: int = 2000) -> LogisticRegression:
    """Fit ``StandardScaler -> LogisticRegression(C=c)`` (scikit-learn, L-BFGS, multinomial) and write it into ``head``.

    With ``z = (f - mu) / sigma`` and the regression's ``W z + b``, the head computes
    ``(W / sigma) f + (b - W mu / sigma)``: the same logits, so the probe exports and evaluates like any network.
    Classes absent from ``labels`` get logit ``-inf``-like bias (-1e4), so they are never predicted.
    """
    scaler = StandardScaler().fit(features)
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"the linear probe needs labels of at least two classes, got only {present.tolist()}")
    reg = LogisticRegression(C=c, max_iter=max_iter, class_weight=class_weight)
    reg.fit(scaler.transform(features), labels)
    coef = reg.coef_ if len(present) > 2 else np.vstack([-reg.coef_[0] / 2, reg.coef_[0] / 2])
    bias = reg.intercept_ if len(present) > 2 else np.array([-reg.intercept_[0] / 2, reg.intercept_[0] / 2])
    weight = np.zeros((num_classes, features.shape[1]))
    full_bias = np.full(num_classes, -1e4)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weight[present] = coef / scale
    full_bias[present] = bias - (coef / scale) @ scaler.mean_
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(full_bias))
    return reg
