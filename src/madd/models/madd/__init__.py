"""MADD: meta-adaptive defect detection (TIM + MV-TSN + RCSM + MAPOM), see docs/methods/madd.md."""

from madd.models.madd.lightning_model import MADDModule
from madd.models.madd.networks import DomainAdaptiveAdapter, MADDNet, ReconstructionDecoder
from madd.models.madd.torch_model import MADDModel

__all__ = ["DomainAdaptiveAdapter", "MADDModel", "MADDModule", "MADDNet", "ReconstructionDecoder"]
