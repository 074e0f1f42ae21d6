"""Stop a run cleanly on SIGTERM (what a cluster scheduler sends) or Ctrl-C, with a resumable ``last.ckpt``.

Lightning 2.x already catches SIGTERM during ``fit``/``test``: its handler only sets
``trainer.received_sigterm``, and the loops raise ``SIGTERMException`` at the next safe point (after a whole
training batch, optimiser step included; between evaluation batches). Left alone that exception is a
``SystemExit`` with code 0, so the process ends "successfully" without a run record. This callback

* gives SIGINT (Ctrl-C) the same treatment: the first one asks for a stop after the current training batch
  (raising Lightning's own ``SIGTERMException`` there), a second one stops at once without a checkpoint;
* on that exception (only: a non-finite loss or a crash must keep the last *good* checkpoint) writes
  ``<dirpath>/last.ckpt`` with ``trainer.save_checkpoint`` (model, optimiser, loop and RNG state) and
  tags the exception with where it is, for :mod:`madd.pipeline` to turn into
  :class:`madd.errors.RunInterrupted` (exit status 143/130, ``status: interrupted`` in ``metrics.json``).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class InterruptCheckpoint(L.Callback):
    """Args:
        dirpath: where ``<filename>.ckpt`` goes (the run's ``checkpoints`` folder).
        filename: without extension; ``last`` so the usual ``ckpt_path=.../last.ckpt`` resumes it.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.dirpath, self.filename = dirpath, filename
        self._sigint_received = False
        self._previous_sigint = None

    @property
    def ckpt_path(self) -> Path:
        return Path(self.dirpath) / f"{self.filename}.ckpt"

    # ------------------------------------------------------------------ SIGINT -> Lightning's safe stop
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sigint_received = False
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        if self._sigint_received:  # the second Ctrl-C: stop now (Lightning exits with status 1, no checkpoint)
            self._restore_sigint()
            raise KeyboardInterrupt
        self._sigint_received = True
        log.warning("SIGINT: stopping after the current training step and writing %s (Ctrl-C again to stop now)",
                    self.ckpt_path)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._sigint_received:
            raise SIGTERMException  # the exception Lightning's SIGTERM handling raises at this same point

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_sigint()

    # ------------------------------------------------------------------ the checkpoint on the way out
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException):
            return  # a failure (non-finite loss, crash): last.ckpt keeps the last good epoch
        exception.madd_signal = signal.SIGINT if self._sigint_received else signal.SIGTERM
        exception.madd_epoch, exception.madd_step = trainer.current_epoch, trainer.global_step
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return  # testing/validating only: there is no training state to save
        trainer.save_checkpoint(self.ckpt_path)
        exception.madd_checkpoint = str(self.ckpt_path)
