"""RCSM (reconstruction_masks.py): defect-guided masks, the defect prototype, the attention map of Eq. 11."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from madd.models.madd.reconstruction_masks import (
    DefectGuidedMasker,
    DefectPrototype,
    anomaly_attention,
    boxes_to_mask,
    defect_cells,
    masked_input,
)


def test_mask_ratio_stays_in_20_30_percent_for_any_similarity():
    torch.manual_seed(0)
    masker = DefectGuidedMasker((0.2, 0.3), sim_threshold=0.5, key_fraction=0.1)
    images = torch.rand(6, 3, 96, 96)
    feats = torch.randn(6, 16, 12, 12)
    for proto in (None, torch.randn(16), feats[0, :, 0, 0]):
        for thr in (-1.0, 0.5, 2.0):  # everything / some / nothing above the similarity threshold
            masker.sim_threshold = thr
            mask = masker(feats, proto, images)
            assert mask.shape == (6, 1, 96, 96)
            ratio = mask.flatten(1).mean(1)
            assert ((ratio >= 0.2) & (ratio <= 0.3)).all(), ratio
            assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_mask_covers_cells_similar_to_the_defect_prototype():
    # 10x10 grid; the prototype direction appears in exactly 25 cells: those (and only those) are masked
    feats = torch.zeros(1, 4, 10, 10)
    feats[:, 1] = 1.0  # background direction
    feats[0, :, 2:7, 3:8] = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(4, 1, 1)  # defect-like patch (25 cells)
    proto = torch.tensor([1.0, 0.0, 0.0, 0.0])
    images = torch.full((1, 1, 40, 40), 0.5)  # flat: no key structure
    mask = DefectGuidedMasker((0.2, 0.3), 0.5, key_fraction=0.0)(feats, proto, images)
    cells = F.adaptive_max_pool2d(mask, (10, 10))[0, 0]
    expected = torch.zeros(10, 10)
    expected[2:7, 3:8] = 1
    assert torch.equal(cells, expected)


def test_prototype_not_ready_is_ignored_inside_the_graph():
    """``prototype_ready`` (the prototype's `initialized` buffer) picks the branch as a tensor, so an exported graph
    keeps it: false = no prototype, true = the prototype."""
    torch.manual_seed(0)
    masker = DefectGuidedMasker((0.2, 0.3), sim_threshold=0.5, key_fraction=0.1)
    feats, images, proto = torch.randn(3, 16, 12, 12), torch.rand(3, 3, 48, 48), torch.randn(16)
    with_proto, without = masker(feats, proto, images), masker(feats, None, images)
    assert not torch.equal(with_proto, without)  # the prototype changes the mask here
    assert torch.equal(masker(feats, proto, images, torch.tensor(False)), without)
    assert torch.equal(masker(feats, proto, images, torch.tensor(True)), with_proto)


def test_key_structural_regions_are_masked():
    images = torch.zeros(1, 1, 40, 40)
    images[..., :, 20:] = 1.0  # one vertical edge at x = 20
    key = DefectGuidedMasker.key_scores(images, (10, 10))[0]
    assert key[:, 4:6].min() > key[:, :3].max()  # edge cells score highest
    mask = DefectGuidedMasker((0.2, 0.3), sim_threshold=2.0, key_fraction=0.2)(torch.zeros(1, 4, 10, 10), None, images)
    cells = F.adaptive_max_pool2d(mask, (10, 10))[0, 0]
    assert cells[:, 4:6].sum() == 20  # the 20 edge cells are R_key and masked


def test_masked_input_zeroes_masked_pixels():
    x = torch.rand(1, 3, 4, 4)
    m = torch.zeros(1, 1, 4, 4)
    m[..., :2, :] = 1
    y = masked_input(x, m)
    assert (y[..., :2, :] == 0).all() and torch.equal(y[..., 2:, :], x[..., 2:, :])


def test_attention_map_eq11_by_hand():
    x = torch.zeros(1, 3, 2, 2)
    rec = torch.tensor([0.0, 0.3, 0.6, 1.2]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    a, e = anomaly_attention(rec, x, eps=1e-6)
    assert torch.allclose(e.flatten(), torch.tensor([0.0, 0.3, 0.6, 1.2]))
    assert torch.allclose(a.flatten(), torch.tensor([0.0, 0.3, 0.6, 1.2]) / (1.2 + 1e-6))
    assert a.max() < 1 and a.min() >= 0
    a2, _ = anomaly_attention(torch.rand(3, 3, 8, 8), torch.rand(3, 1, 8, 8))  # grey target vs 3-channel recon
    assert torch.allclose(a2.flatten(1).amax(1), torch.ones(3), atol=1e-4)  # per-image normalisation


def test_defect_cells_from_masks_boxes_and_labels():
    labels = torch.tensor([0, 1, 1, 2])  # normal, defect with mask, defect with a box, defect w/o localisation
    masks = torch.zeros(4, 1, 8, 8)
    masks[1, 0, 0:2, 0:2] = 1
    boxes = [torch.zeros(0, 5), torch.zeros(0, 5), torch.tensor([[1.0, 4, 4, 8, 8]]), torch.zeros(0, 5)]
    cells = defect_cells(labels, masks, (4, 4), normal_index=0, boxes=boxes)
    assert cells[0].sum() == 0
    assert cells[1].sum() == 1 and cells[1, 0, 0]
    assert cells[2].sum() == 4 and cells[2, 2:, 2:].all()
    assert cells[3].all()
    assert boxes_to_mask(boxes, (8, 8))[2].sum() == 16


def test_prototype_is_the_ema_of_defect_feature_means():
    proto = DefectPrototype(2, momentum=0.5)
    feats = torch.tensor([[1.0, 3.0], [5.0, 7.0]]).reshape(1, 2, 1, 2)  # cell 0 = (1, 5), cell 1 = (3, 7)
    s, n = DefectPrototype.batch_sum(feats, torch.tensor([[[True, False]]]))
    proto.update(s, n)
    assert torch.allclose(proto.prototype, torch.tensor([1.0, 5.0])) and bool(proto.initialized)
    s, n = DefectPrototype.batch_sum(feats, torch.tensor([[[False, True]]]))
    proto.update(s, n)
    assert torch.allclose(proto.prototype, torch.tensor([2.0, 6.0]))  # 0.5 * (1, 5) + 0.5 * (3, 7)
    proto.update(torch.zeros(2), torch.tensor(0.0))  # no defect cell: unchanged
    assert torch.allclose(proto.prototype, torch.tensor([2.0, 6.0]))
