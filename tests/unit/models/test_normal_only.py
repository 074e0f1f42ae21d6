"""PatchCore and PaDiM (normal-only baselines) and the shared validation-threshold rule.

Formulas against references computed another way: the threshold rule by hand, the coreset against a brute-force
greedy on ``torch.cdist``, distances against ``torch.cdist``, PaDiM's Gaussians against ``numpy.cov`` and
``scipy.spatial.distance.mahalanobis``; and both models against anomalib 2.7's torch components on the same
features where anomalib is installed (``pip install anomalib==2.7.0``, in the dev extras).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis

from madd.errors import MaddConfigError
from madd.metrics.threshold import calibrate_threshold, f1_threshold, far_threshold, map_threshold
from madd.models.backbones import Backbone
from madd.models.padim import Padim, PadimModel
from madd.models.patchcore import PatchCore, PatchCoreModel, k_center_greedy
from madd.models.patchcore.torch_model import euclidean_distances, nearest_neighbours
from madd.models.score_calibration import ScoreCalibration
from madd.models.supervised import SupervisedClassifier


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    torch.manual_seed(0)
    return Backbone("resnet18", weights=None)


# ----------------------------------------------------------------------------------------------- threshold rule


def test_far_threshold_is_the_inverted_cdf_quantile_by_hand():
    normal = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    # at most floor(0.1 * 10) = 1 of 10 normal scores may lie above: the threshold is the 9th smallest, 0.9
    assert far_threshold(normal, 0.10) == pytest.approx(0.9)
    # floor(0.05 * 10) = 0 above: the largest normal score
    assert far_threshold(normal, 0.05) == pytest.approx(1.0)
    # floor(0.25 * 10) = 2 above -> 0.8; and FAR on these scores never exceeds the target
    assert far_threshold(normal, 0.25) == pytest.approx(0.8)
    for far in (0.0, 0.05, 0.1, 0.25, 0.5, 0.99):
        t = far_threshold(normal, far)
        assert int((normal > t).sum()) <= int(far * 10 + 1e-9)


def test_f1_threshold_by_hand():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    labels = torch.tensor([0, 0, 1, 1])
    # >= 0.8: P 1, R 1/2, F1 2/3; >= 0.4: P 1/2, R 1/2; >= 0.35: P 2/3, R 1, F1 0.8 (best); >= 0.1: F1 2/3
    assert f1_threshold(scores, labels) == pytest.approx(0.35)
    t = calibrate_threshold(scores, labels, mode="f1")
    assert t.rule == "f1" and t.value < 0.35 and bool(torch.tensor(0.35) > t.value)  # 0.35 is called defective


def test_no_defect_images_never_gives_the_minimum_score():
    """anomalib #2433: with only normal validation images an F1 arg-max falls on the minimum score."""
    normal = torch.linspace(0, 1, 40)
    t = calibrate_threshold(normal, torch.zeros(40, dtype=torch.bool), target_far=0.05, mode="f1")
    assert t.rule == "far"
    assert t.value == pytest.approx(far_threshold(normal, 0.05)) and t.value > float(normal.min())
    assert int((normal > t.value).sum()) == 2  # floor(0.05 * 40) = 2 of 40 above


def test_map_threshold_rules_by_hand():
    # three 1 x 2 maps: two normal images (maxima 0.3, 0.6), one defective whose right pixel is the defect
    maps = torch.tensor([[0.1, 0.3], [0.6, 0.2], [0.4, 0.9]]).view(3, 1, 1, 2)
    is_defect = torch.tensor([False, False, True])
    masks = torch.tensor([[0, 0], [0, 0], [0, 1]]).view(3, 1, 1, 2).float()
    has_mask = torch.tensor([True, True, True])
    # far: no normal image may show a pixel above -> the largest normal maximum
    assert map_threshold(maps, is_defect, has_mask, masks, 0.05, "far").value == pytest.approx(0.6)
    # f1 over pixels: >= 0.9 catches the one defect pixel with no false positive (F1 = 1)
    f1 = map_threshold(maps, is_defect, has_mask, masks, 0.05, "f1")
    assert f1.rule == "f1" and 0.6 < f1.value < 0.9
    # f1 without defect pixels falls back to far on the maxima
    none = map_threshold(maps, is_defect, has_mask, torch.zeros_like(masks), 0.05, "f1")
    assert none.rule == "far" and none.value == pytest.approx(0.6)


