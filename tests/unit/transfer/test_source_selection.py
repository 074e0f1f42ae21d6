"""End to end: select_source.py's matrix, data.source=auto in training, and transfer_from (RTLAOI-DD 2.2-2.6)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from helpers import CONF, TINY_DATA, compose_config, requires_shared_data
from omegaconf import open_dict

from madd.errors import MaddConfigError
from madd.transfer.datasets import dataset_entry
from madd.transfer.source_selection import run_matrix


CLASSES = {"awdd": ["good", "crack", "pore", "edge_burn", "incomplete_weld"],
           "bdd": ["good", "pitting", "crack", "wear"], "metal": ["good", "crack", "pore", "scratch"]}
FAST_SIGNATURE = ["signature.k_range=[1,5]", "signature.elbow_images=4", "signature.pixels=256"]
FEW_STEPS = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false"]


def tiny(domain: str, data_dir, n: int = 30, seed: int = 1, size: int = 32) -> dict:
    return {"name": domain, "class_names": CLASSES[domain],
            "target": {"reader": "synthetic", "domain": domain, "root": str(data_dir / "synthetic"),
                       "num_images": n, "image_size": size, "seed": seed}}


def test_select_source_matrix_csv_heatmap_and_choice(tmp_path, data_dir, capsys):
    cfg = compose_config(FAST_SIGNATURE, tmp_path, data_dir, config_name="select_source")
    with open_dict(cfg):
        cfg.target = tiny("awdd", data_dir, seed=0)
        cfg.sources = [tiny("metal", data_dir), tiny("bdd", data_dir),
                       {"name": "missing", "class_names": ["a"],
                        "target": {"reader": "class_folders", "root": str(tmp_path / "nowhere")}}]
    out = run_matrix(cfg)
    printed = capsys.readouterr().out
    assert "skipped missing" in printed
    assert f"chosen source for awdd: {out['chosen']}" in printed
    assert out["chosen"] in ("metal", "bdd")

    matrix = pd.read_csv(out["matrix_csv"], index_col=0)
    assert list(matrix.index) == ["awdd", "metal", "bdd"] == list(matrix.columns)
    assert not matrix.isna().any().any()
    assert all(matrix.loc[n, n] == 0 for n in matrix.index)  # EMD of a signature with itself
    assert (matrix.to_numpy() >= 0).all()
    pairs = pd.read_csv(out["pairs_csv"])
    assert set(pairs.columns) >= {"target", "source", "score", "emd", "gini", "shared_labels", "usable_samples"}
    row = pairs[(pairs.target == "awdd") & (pairs.source == "metal")].iloc[0]
    assert row.shared_labels == 3  # good, crack, pore
    assert math.isclose(row.score, row.emd * row.gini / (3 + 1e-6), rel_tol=1e-5)
    png = tmp_path / "out" / "discrepancy_heatmap.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_named_data_configs_compose_and_unknown_name_is_clear(tmp_path, data_dir):
    cfg = compose_config([], tmp_path, data_dir, config_name="select_source")
    entry = dataset_entry("synthetic_metal", cfg.paths, aliases={"synthetic_metal": {"scratch": "scratch"}})
    assert entry.class_names == CLASSES["metal"]
    assert entry.spec["root"] == f"{data_dir}/synthetic"
    with pytest.raises(MaddConfigError, match="available"):
        dataset_entry("no_such_dataset", cfg.paths)
    with pytest.raises(MaddConfigError, match="does not have"):
        dataset_entry("synthetic_metal", cfg.paths, aliases={"synthetic_metal": {"dent": "x"}})


def test_target_without_any_shared_source_is_one_clear_error(tmp_path, data_dir):
    cfg = compose_config(FAST_SIGNATURE, tmp_path, data_dir, config_name="select_source")
    with open_dict(cfg):
        cfg.target = {**tiny("awdd", data_dir, seed=0), "name": "renamed",
                      "class_names": CLASSES["awdd"]}
        cfg.target["aliases"] = {c: f"weld_{c}" for c in CLASSES["awdd"]}
        cfg.sources = [tiny("bdd", data_dir)]
    with pytest.raises(MaddConfigError, match="no source shares a label with target renamed"):
        run_matrix(cfg)


def test_auto_source_then_backbone_transfer_in_training(tmp_path, data_dir):
    """The paper's chain: pick the source (auto) -> train on it -> transfer its backbone -> fine-tune."""
    from madd.pipeline import train

    stage1 = compose_config(TINY_DATA + ["data.source=auto", "+data.train_splits=[source]",
                                         "model.train_split=source", *FEW_STEPS,
                                         "data.source_selection.signature.max_images=20", "data.source_selection.signature.pixels=256"],
                            tmp_path / "stage1", data_dir)
    with open_dict(stage1):
        stage1.data.source_candidates = [tiny("metal", data_dir, n=24, size=64), tiny("bdd", data_dir, n=24, size=64)]
    train(stage1)
    chosen = stage1.data.source["domain"]
    assert chosen in ("metal", "bdd")
    assert stage1.data.source_class_names == CLASSES[chosen]
    assert set(stage1.data.label_mapping) == set(CLASSES[chosen])
    assert stage1.data.label_mapping["crack"] == "crack"
    ckpt = tmp_path / "stage1" / "out" / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, weights_only=True)
    assert stored["madd_config"]["data"]["source"]["domain"] == chosen  # the run config names the source used

    stage2 = compose_config(TINY_DATA + ["data.source=null", *FEW_STEPS,
                                         f"transfer_from={ckpt}", "transfer_freeze_stages=5"],
                            tmp_path / "stage2", data_dir)
    train(stage2)
    tuned = torch.load(tmp_path / "stage2" / "out" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    source = stored["state_dict"]
    frozen = [k for k in source if k.startswith("net.backbone.") and k.endswith((".weight", ".bias"))]
    assert frozen and all(torch.equal(tuned[k], source[k]) for k in frozen)  # transferred and frozen
    assert not torch.equal(tuned["net.head.weight"], source["net.head.weight"])


def test_auto_without_candidates_is_a_config_error(tmp_path, data_dir):
    from madd.pipeline import train

    cfg = compose_config(TINY_DATA + ["data.source=auto"], tmp_path, data_dir)
    with pytest.raises(MaddConfigError, match="source_candidates"):
        train(cfg)


@requires_shared_data
def test_real_steel_datasets_share_aliased_labels_and_kolektor_shares_none(tmp_path, data_dir):
    cfg = compose_config(FAST_SIGNATURE + ["target=x_sdd", "sources=[neu_det,kolektorsdd]",
                                           "signature.max_images=40", "signature.num_clusters=4"],
                         tmp_path, data_dir, config_name="select_source")
    out = run_matrix(cfg)
    assert out["chosen"] == "neu_det"
    pairs = pd.read_csv(out["pairs_csv"], keep_default_na=False)
    row = pairs[(pairs.target == "x_sdd") & (pairs.source == "neu_det")].iloc[0]
    assert set(row.shared.split("|")) == {"slag inclusion", "surface scratch"}
    none = pairs[(pairs.target == "kolektorsdd") & (pairs.source == "neu_det")].iloc[0]
    assert none.status == "no shared label" and none.score == float("inf")


def _folder_dataset(root, classes: dict[str, int], grey: bool, seed: int):
    """class_folders layout with images of varying sizes; grey files are genuinely 1-channel."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            h, w = rng.integers(20, 60, 2)
            level = rng.integers(30, 220)
            img = np.clip(level + rng.normal(0, 20, (h, w) if grey else (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / cls / f"{i}.png")
    return {"reader": "class_folders", "root": str(root)}


def test_grey_colour_single_class_and_mixed_sizes_give_a_nan_free_matrix(tmp_path, data_dir):
    cfg = compose_config(["signature.num_clusters=3"], tmp_path, data_dir, config_name="select_source")
    grey = _folder_dataset(tmp_path / "grey", {"crack": 6, "good": 4}, grey=True, seed=0)
    colour = _folder_dataset(tmp_path / "colour", {"crack": 3, "good": 9, "rust": 2}, grey=False, seed=1)
    single = _folder_dataset(tmp_path / "single", {"crack": 5}, grey=True, seed=2)
    with open_dict(cfg):
        cfg.target = {"name": "grey", "target": grey, "class_names": ["crack", "good"]}
        cfg.sources = [{"name": "colour", "target": colour, "class_names": ["crack", "good", "rust"]},
                       {"name": "single", "target": single, "class_names": ["crack"]}]
    out = run_matrix(cfg)
    pairs = pd.read_csv(out["pairs_csv"], keep_default_na=False)
    assert not pd.read_csv(out["matrix_csv"], index_col=0).isna().any().any()
    grey_colour = pairs[(pairs.target == "grey") & (pairs.source == "colour")].iloc[0]
    assert 0 < grey_colour.emd < math.inf and grey_colour.shared_labels == 2
    single_row = pairs[(pairs.target == "single") & (pairs.source == "grey")].iloc[0]
    assert single_row.status == "single-class target" and single_row.gini == 1.0
    assert math.isclose(single_row.score, single_row.emd / (1 + 1e-6), rel_tol=1e-5)
    one_of_two = pairs[(pairs.target == "grey") & (pairs.source == "single")].iloc[0]
    assert one_of_two.gini == 0.5 and one_of_two.score > 0  # sharing one of two classes is not free


def test_one_source_selection_config_for_both_entry_points(tmp_path, data_dir):
    """select_source.py and data.source=auto read conf/source_selection/default.yaml through one reader; the data
    config only lowers the sampling (a fixed K and 500 images, so a training run starts fast)."""
    from omegaconf import OmegaConf

    from madd.transfer.source_selection import selection_settings

    tool = compose_config([], tmp_path / "tool", data_dir, config_name="select_source")
    train = compose_config([], tmp_path / "train", data_dir)
    shared = OmegaConf.to_container(OmegaConf.load(CONF / "source_selection" / "default.yaml"))
    tool_settings = selection_settings({k: tool[k] for k in ("signature", "score", "label_aliases")})
    train_settings = selection_settings(train.data.source_selection)
    assert tool_settings == (shared["signature"], 1e-6, 3, shared["label_aliases"])
    lowered = {**shared["signature"], "num_clusters": 5, "max_images": 500}
    assert train_settings == (lowered, 1e-6, 3, shared["label_aliases"])
    with pytest.raises(MaddConfigError, match=r"source selection settings \['top_k'\]"):
        selection_settings({"top_k": 2})  # the old flat key
