"""The memory bank (memory_bank.py): FIFO order, Eq. 15's purification and Eq. 16's class means."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from madd.errors import MaddConfigError
from madd.models.madd.memory_bank import MemoryBank


def test_bank_fifo_order_and_capacity():
    bank = MemoryBank(dim=2, num_classes=2, capacity=3)
    for i in range(5):
        bank.add(torch.tensor([[float(i), 0.0]]), torch.tensor([i % 2]), torch.tensor([i]))
    # capacity 3: samples 0 and 1 (the oldest) were overwritten in order
    assert sorted(bank.sample_index.tolist()) == [2, 3, 4]
    assert len(bank) == 3 and int(bank.num_added) == 5
    assert int(bank.ptr) == 5 % 3  # the next write replaces the oldest (sample 2, in slot 2)
    bank.add(torch.tensor([[9.0, 0.0]]), torch.tensor([1]), torch.tensor([5]))
    assert sorted(bank.sample_index.tolist()) == [3, 4, 5]
    assert bank.class_counts().tolist() == [1, 2]
    big = MemoryBank(dim=1, num_classes=1, capacity=2)
    big.add(torch.arange(5.0).view(5, 1), torch.zeros(5, dtype=torch.long))  # more rows than capacity
    assert sorted(big.features.flatten().tolist()) == [3.0, 4.0] and int(big.num_added) == 5


def test_bank_similarity_eq15_and_class_mean_eq16_by_hand():
    bank = MemoryBank(dim=2, num_classes=2, capacity=10, min_count=2)
    bank.add(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]), torch.tensor([0, 0, 1]))
    new = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    sim, judged = bank.similarity(new, torch.tensor([0, 1]))
    # class 0: mean(cos((1,1),(1,0)), cos((1,1),(0,2))) = 1/sqrt(2); class 1 has 1 < min_count entries
    assert sim[0].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert judged.tolist() == [True, False]
    means, has = bank.class_means(torch.tensor([0, 1, 0]))
    assert torch.allclose(means, torch.tensor([[0.5, 1.0], [3.0, 3.0], [0.5, 1.0]]))
    assert has.all()
    empty = MemoryBank(dim=2, num_classes=3, capacity=4)
    assert not empty.class_means(torch.tensor([2]))[1].any()


def test_bank_purification_domain_adaptive_and_plain():
    torch.manual_seed(0)
    members = F.normalize(torch.tensor([1.0, 0.0]) + 0.05 * torch.randn(20, 2), dim=1)  # a tight class 0
    da = MemoryBank(dim=2, num_classes=2, capacity=50, kind="domain_adaptive", kappa=1.0, min_count=5)
    da.add(members, torch.zeros(20, dtype=torch.long))
    theta = da.thresholds()
    normed = F.normalize(members, dim=1)
    cos = normed @ normed.T
    loo = (cos.sum(1) - 1.0) / 19
    assert theta[0].item() == pytest.approx((loo.mean() - loo.std()).item(), abs=1e-5)
    assert theta[1].item() == -1.0  # empty class: no threshold (cold start passes)
    keep, _ = da.purify(torch.tensor([[1.0, 0.02], [0.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0, 1]))
    assert keep.tolist() == [True, False, True]  # typical kept, atypical dropped, unjudged class passes
    plain = MemoryBank(dim=2, num_classes=2, capacity=50, kind="plain", plain_threshold=0.5, min_count=5)
    plain.add(members, torch.zeros(20, dtype=torch.long))
    keep, sim = plain.purify(torch.tensor([[1.0, 1.0], [-1.0, 1.0]]), torch.tensor([0, 0]))
    assert keep.tolist() == [True, False]  # cos 45 deg ~ 0.7 >= 0.5; 135 deg < 0.5
    with pytest.raises(MaddConfigError, match="memory_bank.kind"):
        MemoryBank(2, 2, kind="fancy")
