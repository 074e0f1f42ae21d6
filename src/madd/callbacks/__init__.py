from madd.callbacks.best_checkpoint import ResumableModelCheckpoint
from madd.callbacks.finite_loss import FiniteLossGuard
from madd.callbacks.interrupt import InterruptCheckpoint
from madd.callbacks.map_threshold import MapThreshold
from madd.callbacks.rng_state import RNGStateCheckpoint
from madd.callbacks.wandb_media import WandbMedia

__all__ = ["FiniteLossGuard", "InterruptCheckpoint", "MapThreshold", "ResumableModelCheckpoint", "RNGStateCheckpoint",
           "WandbMedia"]
