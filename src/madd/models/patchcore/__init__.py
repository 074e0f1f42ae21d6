from madd.models.patchcore.coreset import k_center_greedy
from madd.models.patchcore.lightning_model import PatchCore
from madd.models.patchcore.torch_model import PatchCoreModel

__all__ = ["PatchCore", "PatchCoreModel", "k_center_greedy"]
