from madd.models.fixmatch.lightning_model import FixMatch
from madd.models.fixmatch.loss import FixMatchLoss, FixMatchOutput

__all__ = ["FixMatch", "FixMatchLoss", "FixMatchOutput"]
