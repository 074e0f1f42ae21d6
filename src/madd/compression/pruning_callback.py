"""What every filter-pruning callback shares: the target network, its channel groups, masks in the
checkpoint, per-stage evaluation and cost, the report and the physically pruned model.

The pruned network is ``module_path`` inside the LightningModule (``net`` for the supervised
classifier, ``student`` for distillation); it must map raw images to class logits. At the end of
``fit`` the callback writes, under ``report_dir``:

* ``report.md`` / ``report.csv``: one row per stage (see :mod:`madd.compression.report`), where each
  pruned row is measured on a physically pruned copy (so its accuracy is the deployable model's);
* ``pruned.ckpt``: the LightningModule's weights with the network physically pruned, loadable with
  :func:`madd.checkpoint.load_module` (``weights_only``; the shapes are rebuilt from the tensors).

The Lightning checkpoints written during training keep the full shapes with the pruned filters at
zero, so resuming (``ckpt_path=.../last.ckpt``) continues exactly: masks, finished rounds and report
rows are callback state.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from madd.checkpoint import save_module
from madd.compression.evaluate import evaluate
from madd.compression.masks import apply_masks, kept_fraction
from madd.compression.network_cost import measure
from madd.compression.report import write_report
from madd.data.dataset import image_hw, input_shape
from madd.errors import MaddConfigError
from madd.pruning.groups import ChannelGroup, find_groups
from madd.pruning.physical import remove_pruned_channels

log = logging.getLogger(__name__)


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    try:
        return root.get_submodule(path) if path else root
    except AttributeError:
        children = [n for n, _ in root.named_children()]
        raise MaddConfigError(f"pruning module_path={path!r} is not a submodule of {type(root).__name__}; "
                              f"its children are {children}") from None


def pruned_copy(net: nn.Module, groups: Sequence[ChannelGroup], masks: dict[str, torch.Tensor] | None,
                image: torch.Tensor) -> nn.Module:
    """A physically pruned deep copy of ``net`` (hard-masked first, so removal is exact)."""
    twin = copy.deepcopy(net)
    if masks:
        apply_masks(twin, groups, masks, hard=True)
        remove_pruned_channels(twin, image, groups, masks)
    return twin


class FilterPruningCallback(L.Callback):
    """Base class; subclasses decide when and how much to prune (:class:`L1FilterPruning`,
    :class:`SoftFilterPruning`).

    Args:
        module_path: the network to prune inside the LightningModule.
        scope, include, exclude: which channel groups are prunable (:mod:`madd.pruning.groups`).
        round_to: keep channel counts a multiple of this (e.g. 8 for GPU kernels); ``None`` = exact rate.
        eval_split: split evaluated at every stage for the report (``val``; with k-fold, ``test`` is the
            held-out fold the paper reports).
        latency: measure CPU latency/throughput at ``latency_batch_sizes`` with ``latency_threads`` threads
            on images of ``latency_image_size`` (default: the data's size).
        report_dir: where ``report.md``/``report.csv``/``pruned.ckpt`` go (default ``<default_root_dir>/pruning``).
    """

    def __init__(
        self,
        module_path: str = "net",
        scope: str = "inner",
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        round_to: int | None = None,
        eval_split: str = "val",
        latency: bool = True,
        latency_batch_sizes: Sequence[int] = (1, 32),
        latency_threads: int = 1,
        latency_image_size: int | Sequence[int] | None = None,
        latency_min_run_time: float = 0.5,
        report_dir: str | None = None,
        save_pruned: bool = True,
    ) -> None:
        self.module_path = module_path
        self.scope, self.include, self.exclude = scope, list(include or []), list(exclude or [])
        self.round_to = round_to
        self.eval_split = eval_split
        self.latency = latency
        self.latency_batch_sizes = [int(b) for b in latency_batch_sizes]
        self.latency_threads = latency_threads
        self.latency_image_size = latency_image_size
        self.latency_min_run_time = latency_min_run_time
        self.report_dir = report_dir
        self.save_pruned = save_pruned
        self.groups: list[ChannelGroup] = []
        self.masks: dict[str, torch.Tensor] | None = None
        self.rows: list[dict[str, Any]] = []
        self.pruned_network: nn.Module | None = None  # set at the end of fit (used by phase 3)

    # ------------------------------------------------------------------ state in checkpoints
    def state_dict(self) -> dict[str, Any]:
        masks = {k: v.clone() for k, v in (self.masks or {}).items()}
        return {"masks": masks, "has_masks": self.masks is not None, "rows": [dict(r) for r in self.rows],
                **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = {k: v.clone() for k, v in state["masks"].items()} if state.get("has_masks") else None
        self.rows = [dict(r) for r in state.get("rows", [])]
        self.load_extra_state(state)

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # ------------------------------------------------------------------ helpers
    def target(self, pl_module: L.LightningModule) -> nn.Module:
        return get_submodule(pl_module, self.module_path)

    @staticmethod
    def data_shape(trainer: L.Trainer) -> tuple[int, int, int]:
        dm = trainer.datamodule
        return input_shape({k: getattr(dm, k) for k in ("image_size", "channels") if hasattr(dm, k)})

    def example_image(self, trainer: L.Trainer) -> torch.Tensor:
        return torch.rand(1, *self.data_shape(trainer))

    def latency_shape(self, trainer: L.Trainer) -> tuple[int, int, int]:
        c, h, w = self.data_shape(trainer)
        size = self.latency_image_size
        if size is None:
            return c, h, w
        return c, *image_hw(size)

    def out_dir(self, trainer: L.Trainer) -> Path:
        return Path(self.report_dir) if self.report_dir else Path(trainer.default_root_dir) / "pruning"

    def evaluate_network(self, trainer: L.Trainer, pl_module: L.LightningModule, net: nn.Module) -> dict[str, float]:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "split_loader"):
            raise MaddConfigError("pruning reports need a DefectDataModule (trainer.fit(model, datamodule=...))")
        return evaluate(net, dm.split_loader(self.eval_split), pl_module.num_classes,
                        getattr(pl_module, "normal_index", None), pl_module.device)

    def stage_row(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str,
                  masks: dict[str, torch.Tensor] | None, with_metrics: bool = True) -> dict[str, Any]:
        """Cost (and metrics) of the network as it would be deployed with ``masks``."""
        net = pruned_copy(self.target(pl_module), self.groups, masks, self.example_image(trainer).to(pl_module.device))
        row: dict[str, Any] = {"stage": stage, "epochs_trained": trainer.current_epoch,
                               "kept_channels": kept_fraction(masks) if masks else 1.0}
        if with_metrics:
            row.update(self.evaluate_network(trainer, pl_module, net))
        row.update(measure(net, self.latency_shape(trainer), self.latency, self.latency_batch_sizes,
                           self.latency_threads, self.latency_min_run_time))
        log.info("pruning %s: %s", stage, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        return row

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.groups = find_groups(self.target(pl_module), self.example_image(trainer), self.scope,
                                      self.include, self.exclude)
            log.info("pruning %d channel groups of %s (scope=%s)", len(self.groups), self.module_path, self.scope)

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the report and the physically pruned model (rank 0 writes, every rank keeps the network)."""
        self.pruned_network = pruned_copy(self.target(pl_module), self.groups, self.masks,
                                          self.example_image(trainer).to(pl_module.device))
        self._write(trainer, pl_module)

    @rank_zero_only
    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = self.out_dir(trainer)
        df = write_report(self.rows, out, title=f"{type(self).__name__} of `{self.module_path}` ({self.scope})")
        cols = [c for c in ("stage", "params_ratio", "flops_ratio", "latency_b1_ms_ratio", "accuracy_change") if c in df]
        log.info("pruning report (%s):\n%s", out / "report.md", df[cols].to_string(index=False))
        hooked: dict[str, Any] = {}
        pl_module.on_save_checkpoint(hooked)  # the module's own checkpoint additions (madd_config as it stores it)
        config = hooked.get("madd_config") or getattr(pl_module, "run_config", None)
        if self.save_pruned and config:
            prefix = f"{self.module_path}." if self.module_path else ""
            state = {k: v for k, v in pl_module.state_dict().items() if not k.startswith(prefix)}
            state.update({prefix + k: v for k, v in self.pruned_network.state_dict().items()})
            holder = _StateHolder(state)
            path = save_module(holder, out / "pruned.ckpt", config, extra={"madd_pruning_report": self.rows})
            log.info("physically pruned model: %s", path)


class _StateHolder(nn.Module):
    """Lets :func:`madd.checkpoint.save_module` write a prepared state dict."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._state = state

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return self._state
