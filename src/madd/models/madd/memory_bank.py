"""MAPOM's memory bank of high-confidence pseudo-label features (section 2.7, Eqs. 15-16).

* Storage: the domain-adaptive (adapter) features and pseudo-labels of at most ``K = 500`` samples in a ring
  buffer: while not full a sample is appended; when full, the oldest entry is overwritten (first in, first
  out, the paper's sliding window). All state is in buffers, so it is saved in and resumed from checkpoints.
* Admission (the caller's rule, see the LightningModule): confidence ``> tau + 0.1`` and a kept pseudo-label.
* Purification, Eq. 15 (read as NOTES.md says): ``sim_mem = 1/|C_c| sum_{f in C_c} cos(f_new, f)``, the
  mean cosine similarity of the new feature to the bank's features of its pseudo-class ``c``. The
  pseudo-label is kept when ``sim_mem >= theta_c``:

  - ``domain_adaptive`` (default): ``theta_c = m_c - kappa · s_c``, with ``m_c``/``s_c`` the mean/std of the
    same leave-one-out similarity computed for the bank's own class-``c`` members. The threshold follows the
    spread of the class in the current feature space (tight classes, strict; diffuse domains, lenient).
  - ``plain``: one fixed ``theta`` for every class and domain (the ablation's "regular memory bank").

  A class with fewer than ``min_count`` entries cannot judge: its pseudo-labels pass (cold start).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from madd.errors import MaddConfigError

KINDS = ("domain_adaptive", "plain")


class MemoryBank(nn.Module):
    def __init__(self, dim: int, num_classes: int, capacity: int = 500, kind: str = "domain_adaptive",
                 kappa: float = 1.0, plain_threshold: float = 0.5, min_count: int = 5) -> None:
        super().__init__()
        if kind not in KINDS:

            raise MaddConfigError(f"model.memory_bank.kind={kind!r} is unknown; choose from {list(KINDS)}")
        self.capacity, self.num_classes, self.kind = capacity, num_classes, kind
        self.kappa, self.plain_threshold, self.min_count = kappa, plain_threshold, min_count
        self.register_buffer("features", torch.zeros(capacity, dim))
        self.register_buffer("labels", torch.full((capacity,), -1, dtype=torch.long))  # -1: empty slot
        self.register_buffer("sample_index", torch.full((capacity,), -1, dtype=torch.long))  # dataset index
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to write (= oldest when full)
        self.register_buffer("num_added", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return int(min(int(self.num_added), self.capacity))

    def class_counts(self) -> torch.Tensor:
        valid = self.labels >= 0
        return torch.bincount(self.labels[valid], minlength=self.num_classes)

    def _normed(self) -> torch.Tensor:
        return F.normalize(self.features, dim=1)

    def similarity(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 15 for each row: mean cosine similarity to the bank's features of its class.

        Returns ``(sim, judged)``: ``judged`` is False where the class has fewer than ``min_count`` entries
        (``sim`` is 0 there).
        """
        onehot = F.one_hot(self.labels.clamp_min(0), self.num_classes).float() * (self.labels >= 0).float().unsqueeze(1)
        counts = onehot.sum(0)  # (K_classes,)
        cos = F.normalize(features.float(), dim=1) @ self._normed().T  # (B, capacity)
        sums = cos @ onehot  # (B, classes): sum of similarities to each class
        n = counts[labels]
        sim = sums.gather(1, labels.view(-1, 1)).squeeze(1) / n.clamp_min(1)
        return sim, n >= self.min_count

    def class_means(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 16's target ``1/|C_c| sum_{f in C_c} f`` per row, and whether the class has any entry."""
        onehot = F.one_hot(self.labels.clamp_min(0), self.num_classes).float() * (self.labels >= 0).float().unsqueeze(1)
        counts = onehot.sum(0)
        means = (onehot.T @ self.features) / counts.clamp_min(1).unsqueeze(1)  # (classes, dim)
        return means[labels], counts[labels] > 0

    def thresholds(self) -> torch.Tensor:
        """``theta_c`` per class ``(num_classes,)`` (see the module docstring)."""
        if self.kind == "plain":
            return torch.full((self.num_classes,), self.plain_threshold, device=self.features.device)
        out = torch.full((self.num_classes,), -1.0, device=self.features.device)
        normed = self._normed()
        for c in range(self.num_classes):
            idx = (self.labels == c).nonzero().flatten()
            if len(idx) < max(2, self.min_count):
                continue
            f = normed[idx]
            cos = f @ f.T
            loo = (cos.sum(1) - cos.diagonal()) / (len(idx) - 1)  # leave-one-out Eq. 15 of each member
            out[c] = loo.mean() - self.kappa * loo.std()
        return out

    def purify(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep-mask of pseudo-labels (Eq. 15 against ``theta_c``), and the similarities (for logging)."""
        sim, judged = self.similarity(features, labels)
        keep = ~judged | (sim >= self.thresholds()[labels])
        return keep, sim

    # ------------------------------------------------------------------ writing
    @torch.no_grad()
    def add(self, features: torch.Tensor, labels: torch.Tensor, sample_index: torch.Tensor | None = None) -> None:
        """Append rows in order; when full, each new row replaces the oldest entry."""
        n = len(features)
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` rows would survive anyway
            features, labels = features[-self.capacity:], labels[-self.capacity:]
            sample_index = None if sample_index is None else sample_index[-self.capacity:]
            self.num_added += n - self.capacity
            n = self.capacity
        slots = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.capacity
        self.features[slots] = features.detach().to(self.features)
        self.labels[slots] = labels.to(self.labels)
        self.sample_index[slots] = -1 if sample_index is None else sample_index.to(self.sample_index)
        self.ptr.copy_((self.ptr + n) % self.capacity)
        self.num_added += n
