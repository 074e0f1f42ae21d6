"""Tests for the built-in synthetic defect generator (madd.data.synthetic).

Kept fast: small images (48-96 px) and a few dozen renders per check.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from madd.data import synthetic
from madd.data.synthetic import generate as gen_mod
from madd.errors import MaddConfigError

SMALL = dict(num_images=20, image_size=48, seed=3)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*.png"))
    }


def _grey(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64).mean(-1) if img.ndim == 3 else img.astype(np.float64)


# ------------------------------------------------------------------------------ registry / presets


def test_registry_and_class_names():
    assert set(synthetic.DOMAINS) == {"awdd", "bdd", "metal"}
    assert synthetic.class_names("awdd") == ["good", "crack", "pore", "edge_burn", "incomplete_weld"]
    assert synthetic.class_names("bdd") == ["good", "pitting", "crack", "wear"]
    assert synthetic.class_names("metal") == ["good", "crack", "pore", "scratch"]
    for dom in synthetic.DOMAINS:  # shared semantics across domains
        names = synthetic.class_names(dom)
        assert names[0] == "good" and "crack" in names


def test_unknown_domain_lists_valid_ones(tmp_path):
    with pytest.raises(MaddConfigError, match="awdd.*bdd.*metal"):
        synthetic.class_names("xray")
    with pytest.raises(MaddConfigError, match="valid domains"):
        synthetic.generate_synthetic("xray", tmp_path, 4, 48)


def test_presets():
    p = synthetic.preset("awdd_paper")
    assert p == {"domain": "awdd", "num_images": 3000, "image_size": 256}
    assert synthetic.preset("bdd_paper")["num_images"] == 2000
    for name, kw in synthetic.PRESETS.items():
        assert kw["domain"] in synthetic.DOMAINS, name
    p["num_images"] = 1  # a copy: the registry is not mutated
    assert synthetic.PRESETS["awdd_paper"]["num_images"] == 3000
    with pytest.raises(MaddConfigError, match="awdd_cpu"):
        synthetic.preset("nope")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_images=0),
        dict(image_size=16),
        dict(seed=-1),
        dict(class_proportions={"good": 1.0, "dent": 1.0}),
        dict(class_proportions=[1.0, 2.0]),
        dict(class_proportions={"good": 0.0}),
        dict(normal_fraction=1.5),
        dict(normal_fraction=0.5, class_proportions={"good": 1.0}),
    ],
)
def test_bad_params_raise_config_error(tmp_path, kwargs):
    args = dict(domain="awdd", root=tmp_path, **SMALL)
    args.update(kwargs)
    with pytest.raises(MaddConfigError):
        synthetic.generate_synthetic(**args)
    assert not any(tmp_path.iterdir())  # validation happens before anything is written


# ------------------------------------------------------------------------------ layout / records


def test_layout_and_records(tmp_path):
    index = synthetic.generate_synthetic("bdd", tmp_path, **SMALL)
    folder = Path(index.root)
    assert folder.parent == tmp_path and folder.name.startswith("bdd-")
    assert (folder / "params.json").is_file() and (folder / ".complete").is_file()
    assert json.loads((folder / "params.json").read_text())["num_images"] == SMALL["num_images"]
    assert index.class_names == synthetic.class_names("bdd")
    assert len(index.records) == SMALL["num_images"]
    assert not list(tmp_path.glob(".*tmp*"))  # temp dir renamed away
    for i, r in enumerate(index.records):
        cls = index.class_names[r.label]
        assert Path(r.path) == folder / "images" / cls / f"{i:05d}.png"
        assert Path(r.mask_path) == folder / "masks" / cls / f"{i:05d}.png"
        img, mask = Image.open(r.path), np.asarray(Image.open(r.mask_path))
        assert img.mode == "RGB" and img.size == (48, 48)
        assert mask.dtype == np.uint8 and mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 255}
        assert r.boxes == [] and r.has_localisation
        # good images have empty masks, every defect image a non-empty one
        assert (mask.max() == 0) == (cls == "good")
    # the 1-channel domain is stored as greyscale
    awdd = synthetic.generate_synthetic("awdd", tmp_path, **SMALL)
    assert Image.open(awdd.records[0].path).mode == "L"


# ------------------------------------------------------------------------------ determinism / cache


def test_determinism_byte_identical(tmp_path):
    a = synthetic.generate_synthetic("awdd", tmp_path / "a", **SMALL, workers=0)
    b = synthetic.generate_synthetic("awdd", tmp_path / "b", **SMALL, workers=3)
    assert Path(a.root).name == Path(b.root).name  # same params => same hash
    fa, fb = _files(Path(a.root)), _files(Path(b.root))
    assert len(fa) == 2 * SMALL["num_images"] and fa == fb  # serial and threaded agree byte for byte
    assert [r.label for r in a.records] == [r.label for r in b.records]

    c = synthetic.generate_synthetic("awdd", tmp_path / "c", **{**SMALL, "seed": 4})
    assert Path(c.root).name != Path(a.root).name
    ia = np.stack([np.asarray(Image.open(r.path)) for r in a.records])
    ic = np.stack([np.asarray(Image.open(r.path)) for r in c.records])
    assert not np.array_equal(ia, ic)


def test_per_image_rng_is_independent_of_the_rest():
    # image i depends only on (domain, seed, i): rendering it alone equals rendering it in any batch
    img1, m1 = synthetic.render_sample("metal", 48, 5, 17, 1)
    for i in range(3):
        synthetic.render_sample("metal", 48, 5, i, 2)
    img2, m2 = synthetic.render_sample("metal", 48, 5, 17, 1)
    assert np.array_equal(img1, img2) and np.array_equal(m1, m2)
    img3, _ = synthetic.render_sample("metal", 48, 5, 18, 1)
    assert not np.array_equal(img1, img3)
    # same seed and index in another domain gives another image
    assert not np.array_equal(_grey(img1), _grey(synthetic.render_sample("bdd", 48, 5, 17, 1)[0]))


def test_cache_reuse_and_regeneration(tmp_path, monkeypatch):
    calls = []
    real_write = gen_mod._write_dataset
    monkeypatch.setattr(gen_mod, "_write_dataset", lambda *a, **k: (calls.append(1), real_write(*a, **k)))

    first = synthetic.generate_synthetic("metal", tmp_path, **SMALL)
    folder = Path(first.root)
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    assert len(calls) == 1

    again = synthetic.generate_synthetic("metal", tmp_path, **SMALL)
    assert len(calls) == 1  # not regenerated
    assert [(r.path, r.label, r.mask_path) for r in again.records] == [
        (r.path, r.label, r.mask_path) for r in first.records
    ]
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == mtimes

    changed = synthetic.generate_synthetic("metal", tmp_path, **{**SMALL, "image_size": 56})
    assert len(calls) == 2 and Path(changed.root) != folder
    assert Image.open(changed.records[0].path).size == (56, 56)
    props = synthetic.generate_synthetic("metal", tmp_path, **SMALL, normal_fraction=0.5)
    assert len(calls) == 3 and Path(props.root) not in (folder, Path(changed.root))
    assert folder.is_dir()  # the other parameter sets' caches are untouched


def test_incomplete_or_tampered_cache_is_regenerated(tmp_path):
    index = synthetic.generate_synthetic("awdd", tmp_path, **SMALL)
    folder = Path(index.root)
    (folder / ".complete").unlink()  # e.g. a cache copied half-way
    os.remove(index.records[0].path)
    again = synthetic.generate_synthetic("awdd", tmp_path, **SMALL)
    assert (folder / ".complete").is_file() and os.path.isfile(again.records[0].path)


@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_run_leaves_no_half_cache(tmp_path, monkeypatch, workers):
    real = gen_mod._render_one
    count = {"n": 0}

    def flaky(*a, **k):
        count["n"] += 1
        if count["n"] == 7:
            raise KeyboardInterrupt  # simulate Ctrl-C mid-generation
        if count["n"] > 7:  # the other worker's images after the Ctrl-C: slow, so that on a loaded machine the
            time.sleep(0.2)  # main thread cancels the queue before that worker could render all of it
        return real(*a, **k)

    monkeypatch.setattr(gen_mod, "_render_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate_synthetic("awdd", tmp_path, **SMALL, workers=workers)
    assert list(tmp_path.iterdir()) == []  # neither the final folder nor the temp dir
    assert count["n"] < SMALL["num_images"]  # queued images were cancelled, not rendered

    monkeypatch.setattr(gen_mod, "_render_one", real)
    index = synthetic.generate_synthetic("awdd", tmp_path, **SMALL, workers=0)
    assert all(os.path.isfile(r.path) for r in index.records)


def test_stale_temp_dir_of_a_killed_run_is_cleaned(tmp_path):
    import socket
    import subprocess
    import sys

    params = synthetic.synthetic_params("awdd", **SMALL)
    name = synthetic.dataset_dir(tmp_path, params).name
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer exists
    stale = tmp_path / f".{name}.tmp-{host}-{dead.pid}-deadbeef"
    alive = tmp_path / f".{name}.tmp-{host}-{os.getpid()}-cafef00d"  # a live run's: must survive
    foreign = tmp_path / f".{name}.tmp-otherhost-{dead.pid}-0badc0de"  # other host: cannot judge
    for d in (stale, alive, foreign):
        (d / "images").mkdir(parents=True)
    synthetic.generate_synthetic("awdd", tmp_path, **SMALL)
    assert not stale.exists() and alive.exists() and foreign.exists()


# ------------------------------------------------------------------------------ content


@pytest.mark.parametrize("domain", sorted(synthetic.DOMAINS))
def test_masks_sit_where_the_defects_are(domain):
    """Rendering the same sample with the defect switched off must differ only around the mask."""
    names = synthetic.class_names(domain)
    inside_total = diff_total = 0
    for label, cls in enumerate(names):
        for i in range(6):
            img, mask = synthetic.render_sample(domain, 64, 11, i, label)
            clean, clean_mask = synthetic.render_sample(domain, 64, 11, i, label, with_defect=False)
            assert not clean_mask.any()
            diff = np.abs(img.astype(int) - clean.astype(int))
            diff = diff.max(-1) if diff.ndim == 3 else diff
            if cls == "good":
                assert not mask.any() and not diff.any()
                continue
            assert mask.any(), (cls, i)
            changed = diff > 0
            near = ndimage.binary_dilation(mask, iterations=2)
            inside = (changed & near).sum()
            assert inside / changed.sum() > 0.85, (cls, i)
            # visible: within the mask the defect moves pixels by a clear margin on average
            assert diff[mask].mean() > 5, (cls, i, diff[mask].mean())
            inside_total += inside
            diff_total += changed.sum()
    assert inside_total / diff_total > 0.95


def test_class_proportions():
    n = 500
    for dom, normal in [("awdd", 0.6), ("bdd", 0.6), ("metal", 0.25)]:
        props = synthetic.resolve_proportions(dom)
        assert props[0] == pytest.approx(normal) and sum(props) == pytest.approx(1.0)
        counts = np.bincount(synthetic.assign_labels(dom, n, 0, props), minlength=len(props))
        assert counts.sum() == n
        assert np.allclose(counts / n, props, atol=1.0 / n)

    props = synthetic.resolve_proportions("awdd", {"good": 2, "crack": 1, "pore": 1})
    assert props == pytest.approx([0.5, 0.25, 0.25, 0.0, 0.0])
    assert synthetic.resolve_proportions("bdd", [1, 1, 1, 1]) == pytest.approx([0.25] * 4)
    assert synthetic.resolve_proportions("bdd", normal_fraction=0.9)[0] == pytest.approx(0.9)
    labels = synthetic.assign_labels("awdd", 101, 0, props)
    assert np.bincount(labels, minlength=5).tolist() == [51, 25, 25, 0, 0]
    # labels are shuffled, not sorted by class
    assert (np.diff(labels) != 0).sum() > 10


def test_generate_honours_proportions(tmp_path):
    index = synthetic.generate_synthetic(
        "metal", tmp_path, 40, 32, seed=0, class_proportions={"good": 3, "scratch": 1}
    )
    assert index.counts() == [30, 0, 0, 10]
    folder = Path(index.root)
    assert not (folder / "images" / "crack").exists()  # no empty class folders


def test_domains_differ_in_intensity_statistics():
    stats = {}
    for dom in synthetic.DOMAINS:
        imgs = [_grey(synthetic.render_sample(dom, 64, 0, i, 0)[0]) for i in range(12)]
        stats[dom] = (np.mean([x.mean() for x in imgs]), np.mean([x.std() for x in imgs]))
    doms = sorted(stats)
    for i, a in enumerate(doms):
        for b in doms[i + 1 :]:
            (ma, sa), (mb, sb) = stats[a], stats[b]
            assert abs(ma - mb) > 10 or abs(sa - sb) > 5, (a, b, stats)
    # and the target domains are not just a brightness shift of each other
    assert abs(stats["awdd"][1] - stats["bdd"][1]) > 5


def test_small_and_large_defects_exist():
    for dom in synthetic.DOMAINS:
        areas = []
        n_classes = len(synthetic.class_names(dom))
        for i in range(36):
            label = 1 + i % (n_classes - 1)
            _, mask = synthetic.render_sample(dom, 96, 2, i, label)
            areas.append(mask.mean())
        areas = np.array(areas)
        assert (areas > 0).all()
        assert (areas < 0.01).mean() > 0.2, dom  # small defects (< 1 % of the image) are common
        assert areas.max() / areas.min() > 5, dom  # and sizes vary
    # region-type defects give the large end
    big = [synthetic.render_sample("bdd", 96, 2, i, 3)[1].mean() for i in range(4)]
    assert max(big) > 0.01
