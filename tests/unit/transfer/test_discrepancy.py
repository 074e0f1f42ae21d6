"""Domain discrepancy (RTLAOI-DD 2.2): k-means signatures, EMD, Gini, the score's rules and the selection."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from PIL import Image
from scipy.optimize import linprog
from scipy.stats import wasserstein_distance
from sklearn.cluster import KMeans

from madd.errors import MaddConfigError
from madd.transfer.datasets import DatasetEntry, label_mapping_between
from madd.transfer.discrepancy import (
    NO_SHARED,
    SINGLE_CLASS,
    DatasetProfile,
    discrepancy_matrix,
    pair_score,
    score_table,
    select_source,
)
from madd.transfer.emd import emd, optimal_flow
from madd.data.gini import gini
from madd.transfer.signatures import (
    DatasetSignature,
    Signature,
    _uniforms,
    batched_kmeans,
    choose_k,
    dataset_signature,
    elbow,
    image_points,
    image_signatures,
    sign_dataset,
)



def blob_image(seed: int, modes: int = 4, size: int = 40, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    colours = rng.integers(20, 235, (modes, 3))
    if grey:
        colours[:] = colours[:, :1]
    img = colours[rng.integers(0, modes, (size, size))] + rng.normal(0, 4, (size, size, 3))
    if grey:
        img[..., 1:] = img[..., :1]
    return np.clip(img, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ Gini
def test_gini_hand_values():
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 7]) == pytest.approx(0.75)  # one of four categories: 1 - 1/k
    assert gini([1, 2, 3]) == pytest.approx(2 / 9)  # C = 0, 1/6, 1/2, 1 -> B = 7/18 -> 1 - 2B
    assert gini([3, 1, 2]) == pytest.approx(2 / 9)  # order of categories does not matter
    assert gini([9]) == pytest.approx(0.0)


def test_gini_matches_mean_absolute_difference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 500, rng.integers(2, 12)).astype(float)
        x[0] += 1
        mad = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
        assert gini(x) == pytest.approx(mad, abs=1e-12)


def test_gini_rejects_empty_counts():
    with pytest.raises(MaddConfigError):
        gini([0, 0])
    with pytest.raises(MaddConfigError):
        gini([])


# ------------------------------------------------------------------------------------------------ EMD
def test_emd_hand_value_and_equal_signatures():
    a = Signature(np.array([[0.0, 0, 0]]), np.array([1.0]))
    b = Signature(np.array([[3.0, 4, 0]]), np.array([1.0]))
    assert emd(a, b) == pytest.approx(5.0)
    assert emd(a, a) == pytest.approx(0.0)
    # half the mass moves 10, half stays: 5
    c = Signature(np.array([[0.0, 0, 0], [10.0, 0, 0]]), np.array([0.5, 0.5]))
    assert emd(a, c) == pytest.approx(5.0)


def test_emd_of_grey_signatures_equals_1d_wasserstein():
    rng = np.random.default_rng(1)
    for _ in range(10):
        v1, v2 = rng.uniform(0, 255, 5), rng.uniform(0, 255, 4)
        w1, w2 = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(4))
        s1 = Signature(np.repeat(v1[:, None], 3, 1), w1)
        s2 = Signature(np.repeat(v2[:, None], 3, 1), w2)
        # a grey point (v, v, v) is sqrt(3) * v along the diagonal
        ref = math.sqrt(3) * wasserstein_distance(v1, v2, w1, w2)
        assert emd(s1, s2) == pytest.approx(ref, rel=1e-7)


def _emd_linprog(c1, w1, c2, w2):
    """Eqs. 10-15 as a plain LP (scipy's HiGHS), independent of POT."""
    g = np.linalg.norm(c1[:, None] - c2[None], axis=2)
    m, n = g.shape
    a_ub = np.zeros((m + n, m * n))
    for u in range(m):
        a_ub[u, u * n:(u + 1) * n] = 1
    for v in range(n):
        a_ub[m + v, v::n] = 1
    res = linprog(g.ravel(), A_ub=a_ub, b_ub=np.concatenate([w1, w2]), A_eq=np.ones((1, m * n)),
                  b_eq=[min(w1.sum(), w2.sum())], bounds=(0, None), method="highs")
    f = res.x
    return float(g.ravel() @ f / f.sum())


def test_emd_cross_checked_against_pot_exact_solver_and_linprog():
    rng = np.random.default_rng(2)
    for trial in range(12):
        m, n = rng.integers(2, 7, 2)
        c1, c2 = rng.uniform(0, 255, (m, 3)), rng.uniform(0, 255, (n, 3))
        w1, w2 = rng.dirichlet(np.ones(m)), rng.dirichlet(np.ones(n))
        if trial % 2:  # unequal total weights: partial matching (Eq. 14)
            w2 = w2 * rng.uniform(0.3, 0.9)
        value = emd(Signature(c1, w1), Signature(c2, w2))
        assert value == pytest.approx(_emd_linprog(c1, w1, c2, w2), rel=1e-6)
        if trial % 2 == 0:
            exact = ot.emd2(w1, w2, ot.dist(c1, c2, metric="euclidean"))
            assert value == pytest.approx(exact, rel=1e-9)


def test_partial_flow_respects_constraints():
    rng = np.random.default_rng(3)
    w1, w2 = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.2])
    g = rng.uniform(1, 10, (3, 2))
    f = optimal_flow(w1, w2, g)
    assert (f >= -1e-12).all()
    assert (f.sum(1) <= w1 + 1e-9).all() and (f.sum(0) <= w2 + 1e-9).all()
    assert f.sum() == pytest.approx(0.4)


