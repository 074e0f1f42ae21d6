from madd.models.supervised.lightning_model import SupervisedClassifier

__all__ = ["SupervisedClassifier"]
