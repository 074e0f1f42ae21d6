"""Compression and measurement: filter pruning (L1 rounds, SFP/ASFP) as Lightning callbacks, physical
channel removal with torch-pruning, cost measurement, reports, and MADD's Phase 3 (prune + distil)."""

from madd.compression.pruning_callback import FilterPruningCallback
from madd.compression.l1_pruning import L1FilterPruning
from madd.compression.soft_pruning import SoftFilterPruning, asfp_rate

__all__ = ["FilterPruningCallback", "L1FilterPruning", "SoftFilterPruning", "asfp_rate"]
