"""Losses shared by several methods; one small module per loss, each docstring states the paper's formula."""

from madd.losses.coral import CorrelationAlignmentLoss, coral_loss
from madd.losses.mmd import DEFAULT_MULTIPLIERS, MultiKernelMMDLoss, median_bandwidth, mmd_loss

__all__ = [
    "DEFAULT_MULTIPLIERS",
    "CorrelationAlignmentLoss",
    "MultiKernelMMDLoss",
    "coral_loss",
    "median_bandwidth",
    "mmd_loss",
]
