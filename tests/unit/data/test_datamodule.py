"""DefectDataModule: named splits and sizes, label mapping, bad-input errors, real datasets, conversions, boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_DATA, TINY_SOURCE, compose_config, requires_shared_data
from hydra.utils import instantiate
from PIL import Image

from madd.data.datamodule import SPLITS, DefectDataModule
from madd.data.dataset import boxes_from_mask
from madd.errors import DataError

TARGET_SPLITS = ("target_labeled", "target_unlabeled", "val", "test")


def _paths(dm: DefectDataModule, split: str) -> list[str]:
    return [r.path for r in dm.records[split]]


def _rgb(size: int, value: int) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _class_folders(root: Path, counts: dict[str, int], size: int = 20) -> Path:
    """``root/<class>/<i>.png`` RGB images (class names may contain spaces)."""
    for c, n in counts.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_rgb(size, i + 7 * len(c))).save(root / c / f"{i:03d}.png")
    return root


def _dm(root: Path, class_names, **kw) -> DefectDataModule:
    args = dict(
        target={"reader": "class_folders", "root": str(root)},
        class_names=class_names,
        normal_class=class_names[0],
        image_size=16,
        label_budget={"per_class": 1},
        batch_size=2,
        seed=0,
    )
    args.update(kw)
    return DefectDataModule(**args)


# ----------------------------------------------------------------------------------------- synthetic data


@pytest.fixture(scope="module")
def synthetic_dm(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("dm")
    cfg = compose_config([*TINY_DATA, *TINY_SOURCE], tmp, data_dir)
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_synthetic_named_splits_sizes_and_disjointness(synthetic_dm):
    dm = synthetic_dm
    assert set(dm.records) == set(SPLITS)
    sizes = {k: len(v) for k, v in dm.records.items()}
    # 80 target images cut 7:1:2 (stratified, per-class rounding), then 10 labels drawn from the train part
    assert sizes["target_labeled"] == 10
    assert sizes["target_labeled"] + sizes["target_unlabeled"] + sizes["val"] + sizes["test"] == 80
    assert sizes["target_labeled"] + sizes["target_unlabeled"] == pytest.approx(56, abs=3)
    assert sizes["test"] == pytest.approx(16, abs=3) and sizes["val"] == pytest.approx(8, abs=3)
    all_target = [p for s in TARGET_SPLITS for p in _paths(dm, s)]
    assert len(all_target) == len(set(all_target))  # no image in two splits
    # every class gets a label (the budget allocates at least one per class)
    assert set(r.label for r in dm.records["target_labeled"]) == set(range(dm.num_classes))
    assert dm.normal_index == 0 and dm.num_classes == 5


def test_synthetic_unlabeled_pool_is_normal_dominant(synthetic_dm):
    labels = np.array([r.label for r in synthetic_dm.records["target_unlabeled"]])
    assert (labels == synthetic_dm.normal_index).mean() > 0.5


def test_source_is_relabelled_and_unmapped_class_dropped(synthetic_dm):
    dm = synthetic_dm
    # metal's classes [good, crack, pore, scratch]; the config maps scratch -> null
    src = dm.records["source"]
    assert src and {r.label for r in src} == {0, 1, 2}  # good, crack, pore in the target's indices
    assert not any("/scratch/" in r.path for r in src)
    assert dm.summary()["source"]["edge_burn"] == 0


def test_train_loader_combines_named_splits_and_is_epoch_seeded(synthetic_dm):
    dm = synthetic_dm
    dm.train_splits = ["target_labeled", "source"]
    batch, _, _ = next(iter(dm.train_dataloader()))
    assert set(batch) == {"target_labeled", "source"}
    b = batch["target_labeled"]
    assert b["image"].shape == (4, 3, 64, 64) and b["image"].dtype == torch.float32
    assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
    assert b["label"].dtype == torch.int64 and b["mask"].shape == (4, 1, 64, 64) and b["has_mask"].all()
    assert isinstance(b["boxes"], list) and len(b["boxes"]) == 4

    loader = dm.split_loader("target_labeled", train=True)
    order = lambda epoch: (loader.sampler.set_epoch(epoch), list(loader.sampler))[1]  # noqa: E731
    assert order(3) == order(3) and order(3) != order(4)
    dm.train_splits = ["target_labeled"]


def test_boxes_follow_the_mask_components(synthetic_dm):
    ds = synthetic_dm.datasets["test"]
    defect = next(i for i in range(len(ds)) if ds[i]["label"] != 0 and ds[i]["mask"].any())
    s = ds[defect]
    assert len(s["boxes"]) >= 1 and (s["boxes"][:, 0] == s["label"]).all()
    ys, xs = torch.nonzero(s["mask"][0], as_tuple=True)
    b = s["boxes"][:, 1:]
    # the union of the boxes is the mask's extent (x2, y2 exclusive)
    assert b[:, 0].min() == xs.min() and b[:, 1].min() == ys.min()
    assert b[:, 2].max() == xs.max() + 1 and b[:, 3].max() == ys.max() + 1
    normal = next(i for i in range(len(ds)) if ds[i]["label"] == 0)
    assert len(ds[normal]["boxes"]) == 0 and not ds[normal]["mask"].any()


def test_boxes_from_mask_by_hand():
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:3, 1:4] = True  # rows 1-2, cols 1-3
    mask[4, 6] = True
    mask[5, 7] = True  # diagonal neighbour: same 8-connected component
    assert boxes_from_mask(mask, 2).tolist() == [[2, 1, 1, 4, 3], [2, 6, 4, 8, 6]]
    assert boxes_from_mask(np.zeros((3, 3), bool), 1).shape == (0, 5)


def test_folds_partition_the_target_set(tmp_path):
    root = _class_folders(tmp_path / "d", {"good": 9, "crack": 6})
    tests = []
    for fold in range(3):
        dm = _dm(root, ["good", "crack"], num_folds=3, fold=fold, verify=False)
        dm.setup()
        tests += _paths(dm, "test")
        fold_paths = [p for s in TARGET_SPLITS for p in _paths(dm, s)]
        assert sorted(fold_paths) == sorted(set(fold_paths)) and len(fold_paths) == 15
    assert len(tests) == len(set(tests)) == 15  # each image tested exactly once over the folds


# ----------------------------------------------------------------------------------------- class folders


def test_class_folders_with_spaces_and_mixed_pixel_formats(tmp_path):
    root = tmp_path / "data"
    (root / "good").mkdir(parents=True)
    (root / "big crack").mkdir()
    # 16-bit grey, 8-bit grey, RGBA, and JPEG bytes behind a .png name
    Image.fromarray(np.full((20, 20), 128 * 257, np.uint16)).save(root / "good" / "a16.png")
    Image.fromarray(np.full((20, 20), 64, np.uint8)).save(root / "good" / "b_grey.png")
    rgba = np.dstack([np.full((20, 20, 3), 200, np.uint8), np.full((20, 20), 10, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "big crack" / "c_rgba.png")
    Image.fromarray(_rgb(20, 1)).save(root / "big crack" / "d_jpeg.png", format="JPEG")
    dm = _dm(root, ["good", "big crack"], splits={"train": 1, "val": 1, "test": 0.0001},
             label_budget={"per_class": None, "total": None})
    dm.setup()
    samples = [ds[i] for ds in dm.datasets.values() for i in range(len(ds))]
    by_name = {Path(dm.datasets[s].records[i].path).name: dm.datasets[s][i]
               for s in dm.datasets for i in range(len(dm.datasets[s]))}
    assert len(samples) == 4
    for s in samples:
        assert s["image"].shape == (3, 16, 16) and s["image"].dtype == torch.float32
        assert not s["has_mask"] and s["mask"].shape == (1, 16, 16)
    assert torch.allclose(by_name["a16.png"]["image"], torch.full((3, 16, 16), 128 / 255))  # 16-bit scaled
    assert torch.allclose(by_name["b_grey.png"]["image"], torch.full((3, 16, 16), 64 / 255))  # grey replicated
    assert torch.allclose(by_name["c_rgba.png"]["image"], torch.full((3, 16, 16), 200 / 255))  # alpha dropped
    assert by_name["d_jpeg.png"]["label"] == 1


def test_single_channel_option(tmp_path):
    root = _class_folders(tmp_path / "d", {"good": 3, "crack": 3})
    dm = _dm(root, ["good", "crack"], channels=1)
    dm.setup()
    assert dm.datasets["test"][0]["image"].shape == (1, 16, 16)


# ----------------------------------------------------------------------------------------- label mapping


@pytest.fixture()
def mapped(tmp_path):
    target = _class_folders(tmp_path / "target", {"good": 6, "crack": 6})
    source = _class_folders(tmp_path / "source", {"good": 3, "crack": 4, "scratch": 5})
    return target, source


def _mapped_dm(target, source, mapping) -> DefectDataModule:
    return _dm(target, ["good", "crack"], source={"reader": "class_folders", "root": str(source)},
               label_mapping=mapping, verify=False)


@pytest.mark.parametrize("mapping", [None, {"good": "good", "crack": "crack", "scratch": None}],
                         ids=["same-names", "explicit"])
def test_label_mapping_drops_unmapped_source_classes(mapped, mapping):
    dm = _mapped_dm(*mapped, mapping)
    dm.setup()
    assert dm.summary()["source"] == {"good": 3, "crack": 4}  # the 5 scratches are dropped


def test_label_mapping_merges_classes(mapped):
    dm = _mapped_dm(*mapped, {"good": "good", "crack": "crack", "scratch": "crack"})
    dm.setup()
    assert dm.summary()["source"] == {"good": 3, "crack": 9}


@pytest.mark.parametrize(
    "mapping, named",
    [({"good": "good", "dent": "crack"}, "dent"), ({"good": "good", "crack": "fissure"}, "fissure")],
    ids=["unknown-source-class", "unknown-target-class"],
)
def test_unknown_class_in_mapping_is_one_clear_error(mapped, mapping, named):
    dm = _mapped_dm(*mapped, mapping)
    with pytest.raises(DataError, match=rf"data\.label_mapping .*'{named}'") as err:
        dm.setup()
    assert str(err.value).count("\n") == 0


def test_max_source_images_is_exact_and_stratified(mapped):
    dm = _mapped_dm(*mapped, None)
    dm.max_source_images = 5
    dm.setup()
    counts = dm.summary()["source"]
    assert sum(counts.values()) == 5 and min(counts.values()) >= 1


# ----------------------------------------------------------------------------------------- bad input


ALL_LABELLED = {"per_class": None, "total": None}  # every training image is read: none escapes verification


def _setup_error(dm: DefectDataModule) -> str:
    with pytest.raises(DataError) as err:
        dm.prepare_data()
        dm.setup("fit")
    return str(err.value)


def test_missing_dataset_folder(tmp_path):
    msg = _setup_error(_dm(tmp_path / "nope", ["good", "crack"]))
    assert str(tmp_path / "nope") in msg and "fix the path" in msg


def test_empty_class_folder(tmp_path):
    root = _class_folders(tmp_path / "d", {"good": 4, "crack": 4})
    (root / "pore").mkdir()
    msg = _setup_error(_dm(root, ["good", "crack", "pore"]))
    assert str(root / "pore") in msg and "no images" in msg


def test_truncated_image_is_named(tmp_path):
    root = _class_folders(tmp_path / "d", {"good": 4, "crack": 4})
    bad = root / "crack" / "002.png"
    Image.fromarray(_rgb(64, 3)).save(bad, format="JPEG")
    bad.write_bytes(bad.read_bytes()[:300])
    msg = _setup_error(_dm(root, ["good", "crack"], label_budget=ALL_LABELLED))
    assert str(bad) in msg and msg.count("dataset files are unusable") == 1 and "1 of" in msg


def test_unreadable_non_image_is_named(tmp_path):
    root = _class_folders(tmp_path / "d", {"good": 4, "crack": 4})
    bad = root / "good" / "notes.png"
    bad.write_text("not an image")
    msg = _setup_error(_dm(root, ["good", "crack"], label_budget=ALL_LABELLED))
    assert str(bad) in msg and "Re-export or remove" in msg


def test_mask_size_differs_from_image(tmp_path):
    root = _class_folders(tmp_path / "d", {"good": 4, "crack": 4}, size=20)
    masks = tmp_path / "masks"
    (masks / "crack").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((20, 20 if i else 24), 255, np.uint8)).save(masks / "crack" / f"{i:03d}.png")
    msg = _setup_error(_dm(root, ["good", "crack"], label_budget=ALL_LABELLED,
                           target={"reader": "class_folders", "root": str(root), "mask_root": str(masks)}))
    assert str(masks / "crack" / "000.png") in msg and "24x20" in msg and "image is 20x20" in msg


def test_verification_covers_what_each_stage_reads(tmp_path):
    root = _class_folders(tmp_path / "d", {"good": 6, "crack": 6})
    dm = _dm(root, ["good", "crack"])
    dm.setup("test")
    assert dm._verified == {"val", "test"}
    dm.setup("fit")  # the labelled split is checked before training; nothing is decoded twice
    assert dm._verified == {"val", "test", "target_labeled"}


def test_label_budget_larger_than_pool(tmp_path):
    root = _class_folders(tmp_path / "d", {"good": 10, "crack": 10})
    msg = _setup_error(_dm(root, ["good", "crack"], label_budget={"per_class": 9}, verify=False))
    assert "data.label_budget.per_class=9" in msg and "'good': 7" in msg
    msg = _setup_error(_dm(root, ["good", "crack"], label_budget={"total": 40}, verify=False))
    assert "data.label_budget.total=40" in msg


def test_class_names_must_match_the_dataset(tmp_path):
    root = _class_folders(tmp_path / "d", {"good": 4, "crack": 4})
    msg = _setup_error(_dm(root, ["good", "dent"]))
    assert "dent" in msg and str(root) in msg


def test_bad_normal_class_and_train_split_names():
    with pytest.raises(DataError, match="data.normal_class='ok'"):
        DefectDataModule(target={"reader": "synthetic"}, class_names=["good", "crack"], normal_class="ok")
    with pytest.raises(DataError, match=r"data.train_splits has unknown split\(s\) \['val'\]"):
        DefectDataModule(target={"reader": "synthetic"}, class_names=["good"], train_splits=["val"])
    with pytest.raises(DataError, match="data.source is null"):
        DefectDataModule(target={"reader": "synthetic"}, class_names=["good"], train_splits=["source"])
    with pytest.raises(DataError, match=r"data.modality='xray' is unknown; choose from \['visual', 'ultrasonic', 'ct'\]"):
        DefectDataModule(target={"reader": "synthetic"}, class_names=["good"], modality="xray")
    assert DefectDataModule(target={"reader": "synthetic"}, class_names=["good"], modality="ct").modality == "ct"


# ----------------------------------------------------------------------------------------- real datasets


def _real(name: str, tmp_path, data_dir, overrides=()) -> DefectDataModule:
    cfg = compose_config([f"data={name}", "data.verify=false", "data.cache=false", *overrides], tmp_path, data_dir)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    return dm


def _check_real(dm: DefectDataModule, total: int, labelled: int) -> None:
    sizes = {k: len(v) for k, v in dm.records.items()}
    assert "source" not in sizes
    assert sum(sizes.values()) == total and sizes["target_labeled"] == labelled
    assert sizes["test"] == pytest.approx(0.2 * total, abs=dm.num_classes)
    assert sizes["val"] == pytest.approx(0.1 * total, abs=dm.num_classes)
    paths = [p for s in TARGET_SPLITS for p in _paths(dm, s)]
    assert len(set(paths)) == total
    for split in TARGET_SPLITS:
        s = dm.datasets[split][0]
        assert s["image"].shape[0] == 3 and s["image"].dtype == torch.float32


@requires_shared_data
def test_real_neu_det_loads_from_its_config(tmp_path, data_dir):
    dm = _real("neu_det", tmp_path, data_dir)
    _check_real(dm, total=1800, labelled=6 * 10)
    assert dm.normal_index is None
    s = dm.datasets["test"][0]
    assert s["image"].shape == (3, 128, 128) and len(s["boxes"]) >= 1  # VOC boxes, scaled to pixels
    assert s["boxes"][:, 1:].max() <= 128 and not s["has_mask"]


@requires_shared_data
def test_real_x_sdd_loads_from_its_config(tmp_path, data_dir):
    dm = _real("x_sdd", tmp_path, data_dir)
    _check_real(dm, total=1360, labelled=7 * 5)
    assert "surface scratch" in dm.class_names


@requires_shared_data
def test_real_kolektorsdd_loads_from_its_config(tmp_path, data_dir):
    dm = _real("kolektorsdd", tmp_path, data_dir)
    _check_real(dm, total=399, labelled=2 * 20)  # conf/data/kolektorsdd.yaml: 20 labels per class
    assert sum(dm.summary()[s]["defect"] for s in TARGET_SPLITS) == 52
    ds = dm.datasets["test"]
    defect = next(i for i, r in enumerate(ds.records) if r.label == 1)
    s = ds[defect]
    assert s["image"].shape == (3, 512, 224) and s["has_mask"] and s["mask"].any()  # polygons rasterised
