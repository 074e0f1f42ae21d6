"""Tests for image decoding (madd.data.image_io) and the dataset readers (madd.data.readers).

Unit tests build tiny files under ``tmp_path``; the real-dataset tests read ``../shared/data`` beside the
checkout (or ``$MADD_SHARED_DATA``) and are skipped where it is absent.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATA
from PIL import Image

from madd.data.image_io import load_image, load_mask, rasterize_polygons, verify_records
from madd.data.readers import (
    READERS,
    read_class_folders,
    read_coco,
    read_dataset,
    read_image_mask_pairs,
    read_voc,
    read_yolo,
)
from madd.data.records import Record
from madd.errors import DataError, MaddConfigError

SKIP_REASON = "../shared/data not present (real datasets live beside the checkout)"


def _shared(sub: str) -> Path:
    return SHARED_DATA / sub


def _save(path: Path, arr_or_img, fmt: str | None = None, **kw) -> Path:
    """Write an array / PIL image to ``path`` (format from ``fmt`` or the extension)."""
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)
    return path


def _mode(path: Path) -> str:
    with Image.open(path) as im:
        return im.mode


def _rgb(h: int = 8, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# load_image
# --------------------------------------------------------------------------------------------------


def test_grey_image_replicated_to_three_channels(tmp_path):
    grey = np.arange(80, dtype=np.uint8).reshape(8, 10)
    p = _save(tmp_path / "g.png", grey)
    rgb = load_image(p, channels=3)
    assert rgb.shape == (8, 10, 3) and rgb.dtype == np.uint8
    assert all(np.array_equal(rgb[..., c], grey) for c in range(3))
    one = load_image(p, channels=1)
    assert one.shape == (8, 10, 1) and np.array_equal(one[..., 0], grey)


def test_rgb_image_and_grey_conversion(tmp_path):
    arr = _rgb()
    p = _save(tmp_path / "c.png", arr)
    assert np.array_equal(load_image(p), arr)
    grey = load_image(p, channels=1)[..., 0]
    expected = np.asarray(Image.fromarray(arr).convert("L")).astype(int)
    assert np.abs(grey.astype(int) - expected).max() <= 1  # same luma weights as PIL


def test_rgba_drops_alpha(tmp_path):
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., :3] = (200, 100, 50)
    arr[..., 3] = 0  # fully transparent: colour must survive (alpha dropped, not composited on black)
    p = _save(tmp_path / "a.png", arr)
    out = load_image(p)
    assert out.shape == (4, 4, 3) and (out == (200, 100, 50)).all()


def test_la_image(tmp_path):
    arr = np.stack([np.full((3, 5), 77, np.uint8), np.zeros((3, 5), np.uint8)], axis=-1)
    p = _save(tmp_path / "la.png", Image.fromarray(arr, mode="LA"))
    assert (load_image(p, channels=1) == 77).all()
    assert load_image(p).shape == (3, 5, 3)


def test_16bit_image_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 100, 65535, 30000]], dtype=np.uint16)
    p = _save(tmp_path / "d16.png", Image.fromarray(arr))
    assert _mode(p).startswith("I")
    out = load_image(p, channels=1)[..., 0]
    assert out.tolist() == [[0, 100, 255, round(30000 / 257)]]


def test_32bit_int_and_float_images(tmp_path):
    p_i = _save(tmp_path / "i32.tif", Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I"))
    assert load_image(p_i, channels=1)[..., 0].tolist() == [[0, 255]]
    p_f = _save(tmp_path / "f.tif", Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F"))
    assert load_image(p_f, channels=1)[..., 0].tolist() == [[0, 128, 255]]
    p_f2 = _save(tmp_path / "f2.tif", Image.fromarray(np.array([[-10.0, 10.0]], dtype=np.float32), mode="F"))
    assert load_image(p_f2, channels=1)[..., 0].tolist() == [[0, 255]]  # min-max normalised


def test_palette_bilevel_and_cmyk_images(tmp_path):
    arr = _rgb(6, 6)
    pal = Image.fromarray(arr).quantize(colors=8)
    p = _save(tmp_path / "p.png", pal)
    assert _mode(p) == "P"
    assert np.array_equal(load_image(p), np.asarray(pal.convert("RGB")))

    bilevel = Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1")
    p1 = _save(tmp_path / "b.png", bilevel)
    assert load_image(p1, channels=1)[..., 0].tolist() == [[0, 255]]

    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))  # pure red in CMYK
    pc = _save(tmp_path / "cmyk.jpg", cmyk, quality=100)
    out = load_image(pc)
    assert out.shape == (3, 4, 3) and out[..., 0].min() > 200 and out[..., 1:].max() < 60


def test_png_named_jpeg_decodes_by_content(tmp_path):
    ramp = np.linspace(0, 255, 16, dtype=np.uint8)
    arr = np.stack([np.tile(ramp, (16, 1)), np.tile(ramp[:, None], (1, 16)), np.full((16, 16), 90, np.uint8)], -1)
    p = _save(tmp_path / "liar.png", arr, fmt="JPEG", quality=95)
    assert p.read_bytes()[:2] == b"\xff\xd8"  # JPEG magic inside a .png name
    out = load_image(p)
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - arr.astype(int)).mean() < 5


def test_truncated_jpeg_raises_data_error_naming_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, format="JPEG")
    p = tmp_path / "broken.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError) as err:
        load_image(p)
    assert "broken.jpg" in str(err.value) and "re-export or remove" in str(err.value)


def test_non_image_and_missing_files_raise_data_error(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("not an image")
    with pytest.raises(DataError, match="notes.png"):
        load_image(p)
    with pytest.raises(DataError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(MaddConfigError):
        load_image(_save(tmp_path / "ok.png", _rgb()), channels=2)


# --------------------------------------------------------------------------------------------------
# load_mask / rasterize_polygons / verify_records
# --------------------------------------------------------------------------------------------------


def test_mask_threshold_and_colour(tmp_path):
    grey = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    assert load_mask(_save(tmp_path / "m.png", grey)).tolist() == [[False, False, True, True]]
    red = np.zeros((1, 2, 3), dtype=np.uint8)
    red[0, 1] = (255, 0, 0)  # luma 76, but clearly an annotation
    assert load_mask(_save(tmp_path / "red.png", red)).tolist() == [[False, True]]
    m16 = np.array([[0, 65535]], dtype=np.uint16)
    assert load_mask(_save(tmp_path / "m16.png", Image.fromarray(m16))).tolist() == [[False, True]]


def test_mask_size_mismatch_and_label_map(tmp_path):
    p = _save(tmp_path / "m.png", np.zeros((4, 6), np.uint8))
    assert load_mask(p, size=(6, 4)).shape == (4, 6)
    with pytest.raises(DataError) as err:
        load_mask(p, size=(8, 4))
    msg = str(err.value)
    assert "m.png" in msg and "6x4" in msg and "8x4" in msg and "re-export" in msg
    with pytest.raises(DataError, match="0 and 1"):
        load_mask(_save(tmp_path / "labelmap.png", np.array([[0, 1]], np.uint8)))


def test_rasterize_polygons():
    square = [0.25, 0.25, 0.75, 0.25, 0.75, 0.75, 0.25, 0.75]
    m = rasterize_polygons([square], width=40, height=20)
    assert m.shape == (20, 40) and m.dtype == bool
    assert m[10, 20] and not m[0, 0] and not m[19, 39]
    assert abs(m.sum() - 0.25 * 40 * 20) < 0.25 * 40 * 20 * 0.3
    assert not rasterize_polygons([], 5, 5).any()
    assert not rasterize_polygons(None, 5, 5).any()
    assert not rasterize_polygons([[0.1, 0.1, 0.9, 0.9]], 5, 5).any()  # < 3 points: skipped


def test_verify_records_collects_all_problems(tmp_path):
    good = _save(tmp_path / "good.png", _rgb(8, 10))
    mask_ok = _save(tmp_path / "mask_ok.png", np.zeros((8, 10), np.uint8))
    mask_bad = _save(tmp_path / "mask_bad.png", np.zeros((9, 10), np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0garbage")
    verify_records([Record(str(good), 0, mask_path=str(mask_ok))], channels=3)
    records = [
        Record(str(good), 0, mask_path=str(mask_ok)),
        Record(str(good), 1, mask_path=str(mask_bad)),
        Record(str(broken), 0),
    ] + [Record(str(tmp_path / f"missing_{i}.png"), 0) for i in range(25)]
    with pytest.raises(DataError) as err:
        verify_records(records, channels=1)
    msg = str(err.value)
    assert "27 of 28" in msg and "mask_bad.png" in msg and "broken.jpg" in msg
    assert "and 7 more" in msg and msg.count("\n  - ") == 20


# --------------------------------------------------------------------------------------------------
# class folders
# --------------------------------------------------------------------------------------------------


def _class_tree(root: Path) -> None:
    _save(root / "red iron" / "b.png", _rgb())
    _save(root / "red iron" / "a.jpg", _rgb())
    _save(root / "red iron" / "c.png", _rgb(), fmt="JPEG")  # extension lies: still listed
    (root / "red iron" / "notes.txt").write_text("x")
    (root / "red iron" / ".hidden.png").write_bytes(b"")
    _save(root / "good" / "g1.BMP", _rgb())
    _save(root / "slag inclusion" / "s1.tif", _rgb())


def test_class_folders_sorted_with_spaces(tmp_path):
    _class_tree(tmp_path)
    idx = read_class_folders(tmp_path)
    assert idx.class_names == ["good", "red iron", "slag inclusion"]
    assert [Path(r.path).name for r in idx.records] == ["g1.BMP", "a.jpg", "b.png", "c.png", "s1.tif"]
    assert idx.counts() == [1, 3, 1]
    assert all(Path(r.path).is_absolute() and r.mask_path is None and r.polygons is None for r in idx.records)
    assert load_image(idx.records[3].path).shape == (8, 10, 3)  # the PNG-named JPEG


def test_class_folders_explicit_order_and_subset(tmp_path):
    _class_tree(tmp_path)
    idx = read_class_folders(tmp_path, class_names=["slag inclusion", "red iron"])
    assert idx.class_names == ["slag inclusion", "red iron"] and idx.counts() == [1, 3]
    with pytest.raises(DataError, match="scratch"):
        read_class_folders(tmp_path, class_names=["red iron", "scratch"])
    with pytest.raises(DataError, match="normal_class"):
        read_class_folders(tmp_path, normal_class="ok")


def test_class_folders_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_class_folders(tmp_path / "absent")
    with pytest.raises(DataError, match="no class sub-folders"):
        read_class_folders(tmp_path)
    _class_tree(tmp_path)
    (tmp_path / "empty class").mkdir()
    (tmp_path / "empty class" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="empty class"):
        read_class_folders(tmp_path)
    with pytest.raises(DataError, match="red iron"):  # folder has images, but not with this extension
        read_class_folders(tmp_path, class_names=["red iron"], extensions=["webp"])


def test_class_folders_masks(tmp_path):
    root, masks = tmp_path / "images", tmp_path / "masks"
    for cls, stems in {"good": ["g1", "g2"], "scratch": ["s1", "s2", "s3"]}.items():
        for s in stems:
            _save(root / cls / f"{s}.jpg", _rgb())
    mask = np.zeros((8, 10), np.uint8)
    _save(masks / "scratch" / "s1_mask.png", mask)  # class sub-folder
    _save(masks / "s2_mask.png", mask)  # flat fallback
    _save(masks / "good" / "g1_mask.png", mask)
    idx = read_class_folders(root, normal_class="good", mask_root=masks, mask_suffix="_mask")
    by_name = {Path(r.path).stem: r for r in idx.records}
    assert by_name["g1"].mask_path.endswith("g1_mask.png")
    assert by_name["g2"].mask_path is None and by_name["g2"].polygons == []  # normal: empty mask
    assert by_name["s1"].mask_path.endswith(os.path.join("scratch", "s1_mask.png"))
    assert by_name["s2"].mask_path == str(masks / "s2_mask.png")
    assert by_name["s3"].mask_path is None and by_name["s3"].polygons is None  # defect: no localisation
    assert not by_name["s3"].has_localisation


def test_class_folders_masks_next_to_images(tmp_path):
    _save(tmp_path / "defect" / "a.png", _rgb())
    _save(tmp_path / "defect" / "a_mask.png", np.zeros((8, 10), np.uint8))
    idx = read_class_folders(tmp_path, mask_root=tmp_path, mask_suffix="_mask")
    assert len(idx.records) == 1 and idx.records[0].mask_path.endswith("a_mask.png")


# --------------------------------------------------------------------------------------------------
# image + mask pairs
# --------------------------------------------------------------------------------------------------


def test_image_mask_pairs(tmp_path):
    img_dir, mask_dir = tmp_path / "img", tmp_path / "gt"
    for s in ("a", "b", "c"):
        _save(img_dir / f"{s}.jpg", _rgb())
    empty = np.zeros((8, 10), np.uint8)
    faint = empty.copy()
    faint[0, 0] = 100  # below 128: still empty
    full = empty.copy()
    full[2:4, 2:4] = 255
    _save(mask_dir / "a_gt.png", faint)
    _save(mask_dir / "b_gt.png", full)
    idx = read_image_mask_pairs(img_dir, mask_dir, mask_suffix="_gt")
    assert idx.class_names == ["good", "defect"]
    a, b, c = idx.records
    assert (a.label, b.label, c.label) == (0, 1, 0)
    assert a.mask_path.endswith("a_gt.png") and b.mask_path.endswith("b_gt.png")
    assert c.mask_path is None and c.polygons == []
    verify_records(idx.records, channels=3)


def test_image_mask_pairs_errors(tmp_path):
    _save(tmp_path / "img" / "a.png", _rgb())
    (tmp_path / "gt").mkdir()
    with pytest.raises(DataError, match="does not exist"):
        read_image_mask_pairs(tmp_path / "img", tmp_path / "nothing")
    with pytest.raises(DataError, match="class_names"):
        read_image_mask_pairs(tmp_path / "img", tmp_path / "gt", class_names=["ok", "defect"])
    with pytest.raises(DataError, match="No images"):
        read_image_mask_pairs(tmp_path / "gt", tmp_path / "gt")


# --------------------------------------------------------------------------------------------------
# Pascal VOC
# --------------------------------------------------------------------------------------------------


def _voc_xml(path: Path, objects: list[tuple[str, int, int, int, int]], size: tuple[int, int] = (100, 50)) -> None:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
        f"<ymax>{y2}</ymax></bndbox></object>"
        for n, x1, y1, x2, y2 in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"{objs}</annotation>"
    )


def test_voc_two_dir_pairs(tmp_path):
    _save(tmp_path / "IMAGES" / "scratch_1.jpg", _rgb(50, 100))
    _save(tmp_path / "IMAGES" / "scratch_2.jpg", _rgb(50, 100))
    _save(tmp_path / "VAL_IMG" / "pit_1.jpg", _rgb(40, 80))
    # scratch_2: small scratch listed first, larger pit: largest-area rule says pit
    _voc_xml(tmp_path / "ANN" / "scratch_1.xml", [("scratch", 10, 10, 60, 30)])
    _voc_xml(tmp_path / "ANN" / "scratch_2.xml", [("scratch", 0, 0, 10, 10), ("pit", 0, 0, 50, 50)])
    _voc_xml(tmp_path / "VAL_ANN" / "pit_1.xml", [("pit", 0, 0, 40, 20)], size=(0, 0))  # size from image
    _voc_xml(tmp_path / "ANN" / "orphan.xml", [("pit", 0, 0, 1, 1)])  # no image: ignored
    kwargs = dict(root=tmp_path, images_dirs=["IMAGES", "VAL_IMG"], annotations_dirs=["ANN", "VAL_ANN"])
    idx = read_voc(**kwargs)
    assert idx.class_names == ["pit", "scratch"]
    names = [Path(r.path).name for r in idx.records]
    assert names == ["scratch_1.jpg", "scratch_2.jpg", "pit_1.jpg"]
    assert [r.label for r in idx.records] == [1, 0, 0]
    assert idx.records[0].boxes == [(1, 0.1, 0.2, 0.6, 0.6)]
    assert idx.records[2].boxes == [(0, 0.0, 0.0, 0.5, 0.5)]  # normalised by the 80x40 image
    assert all(r.polygons is None for r in idx.records)
    assert [r.label for r in read_voc(**kwargs, image_label="first").records] == [1, 1, 0]
    assert [r.label for r in read_voc(**kwargs, image_label="filename").records] == [1, 1, 0]
    flipped = read_voc(**kwargs, class_names=["scratch", "pit"])
    assert flipped.records[0].boxes[0][0] == 0


def test_voc_errors(tmp_path):
    _save(tmp_path / "img" / "a.jpg", _rgb())
    _save(tmp_path / "img" / "b.jpg", _rgb())
    _voc_xml(tmp_path / "ann" / "a.xml", [("scratch", 1, 1, 5, 5)])
    with pytest.raises(DataError, match="b.jpg"):  # image without XML
        read_voc(tmp_path / "img", tmp_path / "ann")
    _voc_xml(tmp_path / "ann" / "b.xml", [])
    with pytest.raises(DataError, match="no objects"):
        read_voc(tmp_path / "img", tmp_path / "ann")
    idx = read_voc(tmp_path / "img", tmp_path / "ann", normal_name="good")
    assert idx.class_names == ["good", "scratch"] and [r.label for r in idx.records] == [1, 0]
    with pytest.raises(DataError, match="scratch"):
        read_voc(tmp_path / "img", tmp_path / "ann", class_names=["good", "dent"], normal_name="good")
    with pytest.raises(DataError, match="as many"):
        read_voc([tmp_path / "img"], [tmp_path / "ann", tmp_path / "ann"])
    with pytest.raises(DataError, match="does not exist"):
        read_voc(tmp_path / "nope", tmp_path / "ann")
    (tmp_path / "ann" / "a.xml").write_text("<annotation><size>")
    with pytest.raises(DataError, match="a.xml"):
        read_voc(tmp_path / "img", tmp_path / "ann", normal_name="good")


# --------------------------------------------------------------------------------------------------
# YOLO
# --------------------------------------------------------------------------------------------------


def _yolo_tree(tmp_path: Path, lines: dict[str, str | None]) -> Path:
    for stem, text in lines.items():
        _save(tmp_path / "images" / "train" / f"{stem}.jpg", _rgb(20, 20))
        if text is not None:
            p = tmp_path / "labels" / "train" / f"{stem}.txt"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
    (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
    return tmp_path


def test_yolo_polygons_and_boxes(tmp_path):
    root = _yolo_tree(
        tmp_path,
        {
            "a": "0 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n",  # polygon
            "b": "0 0.5 0.5 0.2 0.4\n",  # box cx cy w h
            "c": "",  # empty file: normal
            "d": None,  # no file: normal
        },
    )
    idx = read_yolo("images/train", root=root)  # labels dir derived: images/train -> labels/train
    assert idx.class_names == ["good", "defect"]
    a, b, c, d = idx.records
    assert (a.label, b.label, c.label, d.label) == (1, 1, 0, 0)
    assert a.polygons == [[0.1, 0.1, 0.5, 0.1, 0.5, 0.5, 0.1, 0.5]]
    assert a.boxes == [(1, 0.1, 0.1, 0.5, 0.5)]
    assert b.boxes == [(1, pytest.approx(0.4), pytest.approx(0.3), pytest.approx(0.6), pytest.approx(0.7))]
    assert b.polygons is not None and len(b.polygons[0]) == 8  # box as rectangle in a segmentation set
    assert c.polygons == [] and d.polygons == []
    mask = rasterize_polygons(a.polygons, 20, 20)
    assert mask[5, 5] and not mask[15, 15]


def test_yolo_box_only_dataset_and_class_mapping(tmp_path):
    root = _yolo_tree(tmp_path, {"a": "1 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.1 0.1\n", "b": ""})
    names = ["good", "crack", "dent"]
    idx = read_yolo(root / "images" / "train", root / "labels" / "train", class_names=names)
    a, b = idx.records
    assert a.label == 2 and [bx[0] for bx in a.boxes] == [2, 1]  # id 1 -> dent (largest), id 0 -> crack
    assert a.polygons is None and b.polygons is None and b.label == 0  # detection-only: no masks
    # Explicit offset; normal class last so offset 0 maps id k -> class_names[k].
    idx = read_yolo(root / "images" / "train", class_names=["crack", "dent", "good"], yolo_class_offset=0)
    assert idx.records[0].label == 1 and idx.records[1].label == 2
    with pytest.raises(DataError, match="id 1"):
        read_yolo(root / "images" / "train", class_names=["good", "crack"])
    with pytest.raises(DataError, match="normal_name"):
        read_yolo(root / "images" / "train", class_names=["crack", "dent"], normal_name=None)


def test_yolo_malformed_lines(tmp_path):
    root = _yolo_tree(tmp_path, {"a": "0 0.1 0.2 0.3\n"})
    with pytest.raises(DataError, match="a.txt"):
        read_yolo(root / "images" / "train")
    (root / "labels" / "train" / "a.txt").write_text("x 0.1 0.2 0.3 0.4\n")
    with pytest.raises(DataError, match="not numeric"):
        read_yolo(root / "images" / "train")
    with pytest.raises(DataError, match="does not exist"):
        read_yolo(root / "images" / "val")


# --------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------


def _coco(tmp_path: Path, annotations: list[dict]) -> Path:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _save(tmp_path / "imgs" / name, _rgb(50, 100))
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 100, "height": 50},
            {"id": 2, "file_name": "b.jpg", "width": 100, "height": 50},
            {"id": 3, "file_name": "c.jpg"},  # size read from the image header
        ],
        "categories": [{"id": 7, "name": "dent"}, {"id": 3, "name": "crack"}],
        "annotations": annotations,
    }
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data))
    return p


def test_coco_polygons_boxes_and_labels(tmp_path):
    ann = _coco(
        tmp_path,
        [
            {"id": 1, "image_id": 1, "category_id": 3, "area": 600,
             "segmentation": [[10, 10, 50, 10, 50, 40]], "bbox": [10, 10, 40, 30]},
            {"id": 2, "image_id": 1, "category_id": 7, "area": 50,
             "segmentation": [[0, 0, 10, 0, 10, 10]], "bbox": [0, 0, 10, 10]},
            {"id": 3, "image_id": 3, "category_id": 7, "segmentation": [], "bbox": [0, 0, 50, 25]},
        ],
    )
    idx = read_coco(tmp_path / "imgs", ann)
    assert idx.class_names == ["good", "crack", "dent"]  # normal first, then category-id order
    a, b, c = idx.records
    assert (a.label, b.label, c.label) == (1, 0, 2)
    assert a.polygons[0] == pytest.approx([0.1, 0.2, 0.5, 0.2, 0.5, 0.8])
    assert a.boxes[0] == (1, 0.1, 0.2, 0.5, pytest.approx(0.8))
    assert b.polygons == [] and b.boxes == []
    assert c.polygons == [[0.0, 0.0, 0.5, 0.0, 0.5, 0.5, 0.0, 0.5]]  # bbox-only -> rectangle
    assert read_dataset("coco", images_dir="imgs", annotation_json="ann.json", root=tmp_path).counts() == [1, 1, 1]


def test_coco_errors(tmp_path):
    rle = {"id": 1, "image_id": 1, "category_id": 3, "segmentation": {"counts": "abc", "size": [50, 100]}}
    with pytest.raises(DataError, match="RLE"):
        read_coco(tmp_path / "imgs", _coco(tmp_path, [rle]))
    ann = _coco(tmp_path, [])
    with pytest.raises(DataError, match="not in"):  # unannotated images, but no normal class
        read_coco(tmp_path / "imgs", ann, class_names=["crack"])
    (tmp_path / "imgs" / "b.jpg").unlink()
    with pytest.raises(DataError, match="b.jpg"):
        read_coco(tmp_path / "imgs", ann)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="bad.json"):
        read_coco(tmp_path / "imgs", tmp_path / "bad.json")


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------


def test_registry(tmp_path):
    assert set(READERS) == {"class_folders", "image_mask", "voc", "yolo", "coco", "mvtec", "folder", "files"}
    with pytest.raises(DataError) as err:
        read_dataset("imagenet", root=tmp_path)
    assert "class_folders" in str(err.value) and "coco" in str(err.value)
    with pytest.raises(DataError, match="mask_root"):
        read_dataset("class_folders", root=tmp_path, mask_dir="x")  # typo: lists real parameters
    _class_tree(tmp_path)
    assert len(read_dataset("class_folders", root=str(tmp_path)).records) == 5


# --------------------------------------------------------------------------------------------------
# real datasets (../shared/data)
# --------------------------------------------------------------------------------------------------

NEU = _shared("neu_det")
XSDD = _shared("x_sdd/X-SDD/datas")
KOLEKTOR = _shared("kolektorsdd/Datasets")


@pytest.mark.skipif(not NEU.exists(), reason=SKIP_REASON)
def test_real_neu_det():
    kwargs = dict(
        root=str(NEU),
        images_dirs=["IMAGES", "Validation_Images"],
        annotations_dirs=["ANNOTATIONS", "Validation_Annotations"],
    )
    idx = read_dataset("voc", **kwargs, image_label="filename")
    assert len(idx.records) == 1800
    assert idx.class_names == ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    assert idx.counts() == [300] * 6
    assert sum(len(r.boxes) for r in idx.records) == 4189
    assert all(0 <= v <= 1 for r in idx.records for b in r.boxes for v in b[1:])
    # Default largest-box rule: 10 multi-class images change class (documented in read_voc).
    assert read_dataset("voc", **kwargs).counts() == [300, 309, 300, 301, 300, 290]
    for r in idx.records[::450]:
        assert load_image(r.path).shape == (200, 200, 3)


@pytest.mark.skipif(not XSDD.exists(), reason=SKIP_REASON)
def test_real_x_sdd():
    idx = read_dataset("class_folders", root=str(XSDD))
    assert len(idx.records) == 1360 and len(idx.class_names) == 7
    counts = dict(zip(idx.class_names, idx.counts()))
    assert counts == {
        "slag inclusion": 238,
        "red iron": 397,
        "iron sheet ash": 122,
        "surface scratch": 134,
        "oxide scale of plate system": 63,
        "finishing roll printing": 203,
        "oxide scale of temperature system": 203,
    }
    # Header-only size check (cheap): the dataset has exactly two images that are not 128x128.
    sizes = []
    for r in idx.records:
        with Image.open(r.path) as im:
            sizes.append(im.size)
    assert sum(s != (128, 128) for s in sizes) == 2
    pngs = [r for r in idx.records if r.path.endswith(".png")]
    assert pngs
    for r in [*pngs[:2], *idx.records[::400]]:
        img = load_image(r.path)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and img.shape[0] == 128


@pytest.mark.skipif(not KOLEKTOR.exists(), reason=SKIP_REASON)
def test_real_kolektorsdd():
    idx = read_dataset(
        "yolo",
        root=str(KOLEKTOR),
        images_dirs=["images/train", "images/val"],
        labels_dirs=["labels/train", "labels/val"],
        class_names=["good", "defect"],
    )
    assert len(idx.records) == 399 and idx.counts() == [347, 52]
    defects = [r for r in idx.records if r.label == 1]
    assert all(r.polygons for r in defects) and all(r.polygons == [] for r in idx.records if r.label == 0)
    for r in defects[:3] + [next(r for r in idx.records if r.label == 0)]:
        img = load_image(r.path, channels=3)
        assert img.shape[1] == 500 and 1240 <= img.shape[0] <= 1280 and img.shape[2] == 3
        assert np.array_equal(img[..., 0], img[..., 2])  # grey replicated
        mask = rasterize_polygons(r.polygons, img.shape[1], img.shape[0])
        assert mask.any() == (r.label == 1)
