"""Choosing what to transfer from: domain discrepancy (RTLAOI-DD; its source rebalancing is madd.data.rebalance),
transferability scores of pretrained checkpoints (D-deepscore, LogME, H-score) and backbone-only transfer.

Submodules are imported lazily by their users; this package only re-exports the backbone transfer, which the
training stages need without pulling in POT or scikit-learn.
"""

from madd.transfer.backbone_transfer import TransferReport, load_checkpoint_state, transfer_backbone

__all__ = ["TransferReport", "load_checkpoint_state", "transfer_backbone"]
