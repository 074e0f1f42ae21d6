"""``ModelCheckpoint`` that keeps its best-so-far when a run is resumed into another run folder.

Lightning restores ``best_model_score`` and the top-k list only when the checkpoint folder is unchanged
(``ModelCheckpoint.load_state_dict``). ``python train.py ... ckpt_path=<old run>/checkpoints/last.ckpt`` starts a
new Hydra run folder, so Lightning forgets the scores and the first epoch after the resume is saved as "best"
whatever its score: the test then runs on another checkpoint than an uninterrupted run would. Subclassed, not
hand-written: only the restore differs. The old run's top-k files are copied into the new folder and the restored
state points at the copies, so the resumed run never deletes or overwrites a file of the old one.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class ResumableModelCheckpoint(ModelCheckpoint):
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath", self.dirpath)
        if self.dirpath is None or old_dir == self.dirpath:
            return super().load_state_dict(state_dict)
        copies: dict[str, Any] = {}
        for path, score in (state_dict.get("best_k_models") or {}).items():
            if not Path(path).is_file():
                continue
            target = Path(self.dirpath) / Path(path).name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                shutil.copy2(path, tmp)
                os.replace(tmp, target)  # atomic: every DDP rank may get here
            copies[path] = str(target)
        if not copies:  # the old files are gone: Lightning's own restore (best_model_path only)
            return super().load_state_dict(state_dict)
        log.info("resumed from another run folder: its best checkpoints %s copied into %s", sorted(copies),
                 self.dirpath)
        moved = dict(state_dict)
        moved["dirpath"] = self.dirpath
        moved["best_k_models"] = {copies[p]: s for p, s in state_dict["best_k_models"].items() if p in copies}
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            moved[key] = copies.get(state_dict.get(key) or "", "")
        return super().load_state_dict(moved)
