"""Cross-entropy class weights (madd.models.class_weights)."""

from __future__ import annotations

import pytest
import torch

from madd.errors import MaddConfigError


def test_balanced_class_weights_match_scikit_learn_rule():
    from types import SimpleNamespace

    from madd.models.class_weights import (
        balanced_class_weights,
        check_class_weights,
        split_class_weights,
    )

    labels = [0] * 30 + [1] * 5 + [2] * 5 + [3] * 10  # class 4 absent
    w = balanced_class_weights(labels, 5)
    n, k = 50, 4  # n / (k * count_c) over the 4 classes present
    assert w.tolist() == pytest.approx([n / (k * 30), n / (k * 5), n / (k * 5), n / (k * 10), 1.0])
    records = {"target_labeled": [SimpleNamespace(label=y) for y in labels]}
    trainer = SimpleNamespace(datamodule=SimpleNamespace(records=records))
    assert torch.equal(split_class_weights("balanced", trainer, "target_labeled", 5), w)
    assert torch.equal(split_class_weights(None, trainer, "target_labeled", 5), torch.ones(5))
    assert split_class_weights([1, 2, 3, 4, 5], trainer, "x", 5).tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(MaddConfigError, match="class_weights"):
        split_class_weights("balanced", SimpleNamespace(datamodule=None), "target_labeled", 5)
    for bad in ("inverse", [1.0, 2.0], [1, 1, 1, 1, -1]):
        with pytest.raises(MaddConfigError, match="class_weights"):
            check_class_weights(bad, 5)
