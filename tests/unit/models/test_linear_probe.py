"""The frozen-feature baseline: the folded head equals scikit-learn's pipeline; end to end through the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from helpers import TINY_DATA, compose_config
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.linear_probe import LinearProbe
from madd.models.linear_probe.torch_model import fit_logistic_head
from madd.pipeline import train


@pytest.mark.parametrize("num_present", [2, 3])
def test_folded_head_gives_scikit_learn_s_probabilities(num_present):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 5)) * [1, 10, 0.1, 3, 1] + [0, 5, -2, 0, 1]
    labels = rng.integers(0, num_present, 60)
    features[:, 0] += labels  # a separable direction
    head = nn.Linear(5, 4).double()
    fit_logistic_head(head, features, labels, num_classes=4, c=0.5)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000)).fit(features, labels)
    probs = head(torch.from_numpy(features)).softmax(1).detach().numpy()
    np.testing.assert_allclose(probs[:, :num_present], reference.predict_proba(features), atol=1e-6)
    assert probs[:, num_present:].max() < 1e-12  # classes without labels are never predicted


def test_single_class_and_bad_options_are_errors():
    with pytest.raises(ValueError, match="at least two classes"):
        fit_logistic_head(nn.Linear(3, 2), np.ones((4, 3)), np.zeros(4, dtype=int), 2)
    with pytest.raises(MaddConfigError, match="model.c=0"):
        LinearProbe(Backbone("resnet18"), 2, c=0)
    with pytest.raises(MaddConfigError, match="model.class_weights"):
        LinearProbe(Backbone("resnet18"), 2, class_weights=[1, 2])


def test_backbone_stays_frozen_and_end_to_end(tmp_path, data_dir):
    cfg = compose_config(["model=linear_probe", "trainer.max_epochs=1", *TINY_DATA], tmp_path, data_dir)
    torch.manual_seed(0)
    metrics = train(cfg)
    assert 0.0 <= metrics["test/accuracy"] <= 1.0
    ckpt = torch.load(next((tmp_path / "out" / "checkpoints").glob("epoch_*.ckpt")), weights_only=True)
    head = ckpt["state_dict"]["net.head.weight"]
    assert head.abs().sum() > 0  # the checkpoint holds the fitted head, not the zero initialisation
    module = LinearProbe(Backbone("tf_efficientnet_lite0", "package", freeze_bn=True), 5)
    assert not any(p.requires_grad for p in module.net.backbone.parameters())


def test_lp_ft_head_starts_at_the_probe_of_the_labelled_images():
    from madd.models.classifier import ImageClassifier
    from madd.models.linear_probe.torch_model import probe_features, probe_init_head

    torch.manual_seed(0)
    net = ImageClassifier(Backbone("resnet18"), 3, zero_init_head=True).train()
    loader = [{"image": torch.rand(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 1])} for _ in range(3)]
    probe_init_head(net, loader, 3, c=1.0, class_weight=None)
    assert net.training  # back in the mode it was in
    features, labels = probe_features(net, loader)
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(features, labels)  # raw features: no scaler
    with torch.no_grad():
        probs = net.eval()(torch.cat([b["image"] for b in loader])).softmax(1).numpy()
    np.testing.assert_allclose(probs, reference.predict_proba(features), atol=1e-4)
    from madd.models.supervised import SupervisedClassifier

    with pytest.raises(MaddConfigError, match="model.head_init"):
        SupervisedClassifier(Backbone("resnet18"), 3, head_init="random")