# ------------------------------------------------------------------------------------------------ k-means
def test_batched_kmeans_matches_sklearn():
    torch.manual_seed(0)
    images = [blob_image(s) for s in range(4)]
    c, w, rss = image_signatures(images, k=4, pixels=None)
    for i, img in enumerate(images):
        km = KMeans(4, n_init=10, random_state=0).fit(img.reshape(-1, 3).astype(float))
        assert rss[i].item() == pytest.approx(km.inertia_ / (40 * 40), rel=1e-3)
        assert sorted(c[i, :, 0].tolist()) == pytest.approx(sorted(km.cluster_centers_[:, 0]), abs=0.05)
        counts = np.bincount(km.labels_, minlength=4) / km.labels_.size
        assert sorted(w[i].tolist()) == pytest.approx(sorted(counts), abs=1e-6)
        assert w[i].sum().item() == pytest.approx(1.0)


def test_weighted_kmeans_matches_sklearn_sample_weight():
    rng = np.random.default_rng(4)
    centres = np.array([[30.0, 30, 30], [200, 40, 40], [60, 200, 90]])
    x = np.concatenate([c + rng.normal(0, 6, (60, 3)) for c in centres])
    wts = rng.uniform(0.1, 3.0, len(x))
    res = batched_kmeans(torch.tensor(x)[None], torch.tensor(wts)[None], 3, _uniforms([0], 3))
    km = KMeans(3, n_init=10, random_state=0).fit(x, sample_weight=wts)
    assert res.inertia.item() == pytest.approx(km.inertia_, rel=1e-6)


def test_distinct_colours_equal_all_pixels():
    img = blob_image(5, modes=3)
    pts, counts = image_points(img, pixels=None, seed=0)
    assert counts.sum().item() == img.shape[0] * img.shape[1]
    assert len(pts) == len({tuple(p) for p in img.reshape(-1, 3).tolist()})
    grey = blob_image(6, grey=True, size=200)
    pts, _ = image_points(grey, pixels=None, seed=0)
    assert len(pts) <= 256  # a grey image is at most 256 weighted points, whatever its size
    _, sampled = image_points(img, pixels=100, seed=0)
    assert sampled.sum().item() == 100


