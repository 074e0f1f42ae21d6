from madd.models.distillation.lightning_model import DistillationModule
from madd.models.distillation.loss import DistillationLoss, SoftTargetLoss

__all__ = ["DistillationLoss", "DistillationModule", "SoftTargetLoss"]