def test_threshold_errors_name_the_key():
    with pytest.raises(MaddConfigError, match="model.threshold.mode"):
        calibrate_threshold(torch.rand(4), torch.zeros(4), mode="youden")
    with pytest.raises(MaddConfigError, match="target_far"):
        far_threshold(torch.rand(4), 1.5)
    with pytest.raises(MaddConfigError, match="no normal images"):
        calibrate_threshold(torch.rand(3), torch.ones(3))


def test_calibration_logits_and_map_put_the_threshold_at_the_decision():
    cal = ScoreCalibration(num_classes=3, normal_index=1)
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    maps = scores.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    is_defect = torch.tensor([False, False, False, False, True])
    image, pixel = cal.fit(scores, maps, is_defect, torch.zeros(5, dtype=torch.bool), torch.zeros_like(maps), 0.25, "far")
    assert image.value == pytest.approx(3.0) and pixel.value == pytest.approx(3.0)  # 1 of 4 normal scores above
    logits = cal.logits(scores)
    assert logits[:, 1].abs().max() == 0  # normal class logit 0
    assert (logits.argmax(1) != 1).tolist() == [False, False, False, True, True]  # defective iff score > 3
    assert torch.equal(logits[:, 0], logits[:, 2])  # defect types cannot be told apart
    normalized = cal.normalize_map(maps)
    assert normalized[2].unique().item() == pytest.approx(0.5)
    assert bool((normalized[3] > 0.5).all()) and bool((normalized[1] < 0.5).all())


# ----------------------------------------------------------------------------------------------- coreset, distances


def brute_force_greedy(x: torch.Tensor, size: int, start: int) -> list[int]:
    """The textbook k-center greedy: each step adds the point with the largest distance to its nearest center."""
    chosen = [start]
    while len(chosen) < size:
        d = torch.cdist(x.double(), x[chosen].double()).min(1).values
        d[chosen] = -1
        chosen.append(int(d.argmax()))
    return chosen


def test_coreset_matches_brute_force_greedy():
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(1))
    got = k_center_greedy(x, 40, projection_dim=None, start=7).tolist()
    assert got == brute_force_greedy(x, 40, 7)
    assert len(set(got)) == 40


def test_coreset_is_deterministic_given_the_seed_and_covers_better_than_random():
    g = torch.Generator().manual_seed(2)
    # patch features are clustered: 30 clusters of 2..~650 points in 64-D; random picks miss the small ones
    sizes = (650 * 0.8 ** torch.arange(30)).long().clamp_min(2)
    centers = 10 * torch.randn(30, 64, generator=g)
    x = torch.cat([c + 0.1 * torch.randn(int(n), 64, generator=g) for c, n in zip(centers, sizes)])[:2000]
    a, b = k_center_greedy(x, 100, 16, seed=3), k_center_greedy(x, 100, 16, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, k_center_greedy(x, 100, 16, seed=4))
    radius = lambda idx: float(torch.cdist(x, x[idx]).min(1).values.max())  # noqa: E731
    random_idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:100]
    assert radius(a) < radius(random_idx)  # the projected greedy still covers the full-dimensional set better
    with pytest.raises(MaddConfigError, match="coreset size"):
        k_center_greedy(x, 0)