def test_signatures_deterministic_batch_independent_and_size_agnostic():
    images = [blob_image(s, size=24 + 8 * s, grey=s % 2 == 0) for s in range(6)]
    a = image_signatures(images, 3, pixels=256, seed=7, batch_size=6)
    b = image_signatures(images, 3, pixels=256, seed=7, batch_size=2)
    for x, y, tol in zip(a, b, (0.05, 0.01, 0.05)):  # equal up to the Lloyd stopping tolerance
        assert torch.allclose(x, y, atol=tol)
    c = image_signatures(images, 3, pixels=256, seed=7, batch_size=6)
    assert all(torch.equal(x, y) for x, y in zip(a, c))
    assert torch.allclose(a[1].sum(1), torch.ones(6, dtype=torch.float64))


def test_constant_image_has_zero_weight_clusters_not_nan():
    flat = np.full((16, 16, 3), 90, np.uint8)
    c, w, rss = image_signatures([flat], k=5, pixels=None)
    assert torch.isfinite(c).all() and torch.isfinite(w).all()
    assert sorted(w[0].tolist()) == pytest.approx([0, 0, 0, 0, 1])
    assert rss[0].item() == 0.0
    sig = dataset_signature(c, w, 5)
    assert len(sig.weights) == 1 and sig.weights[0] == pytest.approx(1.0)
    assert sig.centroids[0] == pytest.approx([90, 90, 90])


def test_elbow_finds_number_of_colour_modes():
    for modes in (2, 3, 5):
        k, curve = choose_k([blob_image(s, modes=modes) for s in range(4)], (1, 8), pixels=None)
        assert k == modes, curve
    assert elbow({1: 0.0, 2: 0.0, 3: 0.0}) == 1


def test_dataset_signature_is_weighted_kmeans_of_image_centroids():
    # two images: one dark, one bright, each two modes; the dataset signature must keep the four modes and
    # weight them by pixel share / number of images (Eqs. 8-9)
    cents = torch.tensor([[[10.0] * 3, [50.0] * 3], [[150.0] * 3, [250.0] * 3]], dtype=torch.float64)
    weights = torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64)
    sig = dataset_signature(cents, weights, k=4)
    order = np.argsort(sig.centroids[:, 0])
    assert sig.centroids[order, 0] == pytest.approx([10, 50, 150, 250])
    assert sig.weights[order] == pytest.approx([0.125, 0.375, 0.25, 0.25])


def test_sign_dataset_from_files(tmp_path):
    paths = []
    for i in range(5):
        img = blob_image(i, modes=3, size=20 + 10 * i, grey=i == 0)
        p = tmp_path / f"img{i}.png"
        Image.fromarray(img[..., 0] if i == 0 else img).save(p)  # one genuinely 1-channel file
        paths.append(str(p))
    sig = sign_dataset(paths, num_clusters="auto", k_range=(1, 6), elbow_images=5, pixels=512, seed=0)
    assert isinstance(sig, DatasetSignature) and sig.num_images == 5 and sig.rss_curve
    assert sig.weights.sum() == pytest.approx(1.0) and np.isfinite(sig.centroids).all()
    again = sign_dataset(paths, num_clusters="auto", k_range=(1, 6), elbow_images=5, pixels=512, seed=0)
    assert np.array_equal(sig.centroids, again.centroids)
    sub = sign_dataset(paths, num_clusters=2, max_images=3)
    assert sub.num_images == 3 and sub.k == 2
    with pytest.raises(MaddConfigError, match="num_clusters"):
        sign_dataset(paths, num_clusters="many")


# ------------------------------------------------------------------------------------------------ score
def profile(name, classes, counts, grey_level, aliases=None, mapping=None):
    sig = DatasetSignature(np.array([[grey_level] * 3, [grey_level + 40.0] * 3]), np.array([0.5, 0.5]), k=2)
    entry = DatasetEntry(name, {"reader": "synthetic", "domain": name}, list(classes), aliases or {}, mapping)
    return DatasetProfile(entry, sig, np.asarray(counts))


