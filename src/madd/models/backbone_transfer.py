"""Backbone-only weight transfer (RTLAOI-DD, section 2.6): copy the backbone of a source checkpoint into a
target model, leave every other tensor (heads, adapters) at its initialisation, report what happened.

The paper transfers "only those weights belonging to the network backbone and initialise[s] the rest
randomly". Which tensors are "the backbone" is decided by *prefix*: a source prefix (``net.backbone.`` in a
:class:`~madd.models.supervised.SupervisedClassifier` checkpoint, ``""`` in a torchvision state dict) is mapped
to a target prefix (found automatically when the target holds exactly one backbone). Three naming styles are
understood and translated into each other, so a torchvision ``.pth`` can initialise a madd ``Backbone`` and back:

* madd :class:`~madd.models.backbones.Backbone`: ``stem.*``, ``stages.<i>.*``;
* torchvision ResNet: ``conv1``/``bn1`` (= ``stem.0``/``stem.1``), ``layer<k>`` (= ``stages.<k-1>``), ``fc`` = head;
* torchvision MobileNetV2: ``features.<i>`` (split into stem/stages as ``Backbone`` does), ``classifier`` = head.

Any other layout is matched by identical relative names under the mapped prefixes.

Why hand-written: ``load_state_dict(strict=False)`` reports missing/unexpected keys but raises on shape
mismatches and knows neither prefixes nor naming styles; ``torchvision``/``timm`` helpers only load their own
pretrained files. The copy itself is ``load_state_dict`` on the selected tensors.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torchvision
from torch import Tensor, nn

from madd.checkpoint import load_file
from madd.errors import MaddConfigError
from madd.models.backbones import Backbone

# MobileNetV2 ``features`` indices per madd Backbone group (see madd.models.backbones.Backbone).
_MOBILENET_GROUPS = [("stem", range(0, 2)), ("stages.0", range(2, 4)), ("stages.1", range(4, 7)),
                     ("stages.2", range(7, 14)), ("stages.3", range(14, 19))]
_BACKBONE_TYPES = (torchvision.models.ResNet, torchvision.models.MobileNetV2)
log = logging.getLogger(__name__)


@dataclass
class TransferReport:
    """What :func:`transfer_backbone` did, key by key.

    Attributes:
        transferred: target keys that received the source tensor.
        mismatched: target key -> (source shape, target shape); left at initialisation.
        skipped: source key -> why it was not copied (not a backbone tensor, no counterpart in the target).
        missing: target backbone keys the source has no tensor for; left at initialisation.
        frozen: target parameter names set to ``requires_grad=False``.
        prefix_map: the source prefix -> target prefix mapping that was used.
    """

    transferred: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    prefix_map: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line, for logs."""
        return (f"backbone transfer {self.prefix_map}: {len(self.transferred)} transferred, "
                f"{len(self.mismatched)} shape-mismatched, {len(self.missing)} missing in source, "
                f"{len(self.skipped)} source tensors skipped, {len(self.frozen)} parameters frozen")

    def __rich__(self):
        from rich.table import Table

        table = Table(title="Backbone transfer", caption=f"prefix map {self.prefix_map}")
        table.add_column("status", style="cyan")
        table.add_column("tensors", justify="right")
        table.add_column("examples")

        def examples(keys) -> str:
            keys = list(keys)
            return ", ".join(keys[:3]) + (f", ... (+{len(keys) - 3})" if len(keys) > 3 else "")

        table.add_row("transferred", str(len(self.transferred)), examples(self.transferred))
        table.add_row("mismatched", str(len(self.mismatched)),
                      examples(f"{k} {tuple(s)}->{tuple(t)}" for k, (s, t) in self.mismatched.items()))
        table.add_row("missing in source", str(len(self.missing)), examples(self.missing))
        table.add_row("skipped", str(len(self.skipped)), examples(f"{k} ({r})" for k, r in self.skipped.items()))
        table.add_row("frozen", str(len(self.frozen)), examples(self.frozen))
        return table

    def to_dict(self) -> dict:
        """Plain containers only (safe to store in a ``weights_only`` checkpoint or a JSON report)."""
        return {"transferred": list(self.transferred),
                "mismatched": {k: [list(s), list(t)] for k, (s, t) in self.mismatched.items()},
                "skipped": dict(self.skipped), "missing": list(self.missing), "frozen": list(self.frozen),
                "prefix_map": dict(self.prefix_map)}


