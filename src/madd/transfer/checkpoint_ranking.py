"""Rank candidate checkpoints for a target dataset without fine-tuning (D-deepscore protocol).

Protocol of the D-deepscore public code (papers/NOTES.md), with the departures named:

* each candidate's ResNet backbone (a madd ``SupervisedClassifier`` ``.ckpt``, any checkpoint holding one
  backbone, or a torchvision ``.pth``; the architecture is read off the tensors) runs through ``layer1``,
  ``layer2`` and ``layer3`` (conv4_x) on the labelled target images; the outputs after ``layer3`` blocks 0 and 1
  are global-average pooled (256-d for ResNet-18/34);
* images resized to ``image_size`` (224 in the public code) with ImageNet normalisation (the models' own
  :class:`~madd.models.backbones.Normalize`);
* a seeded random ``fraction`` (0.8) of the labelled target images -- the public code draws it unseeded;
  "labelled" = the data module's ``target_labeled`` + ``val`` splits (its train + validation images);
* every score (:mod:`madd.transfer.transferability`) averaged over the two depths, candidates ranked by
  ``rank_by`` descending. ``random:<arch>`` is a seeded randomly initialised candidate (a floor to compare with).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from madd.checkpoint import read_checkpoint
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone, Normalize
from madd.models.backbone_transfer import (
    canonical_key,
    find_backbone_prefixes,
    load_checkpoint_state,
    naming_style,
    transfer_backbone,
)
from madd.transfer.datasets import data_config_name
from madd.transfer.source_selection import set_threads
from madd.transfer.transferability import score_features

log = logging.getLogger(__name__)

_RESNETS = {("basic", 2): "resnet18", ("basic", 6): "resnet34", ("bottleneck", 6): "resnet50",
            ("bottleneck", 23): "resnet101", ("bottleneck", 36): "resnet152"}


def backbone_prefix_of(state: dict[str, torch.Tensor], prefix: str | None = None) -> str:
    """The key prefix of the single backbone in ``state`` (``prefix`` when given)."""
    if prefix is not None and not any(k.startswith(prefix) for k in state):
        raise MaddConfigError(f"backbone_prefix={prefix!r} matches no key of the checkpoint; its backbone prefixes: "
                              f"{find_backbone_prefixes(state)} (a MADD checkpoint: model.teacher.backbone.)")
    prefixes = [prefix] if prefix is not None else find_backbone_prefixes(state)
    if len(prefixes) != 1:
        raise MaddConfigError(f"found backbone prefixes {prefixes} in the checkpoint; set backbone_prefix to one")
    return prefixes[0]


def stored_backbone_name(path: str | Path) -> str | None:
    """``model.backbone.name`` of the run that wrote a madd ``.ckpt`` (its stored config), else ``None``."""
    try:
        cfg = read_checkpoint(path).get("madd_config") or {}
    except MaddConfigError:  # a plain state dict (.pth): no stored config
        return None
    backbone = (cfg.get("model") or {}).get("backbone") or {}
    return backbone.get("name") if isinstance(backbone, dict) else None


def infer_resnet(state: dict[str, torch.Tensor], prefix: str | None = None) -> tuple[str, str]:
    """``(architecture, backbone prefix)`` of the single ResNet backbone in ``state``, read off its tensors."""
    p = backbone_prefix_of(state, prefix)
    rel = {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
    style = naming_style(rel)
    canon = [c for c in (canonical_key(k, style) for k in rel) if c]
    layer3 = {int(m.group(1)) for c in canon if (m := re.match(r"stages\.2\.(\d+)\.", c))}
    kind = "bottleneck" if any(re.match(r"stages\.\d+\.\d+\.conv3\.", c) for c in canon) else "basic"
    name = _RESNETS.get((kind, len(layer3)))
    if style not in ("madd", "resnet") or name is None:
        raise MaddConfigError(f"the checkpoint's backbone (prefix {p!r}) is not a torchvision ResNet; D-deepscore "
                              "reads ResNet layer3 (conv4_x) features")
    return name, p


def load_candidate(spec: str, seed: int = 0, backbone_prefix: str | None = None) -> tuple[Backbone, str]:
    """A madd :class:`Backbone` with the candidate's weights.

    ``spec``: a checkpoint file (a madd ``.ckpt`` names its backbone in its stored config; a plain ``.pth`` must
    be a torchvision ResNet, read off its tensors), ``package:<name>`` (the ImageNet weights a registry package
    ships, e.g. ``package:tf_efficientnet_lite0``) or ``random:<name>`` (seeded random initialisation, a floor).
    """
    if spec.startswith("random:"):
        arch = spec.split(":", 1)[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Backbone(arch), arch
    if spec.startswith("package:"):
        arch = spec.split(":", 1)[1]
        return Backbone(arch, "package"), arch
    state = load_checkpoint_state(spec)
    arch = stored_backbone_name(spec)
    if arch is None:
        arch, prefix = infer_resnet(state, backbone_prefix)
    else:
        prefix = backbone_prefix_of(state, backbone_prefix)
    backbone = Backbone(arch)
    report = transfer_backbone(state, backbone, {prefix: ""})
    if report.missing or report.mismatched:
        raise MaddConfigError(f"{spec}: the backbone is incomplete ({len(report.missing)} missing, "
                              f"{len(report.mismatched)} mismatched tensors); is it a {arch}?")
    return backbone, arch


@torch.no_grad()
def layer3_features(backbone: Backbone, images: torch.Tensor, blocks: Sequence[int] = (0, 1),
                    image_size: int | None = 224, batch_size: int = 32,
                    device: str | torch.device = "cpu") -> dict[int, np.ndarray]:
    """Pooled outputs of ``layer3`` blocks ``blocks`` for raw [0, 1] images ``(n, C, H, W)``.

    ``layer3`` is the backbone's stride-16 stage (ResNet's conv4_x; the blocks of EfficientNet's stages 4-5)."""
    layer3 = backbone.stages[2]
    bad = [b for b in blocks if not 0 <= b < len(layer3)]
    if bad:
        raise MaddConfigError(f"layer3_blocks {bad} out of range: this backbone's layer3 has {len(layer3)} blocks")
    norm = Normalize.of(backbone).to(device)
    backbone = backbone.to(device).eval()
    out: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        x = backbone.stages[1](backbone.stages[0](backbone.stem(norm(x))))
        for j, block in enumerate(layer3):
            x = block(x)
            if j in out:
                out[j].append(x.mean((2, 3)).double().cpu())
            if j >= max(blocks):
                break
    return {b: torch.cat(v).numpy() for b, v in out.items()}