def test_distances_and_nearest_neighbours_match_cdist(monkeypatch):
    g = torch.Generator().manual_seed(5)
    q, bank = torch.randn(50, 20, generator=g), torch.randn(70, 20, generator=g)
    assert torch.allclose(euclidean_distances(q, bank), torch.cdist(q, bank), atol=1e-4)
    ref = torch.cdist(q, bank).topk(3, dim=1, largest=False)
    monkeypatch.setattr("madd.models.patchcore.torch_model.QUERY_CHUNK", 16)  # the chunked path too
    dist, idx = nearest_neighbours(q, bank, 3)
    assert torch.allclose(dist, ref.values, atol=1e-4) and torch.equal(idx, ref.indices)


# ----------------------------------------------------------------------------------------------- PaDiM by hand


def test_padim_gaussians_and_mahalanobis_match_numpy_and_scipy(backbone):
    model = PadimModel(backbone, stages=(0, 1), num_features=8, channel_seed=0, blur_sigma=0).eval()
    g = torch.Generator().manual_seed(0)
    train = [torch.rand(5, 3, 32, 32, generator=g) for _ in range(3)]
    for batch in train:  # three batches: the streamed sums must equal one pass over all images
        model.add(batch)
    model.fit()
    emb = torch.cat([model.embed(b) for b in train]).flatten(2).double().numpy()  # (15, 8, 64)
    for p in (0, 17, 63):
        cov = np.cov(emb[:, :, p], rowvar=False) + 0.01 * np.eye(8)
        assert np.allclose(model.mean[:, p].numpy(), emb[:, :, p].mean(0), atol=1e-5)
        assert np.allclose(model.inv_covariance[p].numpy(), np.linalg.inv(cov), rtol=1e-3, atol=1e-3)
    test = torch.rand(2, 3, 32, 32, generator=g)
    got = model.distances(model.embed(test))  # (2, 1, 8, 8)
    e = model.embed(test).flatten(2).double().numpy()
    for b, p in ((0, 0), (1, 30), (1, 63)):
        cov = np.cov(emb[:, :, p], rowvar=False) + 0.01 * np.eye(8)
        ref = mahalanobis(e[b, :, p], emb[:, :, p].mean(0), np.linalg.inv(cov))
        assert got[b, 0].flatten()[p].item() == pytest.approx(ref, rel=1e-3)
    scores, maps = model(test)
    assert maps.shape == (2, 1, 32, 32) and torch.allclose(scores, maps.flatten(1).amax(1))


def test_padim_channel_selection_is_seeded_and_sized(backbone):
    a = PadimModel(backbone, num_features=100, channel_seed=1)
    assert torch.equal(a.channel_idx, PadimModel(backbone, num_features=100, channel_seed=1).channel_idx)
    assert not torch.equal(a.channel_idx, PadimModel(backbone, num_features=100, channel_seed=2).channel_idx)
    assert len(a.channel_idx.unique()) == 100 and int(a.channel_idx.max()) < 64 + 128 + 256
    with pytest.raises(MaddConfigError, match="model.num_features"):
        PadimModel(backbone, stages=(0,), num_features=65)


# ----------------------------------------------------------------------------------------------- against anomalib


@pytest.fixture(scope="module")
def anomalib():
    return pytest.importorskip("anomalib", reason="anomalib not installed (pip install anomalib==2.7.0)")


def test_coreset_matches_anomalib_k_center_greedy(anomalib):
    from anomalib.models.components import KCenterGreedy

    x = torch.randn(500, 1, 24, generator=torch.Generator().manual_seed(3))  # 3-D: anomalib skips its projection
    torch.manual_seed(11)
    expected = KCenterGreedy(x, sampling_ratio=0.1).select_coreset_idxs()
    torch.manual_seed(11)
    start = int(torch.randint(high=500, size=(1,)))  # anomalib's first center, drawn the same way
    assert k_center_greedy(x.squeeze(1), 50, projection_dim=None, start=start).tolist() == expected


