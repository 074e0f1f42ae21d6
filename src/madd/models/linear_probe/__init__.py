from madd.models.linear_probe.lightning_model import LinearProbe

__all__ = ["LinearProbe"]
