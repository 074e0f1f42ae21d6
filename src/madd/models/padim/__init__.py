from madd.models.padim.lightning_model import Padim
from madd.models.padim.torch_model import PadimModel

__all__ = ["Padim", "PadimModel"]
