from madd.callbacks.finite_loss import FiniteLossGuard
from madd.callbacks.rng_state import RNGStateCheckpoint

__all__ = ["FiniteLossGuard", "RNGStateCheckpoint"]
