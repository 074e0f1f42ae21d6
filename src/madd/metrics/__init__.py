from madd.metrics.classification import DefectMetrics
from madd.metrics.pixel import PixelMetrics, per_image_f1_iou

__all__ = ["DefectMetrics", "PixelMetrics", "per_image_f1_iou"]