def test_patchcore_scores_and_map_match_anomalib(anomalib, backbone):
    from anomalib.models.image.patchcore.anomaly_map import AnomalyMapGenerator
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    model = PatchCoreModel(backbone, coreset_ratio=0.25, num_neighbors=9).eval()
    g = torch.Generator().manual_seed(0)
    model.add(torch.rand(4, 3, 64, 64, generator=g))
    model.fit()
    test = torch.rand(3, 3, 64, 64, generator=g)
    scores, maps = model(test)

    reference = PatchcoreModel(layers=["layer2", "layer3"], backbone="resnet18", pre_trained=False, num_neighbors=9)
    reference.memory_bank = model.memory_bank.clone()
    emb = model.embed(test)  # the same features for both
    flat = reference.reshape_embedding(emb)
    patch, loc = reference.nearest_neighbors(flat, n_neighbors=1)
    ref_scores = reference.compute_anomaly_score(patch.reshape(3, -1), loc.reshape(3, -1), flat)
    assert torch.allclose(scores, ref_scores, rtol=1e-4, atol=1e-4)
    ref_maps = AnomalyMapGenerator()(patch_scores=patch.reshape(3, 1, *emb.shape[-2:]), image_size=(64, 64))
    assert torch.allclose(maps, ref_maps, rtol=1e-4, atol=1e-4)


def test_padim_gaussian_and_map_match_anomalib(anomalib, backbone):
    from anomalib.models.components import MultiVariateGaussian
    from anomalib.models.image.padim.anomaly_map import AnomalyMapGenerator

    model = PadimModel(backbone, num_features=50, channel_seed=0).eval()
    g = torch.Generator().manual_seed(1)
    train = torch.rand(12, 3, 64, 64, generator=g)
    model.add(train[:5])
    model.add(train[5:])
    model.fit()
    gaussian = MultiVariateGaussian()
    mean, inv_cov = gaussian.fit(model.embed(train))
    assert torch.allclose(model.mean, mean, atol=1e-5)
    # anomalib adds 1e-5 I on top of the paper's 0.01 I before inverting: agreement to that order
    assert torch.allclose(model.inv_covariance, inv_cov, rtol=5e-3, atol=5e-3)
    test = torch.rand(2, 3, 64, 64, generator=g)
    scores, maps = model(test)
    ref_maps = AnomalyMapGenerator()(embedding=model.embed(test), mean=mean, inv_covariance=inv_cov, image_size=(64, 64))
    assert torch.allclose(maps, ref_maps, rtol=1e-3, atol=1e-3)
    assert torch.allclose(scores, ref_maps.amax((-2, -1)).flatten(), rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------------------------- module contract


def test_module_config_errors_name_the_key(backbone):
    with pytest.raises(MaddConfigError, match="normal class"):
        PatchCore(backbone, num_classes=3, normal_index=None)
    with pytest.raises(MaddConfigError, match="model.fit_splits"):
        Padim(backbone, num_classes=2, normal_index=0, fit_splits=["source"])
    with pytest.raises(MaddConfigError, match="model.pixel_threshold"):
        Padim(backbone, num_classes=2, normal_index=0, pixel_threshold=0.3)
    with pytest.raises(MaddConfigError, match="model.threshold.mode"):
        PatchCore(backbone, num_classes=2, normal_index=0, threshold={"mode": "min"})
    with pytest.raises(MaddConfigError, match="model.coreset_ratio"):
        PatchCore(backbone, num_classes=2, normal_index=0, coreset_ratio=0)


# ----------------------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("method", ["patchcore", "padim"])
def test_train_test_export_predict_end_to_end(method, tmp_path, data_dir):
    """train.py's pipeline fits on the normal pool images only, calibrates on validation, writes a checkpoint
    that tests the same, exports to ONNX with parity (probabilities and map) and predicts with overlays."""
    import json

    from helpers import TINY_DATA, compose_config

    from madd.checkpoint import load_module
    from madd.deploy.export import export_checkpoint
    from madd.deploy.predict import predict_folder
    from madd.pipeline import train

    cfg = compose_config([f"model={method}", *TINY_DATA, "trainer.limit_train_batches=1"], tmp_path, data_dir)
    metrics = train(cfg)
    for key in ("test/image_auroc", "test/DR_at_FAR", "test/DR", "test/FAR", "test/pixel_auroc", "test/pixel_f1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    out = tmp_path / "out"
    record = json.loads((out / "metrics.json").read_text())
    counts = record["split_counts"]
    module = load_module(out / "checkpoints" / "last.ckpt")
    assert module.detector.calibration.calibrated
    if method == "patchcore":  # the bank is 10 % of the patches of exactly the pool's normal images (8 x 8 each)
        pool_good = counts["target_labeled"]["good"] + counts["target_unlabeled"]["good"]
        assert module.model.memory_bank.shape[0] == int(pool_good * 8 * 8 * 0.1)
    else:  # one Gaussian per stage-0 position (16 x 16) over the 100 selected channels
        assert module.model.mean.shape == (100, 16 * 16) and module.model.inv_covariance.shape == (256, 100, 100)
    exported = export_checkpoint(out / "checkpoints" / "last.ckpt", tmp_path / "export", formats=["onnx"],
                                 exporter="dynamo", tolerance=1e-3)
    assert all(row["ok"] for row in exported["parity"]) and {r["output"] for r in exported["parity"]} == {
        "probs", "anomaly_map"}
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((64, 64, 3)) * 255).astype(np.uint8)).save(images / f"{i}.png")
    table = predict_folder(exported["onnx"], images, tmp_path / "pred")
    assert len(table) == 3 and {"map_max", "boxes", "p_good"} <= set(table.columns)
    assert len(list((tmp_path / "pred" / "overlays").glob("*.png"))) == 3


