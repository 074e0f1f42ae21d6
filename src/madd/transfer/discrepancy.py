"""The domain discrepancy score and source selection (RTLAOI-DD section 2.2, Eq. 20 and the selection rule).

    disc(D_T, D_S) = EMD(s_S, s_T) * delta / (|Y'_T ∩ Y'_S| + eps)        (Eq. 20, second of that number)

Lower is more similar. The pieces: :func:`madd.transfer.emd.emd` (Eqs. 10-15) between the dataset signatures
(:mod:`madd.transfer.signatures`, Eqs. 1-9), :func:`madd.data.gini.gini` (Eqs. 16-20) of the source's class
counts in the target's label space, and the number of shared labels.

Rules where the paper or its public code is undefined or degenerate (documented in docs/transfer.md, section "Formulas and departures"):

* Label spaces: a dataset's label space is its classes that have at least one image (an empty class is not in
  it). Source classes enter the target's label space through a label mapping (explicit, or equal names after
  the per-dataset alias table).
* Gini: computed over *all* k = |Y_T| target categories, a target category the source lacks counting 0. The
  public code sums over all target categories but divides by the number of shared ones, and with one shared
  category its Gini (so the score) is 0 -- the "best" source. Here a source covering 1 of k target classes
  gets delta = 1 - 1/k > 0.
* No shared label: score = +inf, status ``no shared label``; never selected, printed as such (never NaN, never
  a division by zero; the public code has eps = 0). eps > 0 (default 1e-6) is kept for the paper's formula.
* Single-class target (k = 1): the Lorenz curve of one category is the diagonal, so delta would be 0 for every
  source sharing it and EMD would stop mattering; delta := 1 there (status ``single-class target``), so sources
  are ranked by EMD.
* A perfectly balanced source over all target classes has delta = 0 and score 0 whatever its EMD (the formula's
  own property, kept); ties are broken by EMD.
* Selection (the paper's rule): the three lowest scores (ties by EMD, then name), then the one with most
  *usable* samples -- source images whose label maps into the target label space, i.e. what subset selection
  keeps. A dataset is never its own source (the diagonal shows its score, 0, as in the paper's Table 2).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from madd.errors import MaddConfigError
from madd.transfer.datasets import DatasetEntry, class_counts, label_mapping_between, read_index
from madd.transfer.emd import emd
from madd.data.gini import gini
from madd.transfer.signatures import DatasetSignature, sign_dataset

log = logging.getLogger(__name__)

OK, NO_SHARED, SINGLE_CLASS, SAME = "ok", "no shared label", "single-class target", "same dataset"


@dataclass
class DatasetProfile:
    """What the score needs of one dataset: its signature and its class counts."""

    entry: DatasetEntry
    signature: DatasetSignature
    counts: np.ndarray  # images per class of entry.class_names

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def num_images(self) -> int:
        return int(self.counts.sum())

    @property
    def label_space(self) -> list[str]:
        return [c for c, n in zip(self.entry.class_names, self.counts) if n > 0]


@dataclass
class PairScore:
    """One cell of the matrix: ``target`` row, ``source`` column."""

    target: str
    source: str
    emd: float
    gini: float | None  # None when no label is shared (no Lorenz curve of all-zero counts)
    shared: list[str]
    usable: int  # source images whose label maps into the target label space
    score: float  # +inf when no label is shared
    status: str
    source_counts: dict[str, int] = field(default_factory=dict)  # source images per target class

    @property
    def overlap(self) -> int:
        return len(self.shared)

    def as_row(self) -> dict:
        return {"target": self.target, "source": self.source, "score": self.score, "emd": self.emd,
                "gini": "" if self.gini is None else self.gini, "shared_labels": self.overlap,
                "shared": "|".join(self.shared), "usable_samples": self.usable, "status": self.status}


def profile_dataset(entry: DatasetEntry, **signature_kwargs) -> DatasetProfile:
    """Read the dataset through the data layer and sign it (``signature_kwargs`` go to ``sign_dataset``)."""
    index = read_index(entry)
    counts = class_counts(index)
    sig = sign_dataset([r.path for r in index.records], **signature_kwargs)
    empty = [c for c, n in zip(entry.class_names, counts) if n == 0]
    if empty:
        log.warning("%s: classes %s have no images; they are not part of its label space", entry.name, empty)
    return DatasetProfile(entry, sig, counts)


def pair_score(target: DatasetProfile, source: DatasetProfile, eps: float = 1e-6) -> PairScore:
    """Eq. 20 for one (target, source) pair, with the rules of this module's docstring."""
    if eps < 0:
        raise MaddConfigError(f"score.eps must be >= 0, got {eps}")
    mapping = label_mapping_between(source.entry, target.entry)
    space = target.label_space
    if not space:
        raise MaddConfigError(f"target dataset {target.name} has no labelled images")
    in_target = {c: 0 for c in space}
    for cls, n in zip(source.entry.class_names, source.counts):
        dst = mapping.get(cls)
        if dst in in_target:
            in_target[dst] += int(n)
    shared = [c for c in space if in_target[c] > 0]
    distance = emd(target.signature, source.signature)
    usable = int(sum(in_target.values()))
    same = target.name == source.name
    if not shared:
        return PairScore(target.name, source.name, distance, None, [], 0, math.inf, NO_SHARED, in_target)
    if len(space) == 1:
        delta, status = 1.0, SINGLE_CLASS
    else:
        delta, status = gini(list(in_target.values())), OK
    score = distance * delta / (len(shared) + eps)
    return PairScore(target.name, source.name, distance, delta, shared, usable, score, SAME if same else status,
                     in_target)


