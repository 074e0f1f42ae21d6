"""Dataset layouts read by configuration only (issue 15): a tiny generated fixture per layout, read end to end
by its reader and by ``train.py``'s pipeline (``trainer=debug``: one batch of fit / val / test), plus one test
per silent-misread rule (each of which the readers before issue 15 accepted without a word)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_config, requires_shared_data
from PIL import Image

from madd.data.datamodule import DefectDataModule
from madd.data.integrity import check_split_isolation
from madd.data.readers import read_class_folders, read_dataset, read_files, read_folder, read_mvtec, read_voc, read_yolo
from madd.data.records import Record
from madd.errors import DataError
from madd.pipeline import train

H, W = 12, 16


def _img(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _mask(path: Path, defect: bool = True) -> Path:
    arr = np.zeros((H, W), np.uint8)
    if defect:
        arr[2:6, 3:9] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _names(records, root: Path) -> list[str]:
    return sorted(Path(r.path).relative_to(root).as_posix() for r in records)


FAST = ["trainer=debug", "model=supervised", "model.backbone.weights=null", "data.image_size=32",
        "data.batch_size=2", "data.eval_batch_size=4", "logger=csv", "data.label_budget.per_class=null",
        "data.label_budget.total=null"]


def _fast_dev_run(tmp_path: Path, data_dir: Path, overrides: list[str]) -> dict[str, float]:
    metrics = train(compose_config([*FAST, *overrides], tmp_path, data_dir))
    assert "test/accuracy" in metrics and all(np.isfinite(v) for v in metrics.values())
    return metrics


# ------------------------------------------------------------------------ class folders, nested, masks beside

def _nested_tree(root: Path, n: int = 4) -> Path:
    """``<class>/Imgs/<i>.jpg`` with ``<class>/Imgs/<i>.png`` masks beside the defect images."""
    for c, cls in enumerate(["good", "crack", "scratch"]):
        for i in range(n):
            _img(root / cls / "Imgs" / f"{cls}{i}.jpg", seed=10 * c + i)
            if cls != "good":
                _mask(root / cls / "Imgs" / f"{cls}{i}.png")
    return root


def test_class_folders_nested_with_masks_beside_images(tmp_path):
    root = _nested_tree(tmp_path / "d")
    idx = read_class_folders(root, extensions=[".jpg"], recursive=True, mask_root=root, mask_extensions=[".png"],
                             normal_class="good")
    assert idx.class_names == ["crack", "good", "scratch"] and idx.counts() == [4, 4, 4]
    by = {Path(r.path).stem: r for r in idx.records}
    assert Path(by["crack0"].mask_path) == root / "crack" / "Imgs" / "crack0.png"
    assert by["good1"].mask_path is None and by["good1"].polygons == []
    assert not any(r.path.endswith(".png") for r in idx.records)  # no mask read as an image
    # the same by a glob per class folder
    same = read_class_folders(root, extensions=[".jpg"], pattern="Imgs/*", mask_root=root, mask_extensions=[".png"])
    assert [r.path for r in same.records] == [r.path for r in idx.records]


def test_class_folders_masks_in_a_parallel_tree(tmp_path):
    for cls in ("good", "crack"):
        for i in range(2):
            _img(tmp_path / "img" / cls / "sub" / f"{i}.png", seed=i)
    _mask(tmp_path / "gt" / "crack" / "sub" / "0_m.png")
    _mask(tmp_path / "gt" / "crack" / "sub" / "1_m.png")
    idx = read_class_folders(tmp_path / "img", recursive=True, mask_root=tmp_path / "gt", mask_suffix="_m")
    masks = {Path(r.path).relative_to(tmp_path / "img").as_posix(): r.mask_path for r in idx.records}
    assert masks["crack/sub/0.png"] == str(tmp_path / "gt" / "crack" / "sub" / "0_m.png")
    assert masks["good/sub/1.png"] is None


def test_class_folders_nested_fast_dev_run(tmp_path, data_dir):
    root = _nested_tree(tmp_path / "d")
    _fast_dev_run(tmp_path, data_dir, ["data=class_folders_nested", f"data.target.root={root}",
                                       "data.splits={train: 0.5, val: 0.25, test: 0.25}"])


# ------------------------------------------------------------------------ predefined split folders

def _split_tree(root: Path) -> Path:
    for split, n in (("train", 6), ("test", 3)):
        for c, cls in enumerate(["good", "crack", "scratch"]):
            for i in range(n):
                _img(root / split / cls / f"{i}.png", seed=100 * c + i + (50 if split == "test" else 0))
    return root


def test_split_folders_are_kept_as_given(tmp_path):
    root = _split_tree(tmp_path / "d")
    dm = DefectDataModule(target={"reader": "class_folders", "root": str(root),
                                  "split_dirs": {"train": "train", "test": "test"}},
                          class_names=["good", "crack", "scratch"], splits="predefined", val_fraction=1 / 3,
                          label_budget={"per_class": 2}, image_size=16, seed=0)
    dm.setup()
    rel = {s: _names(dm.records[s], root) for s in dm.records}
    assert rel["test"] == sorted(f"test/{c}/{i}.png" for c in ["good", "crack", "scratch"] for i in range(3))
    pool = rel["target_labeled"] + rel["target_unlabeled"] + rel["val"]
    assert all(p.startswith("train/") for p in pool) and len(pool) == 18
    assert len(rel["val"]) == 6 and len(rel["target_labeled"]) == 6  # 1/3 of train per class; 2 per class
    # folds rotate val over the train part only; test stays the dataset's test part
    vals = []
    for fold in range(3):
        dm = DefectDataModule(target={"reader": "class_folders", "root": str(root),
                                      "split_dirs": {"train": "train", "test": "test"}},
                              class_names=["good", "crack", "scratch"], splits="predefined", num_folds=3, fold=fold,
                              label_budget={}, image_size=16, seed=0, verify=False)
        dm.setup()
        assert _names(dm.records["test"], root) == rel["test"]
        vals += _names(dm.records["val"], root)
    assert sorted(vals) == sorted(p for p in pool)  # every train image validated exactly once


def test_predefined_needs_a_reader_that_keeps_splits(tmp_path):
    root = _split_tree(tmp_path / "d") / "train"
    dm = DefectDataModule(target={"reader": "class_folders", "root": str(root)}, class_names=["good", "crack"],
                          splits="predefined", image_size=16)
    with pytest.raises(DataError, match="split_dirs"):
        dm.setup()
    with pytest.raises(DataError, match="predefined"):
        DefectDataModule(target={}, class_names=["a"], normal_class=None, splits="fixed")


def test_split_folders_fast_dev_run(tmp_path, data_dir):
    root = _split_tree(tmp_path / "d")
    _fast_dev_run(tmp_path, data_dir, ["data=split_folders", f"data.target.root={root}"])


# ------------------------------------------------------------------------ MVTec AD

def _mvtec_tree(root: Path) -> Path:
    for i in range(6):
        _img(root / "train" / "good" / f"{i:03d}.png", seed=i)
    for d, defect in enumerate(["broken_large", "contamination"]):
        for i in range(3):
            _img(root / "test" / defect / f"{i:03d}.png", seed=20 + 3 * d + i)
            _mask(root / "ground_truth" / defect / f"{i:03d}_mask.png")
    for i in range(3):
        _img(root / "test" / "good" / f"{i:03d}.png", seed=40 + i)
    (root / "license.txt").write_text("CC BY-NC-SA 4.0")
    return root


def test_mvtec_layout(tmp_path):
    root = _mvtec_tree(tmp_path / "bottle")
    idx = read_mvtec(root)
    assert idx.class_names == ["good", "broken_large", "contamination"] and idx.counts() == [9, 3, 3]
    by = {Path(r.path).relative_to(root).as_posix(): r for r in idx.records}
    assert by["test/contamination/002.png"].mask_path == str(root / "ground_truth/contamination/002_mask.png")
    assert by["test/broken_large/002.png"].mask_path == str(root / "ground_truth/broken_large/002_mask.png")
    assert by["train/good/000.png"].polygons == [] and by["train/good/000.png"].split == "train"
    assert by["test/good/001.png"].split == "test"


def test_mvtec_unmatched_masks_are_counted(tmp_path, caplog):
    root = _mvtec_tree(tmp_path / "bottle")
    _mask(root / "ground_truth" / "contamination" / "009_mask.png")  # no test/contamination/009.png
    with caplog.at_level(logging.WARNING):
        idx = read_mvtec(root)
    assert idx.report.unmatched["masks"] == [str(root / "ground_truth/contamination/009_mask.png")]
    assert "1 mask(s) match no image" in caplog.text


@pytest.mark.parametrize("splits", ["predefined", "{train: 0.5, val: 0.2, test: 0.3}"])
def test_mvtec_fast_dev_run(tmp_path, data_dir, splits):
    root = _mvtec_tree(tmp_path / "bottle")
    _fast_dev_run(tmp_path, data_dir, ["data=mvtec", f"data.target.root={root}", f"data.splits={splits}",
                                       "data.class_names=[good,broken_large,contamination]"])


# ------------------------------------------------------------------------ anomalib Folder

def _folder_tree(root: Path, normal_test: bool) -> Path:
    for i in range(8):
        _img(root / "good" / f"n{i}.png", seed=i)
    for i in range(4):
        _img(root / "defect" / f"d{i}.png", seed=30 + i)
        _mask(root / "mask" / "defect" / f"d{i}.png")
    if normal_test:
        for i in range(3):
            _img(root / "good_test" / f"t{i}.png", seed=60 + i)
    return root


def test_anomalib_folder_layout(tmp_path):
    root = _folder_tree(tmp_path / "d", normal_test=True)
    idx = read_folder("good", "defect", normal_test_dir="good_test", mask_dir="mask/defect", root=root)
    assert idx.class_names == ["good", "defect"] and idx.counts() == [11, 4]
    split = {Path(r.path).name: r.split for r in idx.records}
    assert {n for n, s in split.items() if s == "train"} == {f"n{i}.png" for i in range(8)}
    d2 = next(r for r in idx.records if r.path.endswith("d2.png"))
    assert d2.mask_path == str(root / "mask/defect/d2.png") and d2.label == 1
    # without normal_test_dir: normal_split_ratio of the normal images go to test (seeded, as in anomalib)
    idx = read_folder("good", "defect", mask_dir="mask/defect", root=root, normal_split_ratio=0.25, seed=3)
    assert sum(r.split == "test" and r.label == 0 for r in idx.records) == 2
    again = read_folder("good", "defect", mask_dir="mask/defect", root=root, normal_split_ratio=0.25, seed=3)
    assert [r.split for r in again.records] == [r.split for r in idx.records]


def test_anomalib_folder_fast_dev_run(tmp_path, data_dir):
    root = _folder_tree(tmp_path / "d", normal_test=False)
    _fast_dev_run(tmp_path, data_dir, ["data=anomalib_folder", f"data.target.root={root}"])


# ------------------------------------------------------------------------ files: class from the file name

def _neu_like(root: Path) -> Path:
    for c, cls in enumerate(["crazing", "rolled-in_scale", "pitted_surface"]):
        for i in range(1, 6):
            _img(root / ("IMAGES" if i < 5 else "Validation_Images") / f"{cls}_{i}.jpg", seed=10 * c + i)
    (root / "IMAGES" / "README.md").write_text("x")
    _img(root / "IMAGES" / "thumbnail.jpg")
    return root


def test_class_from_file_name_regex(tmp_path):
    root = _neu_like(tmp_path / "neu")
    idx = read_files(root, pattern="*/*.jpg", name_regex=r"(?P<class>[a-z_-]+?)_\d+\.jpg$")
    assert idx.class_names == ["crazing", "pitted_surface", "rolled-in_scale"] and idx.counts() == [5, 5, 5]
    assert [Path(p).name for p in idx.report.ignored[
        r"name does not match name_regex '(?P<class>[a-z_-]+?)_\d+\.jpg$'"]] == ["thumbnail.jpg"]
    with pytest.raises(DataError, match="not in class_names"):
        read_files(root, pattern="*/*.jpg", name_regex=r"(?P<class>[a-z_-]+?)_\d+\.jpg$",
                   class_names=["crazing", "pitted_surface"])
    # the split from the name: a (?P<split>...) group
    idx = read_files(root, pattern="*/*.jpg", name_regex=r"(?P<split>IMAGES|Validation)[^/]*/(?P<class>[a-z_-]+?)_\d+",
                     split_map={"IMAGES": "train", "Validation": "test"})
    assert sorted({(Path(r.path).parent.name, r.split) for r in idx.records}) == [
        ("IMAGES", "train"), ("Validation_Images", "test")]


def test_class_from_file_name_fast_dev_run(tmp_path, data_dir):
    root = _neu_like(tmp_path / "neu")
    _fast_dev_run(tmp_path, data_dir, ["data=class_from_filename", f"data.target.root={root}",
                                       "data.class_names=[crazing,pitted_surface,rolled-in_scale]",
                                       "data.splits={train: 0.6, val: 0.2, test: 0.2}"])


@requires_shared_data
def test_real_neu_det_class_from_file_name(tmp_path, data_dir):
    from hydra.utils import instantiate

    dm = instantiate(compose_config(["data=class_from_filename"], tmp_path, data_dir).data, _convert_="all")
    dm.setup("test")
    counts = np.sum([list(dm.summary()[s].values()) for s in dm.summary()], axis=0)
    assert counts.tolist() == [300] * 6


# ------------------------------------------------------------------------ files: reference pairs + box text files

def _pcb_tree(root: Path, n: int = 6, line: str | None = None, k: int = 2) -> Path:
    """DeepPCB-like: ``g1/1/<id>_test.jpg`` + ``<id>_temp.jpg``, boxes in ``g1/1_not/<id>.txt`` (pixels)."""
    for i in range(n):
        sid = f"{i:05d}"
        _img(root / "g1" / "1" / f"{sid}_test.jpg", seed=i)
        _img(root / "g1" / "1" / f"{sid}_temp.jpg", seed=100 + i)
        # the largest box is of type 1 + i % k (the image's class), a smaller one of another type
        text = line if line is not None and i == 0 else f"2 3 10 9 {1 + i % k}\n0 0 2 2 {1 + (i + 1) % k}\n"
        (root / "g1" / "1_not").mkdir(parents=True, exist_ok=True)
        (root / "g1" / "1_not" / f"{sid}.txt").write_text(text)
    return root


PCB = dict(pattern="**/*_test.jpg", name_regex=r"(?P<id>\d+)_test\.jpg$", reference="{id}_temp.jpg",
           class_names=["open", "short"])


def _pcb_boxes(**kw) -> dict:
    return {"name": "../{parent}_not/{id}.txt", "coordinates": "pixel", "class_map": {"1": "open", "2": "short"}, **kw}


def test_reference_pairs_and_pixel_box_files(tmp_path):
    root = _pcb_tree(tmp_path / "pcb")
    idx = read_files(root, boxes=_pcb_boxes(), **PCB)
    assert idx.counts() == [3, 3]
    r0 = idx.records[0]
    assert r0.reference_path == str(root / "g1/1/00000_temp.jpg")
    assert r0.label == 0 and r0.boxes[0] == pytest.approx((0, 2 / W, 3 / H, 10 / W, 9 / H))
    assert r0.boxes[1] == pytest.approx((1, 0.0, 0.0, 2 / W, 2 / H))
    # the same boxes written normalised, centre + size, class first
    for i in range(6):  # class = 1 + i % 2
        (root / f"g1/1_not/{i:05d}.txt").write_text(f"{1 + i % 2} {6 / W} {6 / H} {8 / W} {6 / H}\n")
    idx = read_files(root, boxes=_pcb_boxes(coordinates="normalised", format="cxcywh", class_column="first"), **PCB)
    assert idx.records[0].boxes == [pytest.approx((0, 2 / W, 3 / H, 10 / W, 9 / H))]
    # the sample carries the reference image beside the image
    root = _pcb_tree(tmp_path / "pcb2")
    dm = DefectDataModule(target={"reader": "files", "root": str(root), "boxes": _pcb_boxes(), **PCB},
                          class_names=["open", "short"], normal_class=None, image_size=8,
                          splits={"train": 0.5, "val": 0.2, "test": 0.3})
    dm.setup()
    s = dm.datasets["test"][0]
    assert s["reference"].shape == s["image"].shape == (3, 8, 8) and not torch.equal(s["reference"], s["image"])


def test_reference_pairs_fast_dev_run(tmp_path, data_dir):
    root = _pcb_tree(tmp_path / "pcb", n=18, k=6)  # DeepPCB's six defect types, three images each
    _fast_dev_run(tmp_path, data_dir, ["data=pcb_pairs", f"data.target.root={root}",
                                       "data.splits={train: 0.34, val: 0.33, test: 0.33}"])


def test_box_file_errors_name_file_and_line(tmp_path):
    root = _pcb_tree(tmp_path / "pcb", line="2 3 10 9 1\n2 3 17 9 1\n")  # x2 = 17 > width 16
    with pytest.raises(DataError, match=r"(?s)00000\.txt' line 2.*outside the 16x12 image"):
        read_files(root, boxes=_pcb_boxes(), **PCB)
    root = _pcb_tree(tmp_path / "pcb2", line="0.1 0.1 0.5 0.5 7\n")
    with pytest.raises(DataError, match=r"(?s)line 1: class '7'"):
        read_files(root, boxes=_pcb_boxes(coordinates="normalised"), **PCB)
    with pytest.raises(DataError, match="coordinates"):
        read_files(root, boxes={"name": "../{parent}_not/{id}.txt"}, **PCB)  # coordinates must be stated
    with pytest.raises(DataError, match="unknown placeholder"):
        read_files(root, boxes=_pcb_boxes(name="{idx}.txt"), **PCB)


def test_box_files_matching_no_image(tmp_path, caplog):
    root = _pcb_tree(tmp_path / "pcb")
    # a rule that names no existing file: the 6 box files are not silently ignored
    with pytest.raises(DataError, match=r"(?s)No box file matches any of the 6 images.*6 box file\(s\) there"):
        read_files(root, boxes=_pcb_boxes(name="../{parent}_not/{stem}.txt"), **PCB)
    (root / "g1/1_not/99999.txt").write_text("1 1 3 3 1\n")
    with caplog.at_level(logging.WARNING):
        idx = read_files(root, boxes=_pcb_boxes(), **PCB)
    assert idx.report.unmatched["box files"] == [str(root / "g1/1_not/99999.txt")]
    assert "1 box file(s) match no image" in caplog.text
    (root / "g1/1/00003_temp.jpg").unlink()
    with pytest.raises(DataError, match="1 image.*no reference image"):
        read_files(root, boxes=_pcb_boxes(), **PCB)


# ------------------------------------------------------------------------ no silent misread: one test per rule
# Each of these configurations was read without an error before issue 15.

def test_rule_a_mask_beside_its_image_is_not_a_second_image(tmp_path):
    """x.jpg + its mask x.png, default extensions, no mask keys: was read as two images of the class."""
    _img(tmp_path / "crack" / "x.jpg")
    _mask(tmp_path / "crack" / "x.png")
    with pytest.raises(DataError, match=r"(?s)share a file stem.*x\.jpg / x\.png.*mask_extensions"):
        read_class_folders(tmp_path)


def test_rule_a_file_is_not_both_image_and_mask(tmp_path):
    """mask_root at the images and no suffix, default extensions: each .png was an image and a mask."""
    for i in range(2):
        _img(tmp_path / "crack" / f"{i}.jpg")
        _mask(tmp_path / "crack" / f"{i}.png")
    with pytest.raises(DataError, match=r"(?s)read both as an image and as a mask.*0\.png"):
        read_class_folders(tmp_path, mask_root=tmp_path)


def test_rule_an_image_is_never_its_own_mask(tmp_path):
    _img(tmp_path / "crack" / "0.png")
    with pytest.raises(DataError, match=r"(?s)their own mask.*0\.png"):
        read_class_folders(tmp_path, mask_root=tmp_path)


def test_rule_image_mask_reader_never_pairs_an_image_with_itself(tmp_path):
    """image_dir == mask_dir and no suffix: each image was its own mask, its label read from its own pixels."""
    _img(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"(?s)their own mask.*a\.png"):
        read_dataset("image_mask", image_dir=tmp_path, mask_dir=tmp_path)
    # the working configuration for masks beside their images
    _img(tmp_path / "b.jpg")
    _mask(tmp_path / "b.png")
    (tmp_path / "a.png").unlink()
    idx = read_dataset("image_mask", image_dir=tmp_path, mask_dir=tmp_path, extensions=[".jpg"],
                       mask_extensions=[".png"])
    assert [(Path(r.path).name, Path(r.mask_path).name, r.label) for r in idx.records] == [("b.jpg", "b.png", 1)]


def test_rule_a_mask_pairs_with_exactly_one_image(tmp_path):
    """A flat mask folder and one stem in two classes: both images took the same mask."""
    _img(tmp_path / "img" / "crack" / "001.png")
    _img(tmp_path / "img" / "pore" / "001.png")
    _mask(tmp_path / "masks" / "001_mask.png")
    with pytest.raises(DataError, match=r"(?s)001_mask\.png: 001\.png and .*pore"):
        read_class_folders(tmp_path / "img", mask_root=tmp_path / "masks", mask_suffix="_mask")


def test_rule_an_image_and_its_mask_are_in_one_split(tmp_path):
    """Masks beside images read as images could land in test while their image trains."""
    for cls in ("good", "crack"):
        for i in range(5):
            _img(tmp_path / cls / f"{i}.jpg", seed=i)
            _mask(tmp_path / cls / f"{i}.png")
    dm = DefectDataModule(target={"reader": "class_folders", "root": str(tmp_path), "mask_root": str(tmp_path)},
                          class_names=["crack", "good"], normal_class="good", image_size=8, label_budget={})
    with pytest.raises(DataError, match="both as an image and as a mask"):
        dm.setup()
    # the cross-split check itself, on records a reader could hand over
    a, b = str(tmp_path / "crack/0.jpg"), str(tmp_path / "crack/0.png")
    check_split_isolation({"target_labeled": [Record(a, 0, mask_path=b)], "test": [Record(str(tmp_path / "x"), 0)]})
    with pytest.raises(DataError, match=r"(?s)0\.png: \[\('test', 'image'\), \('train', 'mask'\)\]"):
        check_split_isolation({"target_labeled": [Record(a, 0, mask_path=b)], "test": [Record(b, 0)]})


def test_rule_masks_matching_no_image_are_an_error(tmp_path):
    """Masks named x-mask.png with mask_suffix _mask: no image had a mask and nothing was said."""
    _img(tmp_path / "img" / "crack" / "a.png")
    _mask(tmp_path / "gt" / "crack" / "a-mask.png")
    with pytest.raises(DataError, match=r"(?s)No mask matches any of the 1 images.*a_mask\.png.*a-mask\.png"):
        read_class_folders(tmp_path / "img", mask_root=tmp_path / "gt", mask_suffix="_mask")


def test_rule_masks_matching_no_image_are_counted(tmp_path, caplog):
    _img(tmp_path / "img" / "crack" / "a.png")
    _img(tmp_path / "img" / "crack" / "b.png")
    _mask(tmp_path / "gt" / "crack" / "a_mask.png")
    _mask(tmp_path / "gt" / "crack" / "c_mask.png")
    with caplog.at_level(logging.WARNING):
        idx = read_class_folders(tmp_path / "img", mask_root=tmp_path / "gt", mask_suffix="_mask")
    assert idx.report.unmatched["masks"] == [str(tmp_path / "gt/crack/c_mask.png")]
    assert "1 mask(s) match no image" in caplog.text


def test_rule_yolo_label_files_matching_no_image(tmp_path, caplog):
    _img(tmp_path / "images" / "train" / "a.jpg")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "A.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # stem differs: a vs A
    with pytest.raises(DataError, match=r"(?s)None of the 1 YOLO label file\(s\)"):
        read_yolo(tmp_path / "images" / "train", class_names=["good", "defect"])
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with caplog.at_level(logging.WARNING):
        idx = read_yolo(tmp_path / "images" / "train", class_names=["good", "defect"])
    assert idx.report.unmatched["label files"] == [str(tmp_path / "labels/train/A.txt")]
    assert "1 YOLO label file(s) match no image" in caplog.text


def test_rule_yolo_coordinates_above_one_are_an_error(tmp_path):
    _img(tmp_path / "images" / "train" / "a.jpg")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 1.2 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"(?s)a\.txt' line 2: coordinate\(s\) \['1\.2'\] are outside \[0, 1\]"):
        read_yolo(tmp_path / "images" / "train")
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.1 0.1 0.5 0.1 -0.01 0.5\n")  # polygon point < 0
    with pytest.raises(DataError, match="line 1"):
        read_yolo(tmp_path / "images" / "train")


def test_rule_voc_boxes_outside_the_image_are_an_error(tmp_path):
    _img(tmp_path / "img" / "a.jpg")
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.xml").write_text(
        "<annotation><size><width>16</width><height>12</height></size>"
        "<object><name>crack</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "<object><name>crack</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>5</ymax></bndbox></object>"
        "</annotation>")
    with pytest.raises(DataError, match=r"(?s)a\.xml' object 2 \('crack'\).*outside the 16x12 image"):
        read_voc(tmp_path / "img", tmp_path / "ann")


def test_rule_coco_coordinates_outside_the_image_are_an_error(tmp_path):
    import json

    _img(tmp_path / "img" / "a.png")
    (tmp_path / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "crack"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 2, 9, 4],  # x2 = 19 > 16
                         "segmentation": []}]}))
    with pytest.raises(DataError, match=r"(?s)a\.png: annotation 7 has coordinates outside the 16x12 image"):
        read_dataset("coco", images_dir=tmp_path / "img", annotation_json=tmp_path / "ann.json",
                     class_names=["good", "crack"])


def test_rule_sub_folders_not_searched_are_said(tmp_path):
    _img(tmp_path / "crack" / "Imgs" / "a.jpg")
    with pytest.raises(DataError, match="sub-folders are not searched: set recursive: true or a pattern"):
        read_class_folders(tmp_path)


# ------------------------------------------------------------------------ the summary before training

def test_summary_before_training_lists_counts_and_ignored_files(tmp_path, caplog):
    root = _nested_tree(tmp_path / "d", n=5)
    (root / "crack" / "Imgs" / "notes.txt").write_text("x")
    _mask(root / "crack" / "Imgs" / "orphan.png")
    dm = DefectDataModule(target={"reader": "class_folders", "root": str(root), "recursive": True,
                                  "extensions": [".jpg"], "mask_root": str(root), "mask_extensions": [".png"],
                                  "normal_class": "good"},
                          class_names=["good", "crack", "scratch"], image_size=8, label_budget={"per_class": 2},
                          splits={"train": 0.6, "val": 0.2, "test": 0.2})
    with caplog.at_level(logging.INFO, logger="madd.data.datamodule"):
        dm.setup()
    text = caplog.text
    assert "Data summary (target)" in text
    lines = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines()[1:] if ln.split()}
    assert lines["crack"] == ["2", "1", "1", "1"] and lines["total"] == ["6", "3", "3", "3"]
    assert lines["masks"] == ["4", "2", "2", "2"]
    assert "1 file(s), extension not in ['.jpg']" in text and "notes.txt" in text
    assert "unmatched: 1 masks match no image" in text and "orphan.png" in text


def test_read_dataset_takes_the_new_keys(tmp_path):
    root = _mvtec_tree(tmp_path / "bottle")
    assert read_dataset("mvtec", root=str(root)).counts() == [9, 3, 3]
    with pytest.raises(DataError, match="normal_dir"):
        read_dataset("folder", normal="good")