# ---------------------------------------------------------------------------------------------- loading
def load_checkpoint_state(path: str | Path) -> dict[str, Tensor]:
    """The tensor state dict of a checkpoint file, loaded with ``torch.load(weights_only=True)`` on CPU.

    Accepts a Lightning ``.ckpt`` (its ``state_dict``), a ``{"state_dict": ...}``/``{"model": ...}`` wrapper or
    a plain state dict (torchvision ``.pth``).

    Raises:
        MaddConfigError: the file is missing, unreadable/corrupt, holds pickled objects that are not plain
            tensors/containers, or holds no tensors.
    """
    return tensor_state(load_file(path), path)


def tensor_state(obj, path: str | Path) -> dict[str, Tensor]:
    """The tensors of a loaded checkpoint object (see :func:`load_checkpoint_state`); ``path`` names it in errors."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)} if isinstance(obj, Mapping) else {}
    if not state:
        raise MaddConfigError(f"checkpoint {path} holds no tensor state dict (top-level type "
                              f"{type(obj).__name__}); give a Lightning .ckpt or a state_dict .pth")
    return state


# ---------------------------------------------------------------------------------------------- naming styles
def naming_style(rel_keys) -> str:
    """``madd`` (stem/stages), ``resnet`` or ``mobilenet`` (torchvision), else ``plain`` (names used as they are)."""
    keys = list(rel_keys)
    if any(k.startswith(("stem.", "stages.")) for k in keys):
        return "madd"
    if any(k.startswith("layer1.") for k in keys) and any(k.startswith("conv1.") for k in keys):
        return "resnet"
    if any(k.startswith("features.") for k in keys):
        return "mobilenet"
    return "plain"


def canonical_key(rel: str, style: str) -> str | None:
    """Relative key in madd ``Backbone`` naming, or ``None`` when it is not a backbone tensor (a head)."""
    if style == "madd":
        return rel if rel.startswith(("stem.", "stages.")) else None
    if style == "resnet":
        if rel.startswith("conv1."):
            return "stem.0." + rel[len("conv1."):]
        if rel.startswith("bn1."):
            return "stem.1." + rel[len("bn1."):]
        m = re.match(r"layer(\d+)\.(.*)", rel)
        return f"stages.{int(m.group(1)) - 1}.{m.group(2)}" if m else None
    if style == "mobilenet":
        m = re.match(r"features\.(\d+)\.(.*)", rel)
        if not m:
            return None
        i = int(m.group(1))
        for group, members in _MOBILENET_GROUPS:
            if i in members:
                return f"{group}.{i}.{m.group(2)}"
        return None
    return rel


# ---------------------------------------------------------------------------------------------- prefixes
def find_backbone_prefixes(keys) -> list[str]:
    """Prefixes under which the source state holds a recognisable backbone (outermost only)."""
    keys = set(keys)
    found = set()
    for k in keys:
        for marker in ("stem.0.", "conv1.weight", "features.0.0.weight"):
            if marker in k and (k.startswith(marker) or k[: k.index(marker)].endswith(".")):
                p = k[: k.index(marker)]
                if marker == "conv1.weight" and not any(x.startswith(p + "layer1.") for x in keys):
                    continue  # a conv1 inside a residual block, not a ResNet stem
                found.add(p)
    return sorted(p for p in found if not any(q != p and p.startswith(q) for q in found))


def _target_prefixes(target: nn.Module) -> list[str]:
    found = [n for n, m in target.named_modules() if isinstance(m, (Backbone, *_BACKBONE_TYPES))]
    outer = [n for n in found if not any(q != n and (q == "" or n.startswith(q + ".")) for q in found)]
    return [n + "." if n else "" for n in outer]


# ---------------------------------------------------------------------------------------------- transfer
def transfer_backbone(
    source_state: Mapping[str, Tensor],
    target: nn.Module,
    prefix_map: Mapping[str, str] | None = None,
    freeze_stages: int = 0,
) -> TransferReport:
    """Copy the backbone tensors of ``source_state`` into ``target``; leave all other target tensors as they are.

    Args:
        source_state: a state dict (e.g. from :func:`load_checkpoint_state`).
        target: the model to initialise (its heads keep their fresh initialisation).
        prefix_map: source prefix -> target prefix, e.g. ``{"net.backbone.": "net.backbone."}``. Default: the
            single backbone found on each side (``net.backbone.``/``backbone.``/a torchvision net at ``""``).
            Several entries copy several backbones; call again to copy one source into several targets.
        freeze_stages: freeze (``requires_grad=False``) the stem and the first ``freeze_stages - 1`` stages of
            every target backbone, as :meth:`madd.models.backbones.Backbone.freeze` does; 0 freezes nothing.
            BatchNorm running statistics of frozen layers still update in ``train()`` mode.

    Returns:
        a :class:`TransferReport`.

    Raises:
        MaddConfigError: no backbone is found (or several are, without ``prefix_map``), or not one tensor
            could be transferred (a silent no-op would look like a successful transfer).
    """
    if freeze_stages < 0:
        raise MaddConfigError(f"freeze_stages must be >= 0, got {freeze_stages}")
    target_state = target.state_dict()
    if prefix_map is None:
        src, tgt = find_backbone_prefixes(source_state), _target_prefixes(target)
        if len(src) != 1 or len(tgt) != 1:
            raise MaddConfigError(
                f"cannot pick the backbone automatically: source backbone prefixes {src}, target backbone "
                f"prefixes {tgt}; pass prefix_map={{source_prefix: target_prefix}} (e.g. "
                "{'net.backbone.': 'net.backbone.'})"
            )
        prefix_map = {src[0]: tgt[0]}
    prefix_map = dict(prefix_map)
    report = TransferReport(prefix_map=prefix_map)
    copy: dict[str, Tensor] = {}
    claimed: set[str] = set()
    for sp, tp in prefix_map.items():
        src_rel = {k[len(sp):]: k for k in source_state if k.startswith(sp)}
        tgt_rel = {k[len(tp):]: k for k in target_state if k.startswith(tp)}
        if not src_rel:
            raise MaddConfigError(f"prefix_map source prefix {sp!r} matches no key of the source state; "
                                  f"source keys start like {sorted(source_state)[:3]}")
        if not tgt_rel:
            raise MaddConfigError(f"prefix_map target prefix {tp!r} matches no key of the target model; "
                                  f"target keys start like {sorted(target_state)[:3]}")
        s_style, t_style = naming_style(src_rel), naming_style(tgt_rel)
        tgt_canon = {}
        for rel, key in tgt_rel.items():
            c = canonical_key(rel, t_style)
            if c is not None:
                tgt_canon[c] = key
        for rel, skey in src_rel.items():
            c = canonical_key(rel, s_style)
            if c is None:
                report.skipped[skey] = "not a backbone tensor"
                continue
            tkey = tgt_canon.get(c)
            if tkey is None:
                report.skipped[skey] = "no counterpart in the target backbone"
                continue
            claimed.add(tkey)
            s, t = source_state[skey], target_state[tkey]
            if tuple(s.shape) != tuple(t.shape):
                report.mismatched[tkey] = (tuple(s.shape), tuple(t.shape))
                continue
            copy[tkey] = s
        report.missing += [k for k in tgt_canon.values() if k not in claimed]
    for key in source_state:
        if not any(key.startswith(sp) for sp in prefix_map):
            report.skipped[key] = "outside the mapped backbone prefixes"
    if not copy:
        raise MaddConfigError(
            f"no backbone tensor could be transferred with prefix_map={prefix_map} "
            f"({len(report.mismatched)} shape mismatches, {len(report.missing)} target tensors without a source "
            "counterpart): the source and target backbones differ (e.g. resnet18 vs resnet50); use the same "
            "model.backbone.name as the source run"
        )
    result = target.load_state_dict(copy, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # every key in `copy` came from target.state_dict()
    report.transferred = sorted(copy)
    if freeze_stages:
        report.frozen = _freeze(target, prefix_map.values(), freeze_stages)
    return report


def _freeze(target: nn.Module, target_prefixes, num_stages: int) -> list[str]:
    """``requires_grad=False`` on the stem and the first ``num_stages - 1`` stages under each prefix."""
    frozen = []
    params = dict(target.named_parameters())
    for tp in target_prefixes:
        rel = {k[len(tp):]: k for k in params if k.startswith(tp)}
        style = naming_style(rel)
        for r, key in rel.items():
            c = canonical_key(r, style)
            if c is None:
                continue
            group = 0 if c.startswith("stem.") else (int(c.split(".")[1]) + 1 if c.startswith("stages.") else None)
            if group is not None and group < num_stages:
                params[key].requires_grad_(False)
                frozen.append(key)
    return sorted(frozen)


def init_from_checkpoint(model: nn.Module, path: str | Path, freeze_stages: int = 0,
                         prefix_map: Mapping[str, str] | None = None) -> TransferReport:
    """``transfer_from=<ckpt>`` in a training config: load the file, transfer its backbone, print the report."""
    from rich.console import Console

    report = transfer_backbone(load_checkpoint_state(path), model, prefix_map, freeze_stages)
    log.info("%s from %s", report.summary(), path)
    Console().print(report)
    return report