class BrightnessMapClassifier(SupervisedClassifier):
    """A classifier whose anomaly map is the image brightness: a map with values known without training."""

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(1, keepdim=True)


def test_map_threshold_callback_sets_any_models_map_threshold_on_validation(tmp_path, data_dir):
    """callbacks=[default,map_threshold] gives MADD-style models (any anomaly_map) the same validation rule."""
    from helpers import TINY_DATA, compose_config
    from hydra.utils import instantiate

    from madd.pipeline import train

    cfg = compose_config([*TINY_DATA, f"model._target_={__name__}.BrightnessMapClassifier", "callbacks=[default,map_threshold]",
                          "trainer.max_epochs=1", "trainer.limit_train_batches=1"], tmp_path, data_dir)
    metrics = train(cfg)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    batch = next(iter(datamodule.split_loader("val")))
    normal_maxima = batch["image"].mean(1).flatten(1).amax(1)[batch["label"] == 0].double().numpy()
    expected = np.quantile(normal_maxima, 0.95, method="inverted_cdf")  # at most 5 % of good images above
    assert metrics["test/pixel_threshold"] == pytest.approx(expected, rel=1e-6)
    # the tested checkpoint keeps it: predict/export use the tested threshold, not model.pixel_threshold
    from madd.checkpoint import load_module

    tested = [p for p in (Path(cfg.paths.output_dir) / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(tested) == 1 and cfg.model.pixel_threshold != pytest.approx(expected)
    assert load_module(tested[0]).pixel_threshold == pytest.approx(expected, rel=1e-6)


def test_patch_features_run_the_backbone_only_up_to_the_last_stage_they_read(backbone):
    """PatchCore reads stages 1-2: the last stage (most of the parameters) must not run, and the features must be
    those of the full pass."""
    from madd.models.patch_features import PatchFeatures

    features = PatchFeatures(backbone, stages=(1, 2))
    ran = []
    hook = backbone.stages[3].register_forward_hook(lambda *_: ran.append(True))
    try:
        images = torch.rand(2, 3, 64, 64)
        out = features(images)
    finally:
        hook.remove()
    assert not ran
    full = backbone.forward_stages(features.normalize(images))
    assert len(full) == 4 and len(backbone.forward_stages(features.normalize(images), last=1)) == 2
    up = torch.nn.functional.interpolate(full[2], size=full[1].shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, torch.cat([full[1], up], 1))
