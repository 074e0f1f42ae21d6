"""Save and restore every RNG in checkpoints so a resumed run continues the same random stream.

Lightning checkpoints hold model, optimizer, scheduler and loop state but not the RNG states that drive
augmentations and dropout; without them a run resumed from ``last.ckpt`` diverges from the uninterrupted
one. Uses Lightning's own collectors (``_collect_rng_states``/``_set_rng_states``).
"""

from __future__ import annotations

import lightning as L
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states


class RNGStateCheckpoint(L.Callback):
    def state_dict(self) -> dict:
        return {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = _collect_rng_states(include_cuda=False)
        # numpy's state tuple is not weights_only-loadable; store its parts as plain lists/ints
        kind, keys, pos, has_gauss, cached = states.pop("numpy")
        states["numpy"] = {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                           "cached": float(cached)}
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = dict(checkpoint.get("rng_states") or {})
        if not states:
            return
        import numpy as np

        n = states.pop("numpy")
        states["numpy"] = (n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"])
        _set_rng_states(states)