def discrepancy_matrix(profiles: Sequence[DatasetProfile], eps: float = 1e-6) -> list[PairScore]:
    """Every dataset as target against every dataset as source (the paper's Table 2, diagonal included)."""
    return [pair_score(t, s, eps) for t in profiles for s in profiles]


def score_table(pairs: Sequence[PairScore]):
    """The matrix as a ``pandas.DataFrame``: rows targets, columns sources, +inf where no label is shared."""
    import pandas as pd

    names = list(dict.fromkeys([p.target for p in pairs] + [p.source for p in pairs]))
    table = pd.DataFrame(math.inf, index=pd.Index(names, name="target"), columns=pd.Index(names, name="source"))
    for p in pairs:
        table.loc[p.target, p.source] = p.score
    return table


@dataclass
class Selection:
    """The chosen source for one target and why."""

    target: str
    chosen: PairScore
    shortlist: list[PairScore]  # the ``top_k`` lowest scores, best first

    def explain(self) -> str:
        lst = ", ".join(f"{p.source} (score {p.score:.4g}, {p.usable} usable images)" for p in self.shortlist)
        return (f"source for {self.target}: {self.chosen.source} -- most usable samples among the "
                f"{len(self.shortlist)} lowest scores: {lst}")


def select_source(pairs: Sequence[PairScore], target: str, top_k: int = 3,
                  candidates: Sequence[str] | None = None) -> Selection:
    """The paper's rule: the ``top_k`` lowest finite scores for ``target``, then the most usable samples.

    Raises:
        MaddConfigError: no candidate shares a label with the target.
    """
    if top_k < 1:
        raise MaddConfigError(f"score.top_k must be >= 1, got {top_k}")
    rows = [p for p in pairs if p.target == target and p.source != target
            and (candidates is None or p.source in candidates)]
    finite = [p for p in rows if math.isfinite(p.score)]
    if not finite:
        raise MaddConfigError(
            f"no candidate source shares a label with target {target} (candidates: {[p.source for p in rows]}); "
            "add a candidate with overlapping classes, or relate class names with label_aliases / label_mapping"
        )
    shortlist = sorted(finite, key=lambda p: (p.score, p.emd, p.source))[:top_k]
    chosen = max(shortlist, key=lambda p: (p.usable, -shortlist.index(p)))
    return Selection(target, chosen, shortlist)


def check_no_nan(pairs: Sequence[PairScore]) -> None:
    """The table must never hold NaN (a defined number or +inf with a status)."""
    bad = [(p.target, p.source) for p in pairs if math.isnan(p.score) or math.isnan(p.emd)]
    if bad:
        raise MaddConfigError(f"discrepancy scores came out NaN for {bad}; this is a bug, please report it")


def profiles_by_name(profiles: Sequence[DatasetProfile]) -> Mapping[str, DatasetProfile]:
    names = [p.name for p in profiles]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MaddConfigError(f"datasets {dup} are listed twice; give each dataset once")
    return {p.name: p for p in profiles}
