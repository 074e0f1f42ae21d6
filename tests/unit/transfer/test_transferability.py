"""Transferability scores (D-deepscore, LogME, H-score) and the checkpoint ranking command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from helpers import compose_config
from omegaconf import open_dict
from scipy.optimize import minimize

from madd.errors import MaddConfigError
from madd.models.backbones import Backbone
from madd.models.supervised import SupervisedClassifier
from madd.transfer.checkpoint_ranking import infer_resnet, layer3_features, load_candidate, run_ranking
from madd.transfer.transferability import SCORES, class_mean_matrix, d_deepscore, h_score, logme



def clustered(n=150, d=24, classes=4, spread=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    means = rng.normal(0, spread, (classes, d))
    return means[y] + rng.normal(0, 1, (n, d)), y


# ------------------------------------------------------------------------------------------------ hand values
def test_one_dimensional_hand_values():
    f = np.array([[0.0], [2.0], [10.0], [12.0]])
    y = np.array([0, 0, 1, 1])
    # centred: var(f) = 104/3, var(E[f|y]) = 100/3
    assert h_score(f, y) == pytest.approx(100 / 104)
    # uncentred second moments: 248/3 and 244/3 (D-deepscore's public code does not centre)
    assert d_deepscore(f, y) == pytest.approx(244 / 248)
    assert class_mean_matrix(f, y)[:, 0].tolist() == [1, 1, 11, 11]


def test_d_deepscore_equals_singular_value_form():
    for seed in range(3):
        f, y = clustered(n=60, d=10, seed=seed)
        g = class_mean_matrix(f, y)
        sf = np.linalg.svd(f, compute_uv=False)
        sg = np.linalg.svd(g, compute_uv=False)
        keep = sf**2 > 1e-15 * (sf**2).max()
        assert d_deepscore(f, y) == pytest.approx(float((sg[keep] ** 2 / sf[keep] ** 2).sum()), rel=1e-9)


def _evidence(f, yc, log_a, log_b):
    """Bayesian linear regression log evidence / n by brute force (LogME paper, Eq. 2)."""
    a, b = np.exp(log_a), np.exp(log_b)
    n, d = f.shape
    A = a * np.eye(d) + b * f.T @ f
    m = b * np.linalg.solve(A, f.T @ yc)
    ev = (n / 2 * np.log(b) + d / 2 * np.log(a) - n / 2 * np.log(2 * np.pi) - b / 2 * np.sum((f @ m - yc) ** 2)
          - a / 2 * m @ m - 0.5 * np.linalg.slogdet(A)[1])
    return ev / n


def test_logme_matches_direct_evidence_maximisation():
    f, y = clustered(n=80, d=6, classes=3, spread=1.5, seed=4)
    best = []
    for c in range(3):
        yc = (y == c).astype(float)
        res = minimize(lambda p: -_evidence(f, yc, *p), x0=[0.0, 0.0], method="Nelder-Mead",
                       options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000})
        best.append(-res.fun)
    assert logme(f, y) == pytest.approx(np.mean(best), rel=1e-4)


# ------------------------------------------------------------------------------------------------ known answers
@pytest.mark.parametrize("name", sorted(SCORES))
def test_separated_classes_beat_shuffled_labels(name):
    f, y = clustered(n=200, d=32, spread=3.0)
    shuffled = np.random.default_rng(1).permutation(y)
    assert SCORES[name](f, y) > SCORES[name](f, shuffled)


@pytest.mark.parametrize("name", ["d_deepscore", "logme", "h_score_shrinkage"])
def test_score_grows_with_class_separation(name):
    values = [SCORES[name](*clustered(n=120, d=64, spread=s, seed=2)) for s in (0.2, 1.0, 4.0)]
    assert values[0] < values[1] < values[2], values


def test_plain_h_score_degenerates_when_fewer_images_than_dimensions():
    # the reason h_score_shrinkage exists: with n <= d the plain H-score is C - 1 for any features
    f, y = clustered(n=40, d=256, spread=0.01, seed=5)
    assert h_score(f, y) == pytest.approx(3.0, rel=1e-6)
    assert SCORES["h_score_shrinkage"](f, y) < 1.0


def test_bad_inputs_are_clear():
    with pytest.raises(MaddConfigError, match="at least 2"):
        logme(np.zeros((1, 3)), np.array([0]))
    with pytest.raises(MaddConfigError, match="non-finite|NaN"):
        d_deepscore(np.full((4, 2), np.nan), np.array([0, 0, 1, 1]))
    with pytest.raises(MaddConfigError, match="unknown transferability score"):
        from madd.transfer.transferability import score_features

        score_features("leep", np.zeros((4, 2)), np.array([0, 0, 1, 1]))


# ------------------------------------------------------------------------------------------------ checkpoints
def test_infer_resnet_and_load_candidates(tmp_path):
    assert infer_resnet(torchvision.models.resnet18().state_dict()) == ("resnet18", "")
    assert infer_resnet(torchvision.models.resnet34().state_dict())[0] == "resnet34"
    assert infer_resnet(torchvision.models.resnet50().state_dict())[0] == "resnet50"
    with pytest.raises(MaddConfigError, match="not a torchvision ResNet"):
        infer_resnet(torchvision.models.mobilenet_v2().state_dict())

    model = SupervisedClassifier(Backbone("resnet18"), num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    backbone, arch = load_candidate(str(ckpt))
    assert arch == "resnet18"
    images = torch.rand(5, 3, 32, 32)
    feats = layer3_features(backbone, images, (0, 1), image_size=None)
    assert feats[0].shape == (5, 256) and feats[1].shape == (5, 256)
    # the same numbers as the classifier's own backbone
    model.eval()
    with torch.no_grad():
        x = model.net.normalize(images)
        x = model.net.backbone.stages[1](model.net.backbone.stages[0](model.net.backbone.stem(x)))
        ref = model.net.backbone.stages[2](x).mean((2, 3))
    assert np.allclose(feats[1], ref.double().numpy(), atol=1e-5)
    with pytest.raises(MaddConfigError, match="layer3_blocks"):
        layer3_features(backbone, images, (5,), image_size=None)


def test_timm_candidates_from_packages_and_madd_checkpoints(tmp_path):
    """A madd checkpoint names its backbone in its stored config: any timm backbone is read, not only ResNets."""
    packaged, arch = load_candidate("package:tf_efficientnet_lite0")
    assert arch == "tf_efficientnet_lite0" and packaged.mean == (0.5, 0.5, 0.5)
    model = SupervisedClassifier(Backbone("tf_efficientnet_lite0", "package"), num_classes=3)
    ckpt = tmp_path / "lite0.ckpt"
    torch.save({"state_dict": model.state_dict(),
                "madd_config": {"model": {"backbone": {"name": "tf_efficientnet_lite0"}}}}, ckpt)
    backbone, arch = load_candidate(str(ckpt))
    assert arch == "tf_efficientnet_lite0"
    images = torch.rand(3, 3, 64, 64)
    feats = layer3_features(backbone, images, (0, 1), image_size=None)
    same = layer3_features(packaged, images, (0, 1), image_size=None)
    # the first blocks of the stride-16 stage (timm stage 4, 80 channels), with the TF normalisation
    assert feats[1].shape == (3, 80) and np.allclose(feats[1], same[1])
    random, _ = load_candidate("random:tf_efficientnet_lite0")
    assert not np.allclose(layer3_features(random, images, (0,), image_size=None)[0], same[0])


def test_rank_checkpoints_command(tmp_path, data_dir, capsys):
    tv = tmp_path / "tv_resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), tv)
    ckpt = tmp_path / "sup.ckpt"
    torch.save({"state_dict": SupervisedClassifier(Backbone("resnet18"), 5).state_dict()}, ckpt)
    cfg = compose_config(["data.target.num_images=40", "data.target.image_size=32", "image_size=32",
                          "data.label_budget.total=16", "threads=1", f"checkpoints=[{tv},{ckpt},random:resnet18]"],
                         tmp_path, data_dir, config_name="rank_checkpoints")
    out = run_ranking(cfg)
    table = pd.read_csv(out["csv"])
    assert len(table) == 3 and set(table.checkpoint) == {str(tv), str(ckpt), "random:resnet18"}
    for s in ("d_deepscore", "logme", "h_score", "h_score_shrinkage"):
        assert np.isfinite(table[s]).all()
        assert table[f"rank_{s}"].min() == 1 and table[f"rank_{s}"].max() <= 3  # ties share a rank
    assert sorted(table.rank_logme) == [1, 2, 3]
    assert list(table.d_deepscore) == sorted(table.d_deepscore, reverse=True)
    assert "Transferability" in capsys.readouterr().out
    with open_dict(cfg):
        cfg.checkpoints = [str(tmp_path / "missing.ckpt")]
    with pytest.raises(MaddConfigError, match="does not exist"):
        run_ranking(cfg)


def test_a_backbone_prefix_that_matches_nothing_names_the_prefixes_found():
    from madd.transfer.checkpoint_ranking import backbone_prefix_of

    state = {f"model.{net}.backbone.{k}": v for net in ("student_a", "teacher")
             for k, v in Backbone("resnet18").state_dict().items()}
    assert backbone_prefix_of(state, "model.teacher.backbone.") == "model.teacher.backbone."
    with pytest.raises(MaddConfigError, match=r"backbone_prefix='teacher.backbone.' matches no key.*"
                                              r"model.student_a.backbone.', 'model.teacher.backbone."):
        backbone_prefix_of(state, "teacher.backbone.")
