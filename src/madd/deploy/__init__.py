"""Deployment: ONNX/TorchScript export with a parity check, and folder prediction (CSV + overlays)."""

from madd.deploy.export import DeployModel, export_checkpoint
from madd.deploy.predict import predict_folder

__all__ = ["DeployModel", "export_checkpoint", "predict_folder"]