def target_images(datamodule, splits: Sequence[str] = ("target_labeled", "val"), fraction: float = 0.8,
                  seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A seeded random ``fraction`` of the labelled target images of ``splits``, as a tensor and labels."""
    datamodule.setup()
    if not 0 < fraction <= 1:
        raise MaddConfigError(f"fraction must be in (0, 1], got {fraction}")
    samples = [datamodule.datasets[s][i] for s in splits if s in datamodule.datasets
               for i in range(len(datamodule.datasets[s]))]
    missing = [s for s in splits if s not in datamodule.datasets]
    if missing:
        raise MaddConfigError(f"splits {missing} do not exist; choose from {sorted(datamodule.datasets)}")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(samples), size=max(2, int(round(fraction * len(samples)))), replace=False))
    images = torch.stack([samples[i]["image"] for i in keep])
    labels = np.array([int(samples[i]["label"]) for i in keep])
    if len(np.unique(labels)) < 2:
        raise MaddConfigError(f"the {len(labels)} sampled target images hold a single class; transferability "
                              "scores need at least two (raise fraction or the label budget)")
    return images, labels


@dataclass
class CandidateScores:
    name: str
    arch: str
    scores: dict[str, float]  # averaged over layer3 depths
    per_block: dict[str, dict[int, float]]


def score_candidate(spec: str, images: torch.Tensor, labels: np.ndarray, scores: Sequence[str],
                    blocks: Sequence[int] = (0, 1), image_size: int | None = 224, batch_size: int = 32,
                    device: str = "cpu", seed: int = 0, backbone_prefix: str | None = None) -> CandidateScores:
    backbone, arch = load_candidate(spec, seed, backbone_prefix)
    feats = layer3_features(backbone, images, blocks, image_size, batch_size, device)
    per = {s: {b: score_features(s, feats[b], labels) for b in blocks} for s in scores}
    avg = {s: float(np.mean(list(v.values()))) for s, v in per.items()}
    name = spec if spec.startswith("random:") else str(Path(spec))
    return CandidateScores(name, arch, avg, per)


def ranking_table(results: Sequence[CandidateScores], rank_by: str):
    """A ``pandas.DataFrame`` sorted by ``rank_by`` descending, with a rank column per score (1 = best)."""
    import pandas as pd

    rows = [{"checkpoint": r.name, "arch": r.arch, **r.scores} for r in results]
    table = pd.DataFrame(rows)
    if rank_by not in table.columns:
        raise MaddConfigError(f"rank_by={rank_by!r} is not among the computed scores {list(results[0].scores)}")
    for s in results[0].scores:
        table[f"rank_{s}"] = table[s].rank(ascending=False, method="min").astype(int)
    return table.sort_values(rank_by, ascending=False, kind="stable").reset_index(drop=True)


def print_ranking(table, rank_by: str, target: str) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Table(title=f"Transferability to {target} (ranked by {rank_by}; higher = better, no fine-tuning)")
    out.add_column("rank", justify="right")
    out.add_column("checkpoint", style="cyan", overflow="fold")
    out.add_column("arch")
    scores = [c for c in table.columns if c not in ("checkpoint", "arch") and not c.startswith("rank_")]
    for s in scores:
        out.add_column(s, justify="right")
    for i, row in table.iterrows():
        out.add_row(str(i + 1), row["checkpoint"], row["arch"],
                    *[f"{row[s]:.4f} (#{row[f'rank_{s}']})" for s in scores])
    Console(width=max(Console().width, 140)).print(out)


def run_ranking(cfg) -> dict:
    """``rank_checkpoints.py``: score every checkpoint in ``cfg.checkpoints`` on ``cfg.data``'s labelled target
    images, print the ranking and write ``transferability.csv`` into the run folder."""
    from hydra.utils import instantiate

    checkpoints = list(cfg.get("checkpoints") or [])
    if not checkpoints:
        raise MaddConfigError("checkpoints is empty: give the candidates, e.g. "
                              "'checkpoints=[runs/a/checkpoints/last.ckpt,random:resnet18]'")
    scores = list(cfg.scores)
    seed = int(cfg.get("seed") or 0)
    set_threads(cfg.get("threads"))
    datamodule = instantiate(cfg.data, _convert_="all")
    images, labels = target_images(datamodule, list(cfg.splits), float(cfg.fraction), seed)
    log.info("scoring %d candidates on %d target images (%d classes)", len(checkpoints), len(labels),
             len(np.unique(labels)))
    results = [score_candidate(str(c), images, labels, scores, list(cfg.layer3_blocks), cfg.get("image_size"),
                               int(cfg.batch_size), str(cfg.device), seed, cfg.get("backbone_prefix"))
               for c in checkpoints]
    table = ranking_table(results, str(cfg.rank_by))
    print_ranking(table, str(cfg.rank_by), data_config_name("target"))
    out = Path(cfg.paths.output_dir) / "transferability.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.6g")
    print(f"ranking: {out}")
    return {"table": table, "csv": str(out)}
