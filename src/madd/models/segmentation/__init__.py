from madd.models.segmentation.lightning_model import SegmentationModule
from madd.models.segmentation.loss import SegmentationLoss
from madd.models.segmentation.torch_model import SegmentationNet

__all__ = ["SegmentationLoss", "SegmentationModule", "SegmentationNet"]
