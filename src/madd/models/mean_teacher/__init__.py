from madd.models.mean_teacher.lightning_model import MeanTeacher
from madd.models.mean_teacher.loss import MeanTeacherLoss, MeanTeacherOutput, sigmoid_rampup, softmax_mse_loss

__all__ = ["MeanTeacher", "MeanTeacherLoss", "MeanTeacherOutput", "sigmoid_rampup", "softmax_mse_loss"]
