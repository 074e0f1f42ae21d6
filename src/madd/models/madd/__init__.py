"""MADD: meta-adaptive defect detection (TIM + MV-TSN + RCSM + MAPOM), see docs/methods/madd.md."""

from madd.models.madd.lightning_model import MADDModule
from madd.models.madd.torch_model import DomainAdaptiveAdapter, MADDNet, ReconstructionDecoder

__all__ = ["DomainAdaptiveAdapter", "MADDModule", "MADDNet", "ReconstructionDecoder"]