def test_score_formula_and_gini_over_target_label_space():
    target = profile("t", ["good", "crack", "pore"], [10, 10, 10], 100.0)
    source = profile("s", ["good", "crack", "scratch"], [30, 10, 50], 110.0)
    p = pair_score(target, source, eps=1e-6)
    assert p.emd == pytest.approx(10 * math.sqrt(3))
    assert p.shared == ["good", "crack"] and p.usable == 40  # scratch is outside the target label space
    assert p.gini == pytest.approx(gini([30, 10, 0]))  # pore counts 0 in the target's label space
    assert p.score == pytest.approx(p.emd * p.gini / (2 + 1e-6))
    assert p.status == "ok"


def test_no_shared_label_is_inf_not_nan_and_single_overlap_is_not_free():
    target = profile("t", ["a", "b", "c", "d"], [5, 5, 5, 5], 50.0)
    none = pair_score(target, profile("s1", ["x", "y"], [3, 3], 60.0))
    assert none.score == math.inf and none.status == NO_SHARED and none.gini is None
    one = pair_score(target, profile("s2", ["a", "x"], [8, 3], 60.0), eps=0.0)
    assert one.gini == pytest.approx(0.75) and one.score > 0  # public code: Gini 0 -> score 0 -> "best"
    table = score_table(discrepancy_matrix([target, profile("s1", ["x"], [3], 60.0)]))
    assert not table.isna().any().any()


def test_single_class_target_ranks_by_emd():
    target = profile("t", ["defect"], [10], 50.0)
    near = pair_score(target, profile("near", ["defect", "x"], [4, 9], 55.0))
    far = pair_score(target, profile("far", ["defect"], [4], 90.0))
    assert near.status == SINGLE_CLASS and near.gini == 1.0
    assert 0 < near.score < far.score


def test_empty_target_class_is_not_in_label_space():
    target = profile("t", ["a", "b", "c"], [5, 5, 0], 50.0)
    p = pair_score(target, profile("s", ["a", "b", "c"], [4, 4, 100], 60.0))
    assert p.shared == ["a", "b"] and p.gini == pytest.approx(0.0) and p.usable == 8


def test_aliases_and_explicit_mapping():
    neu = DatasetEntry("neu", {}, ["scratches", "inclusion"], {"scratches": "scratch"})
    xsdd = DatasetEntry("xsdd", {}, ["surface scratch", "slag inclusion"],
                        {"surface scratch": "scratch", "slag inclusion": "inclusion"})
    assert label_mapping_between(neu, xsdd) == {"scratches": "surface scratch", "inclusion": "slag inclusion"}
    explicit = DatasetEntry("neu", {}, ["scratches", "inclusion"], {}, {"scratches": "slag inclusion"})
    assert label_mapping_between(explicit, xsdd) == {"scratches": "slag inclusion", "inclusion": None}
    ambiguous = DatasetEntry("x", {}, ["a", "b"], {"a": "same", "b": "same"})
    with pytest.raises(MaddConfigError, match="label_aliases"):
        label_mapping_between(DatasetEntry("s", {}, ["same"]), ambiguous)


def test_selection_three_lowest_then_most_samples():
    target = profile("t", ["a", "b"], [5, 5], 100.0)
    sources = [
        profile("close_small", ["a", "b"], [5, 4], 101.0),
        profile("close_big", ["a", "b"], [90, 60], 104.0),
        profile("mid", ["a", "b"], [12, 6], 106.0),
        profile("far_huge", ["a", "b"], [900, 500], 200.0),
        profile("unrelated", ["z"], [10_000], 100.0),
    ]
    pairs = discrepancy_matrix([target, *sources])
    sel = select_source(pairs, "t", top_k=3)
    assert [p.source for p in sel.shortlist] == sorted([p.source for p in sel.shortlist],
                                                      key=lambda s: next(q.score for q in pairs
                                                                         if q.target == "t" and q.source == s))
    assert "far_huge" not in [p.source for p in sel.shortlist]
    assert sel.chosen.source == "close_big"  # most usable samples among the three lowest
    assert "close_big" in sel.explain()
    assert select_source(pairs, "t", top_k=1).chosen.source == sel.shortlist[0].source
    with pytest.raises(MaddConfigError, match="shares a label"):
        select_source(pairs, "t", candidates=["unrelated"])
