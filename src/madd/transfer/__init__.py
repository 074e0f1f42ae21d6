"""Choosing what to transfer from: domain discrepancy (RTLAOI-DD; its source rebalancing is madd.data.rebalance),
transferability scores of pretrained checkpoints (D-deepscore, LogME, H-score) and backbone-only transfer.

Submodules are imported lazily by their users. Backbone-only transfer (copying a checkpoint's backbone into a
model) is a model utility, :mod:`madd.models.backbone_transfer` (so the methods that use it, MADD's TIM, import
nothing from here); it is re-exported here as the public name of the transfer step.
"""

from madd.models.backbone_transfer import TransferReport, load_checkpoint_state, transfer_backbone

__all__ = ["TransferReport", "load_checkpoint_state", "transfer_backbone"]
