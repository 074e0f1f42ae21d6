"""The exceptions an entry point turns into one clear message (see :func:`madd.cli.run_task`).

* :class:`MaddConfigError` (and :class:`DataError`, :class:`TrainingError`): the user can fix it; the
  message names the key or file and the fix; exit status 2, no traceback.
* :class:`RunInterrupted`: a run stopped by SIGTERM/SIGINT after writing a resumable ``last.ckpt``;
  exit status 128 + signal number (143 for SIGTERM, 130 for SIGINT).

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal


class MaddConfigError(ValueError):
    """Bad input from the user (a path, a file, a config key). The message names the culprit and the fix."""


class DataError(MaddConfigError):
    """A dataset problem: missing folder, empty class, unreadable image, mask/image size mismatch, ..."""


class TrainingError(MaddConfigError):
    """Training cannot go on for a reason the config can fix (a non-finite loss: learning rate, loss weights)."""


class RunInterrupted(Exception):
    """Training stopped by a signal at a safe point (after a whole optimiser step); ``last.ckpt`` resumes it.

    Args:
        signum: the signal (``signal.SIGTERM`` or ``signal.SIGINT``).
        checkpoint: the ``last.ckpt`` written on the way out (``None`` when none could be written).
        epoch, step: where training stopped; ``None`` when the signal came outside a Lightning loop (while data,
            models or a method's stages were being set up, or between stages).
    """

    def __init__(self, signum: int, checkpoint: str | None, epoch: int | None = None, step: int | None = None) -> None:
        self.signum, self.checkpoint, self.epoch, self.step = int(signum), checkpoint, epoch, step
        super().__init__(f"run interrupted by {self.signal_name} outside a training loop" if epoch is None
                         else f"training interrupted by {self.signal_name} at epoch {epoch}, step {step}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


def config_error_cause(err: BaseException) -> MaddConfigError | None:
    """The :class:`MaddConfigError` behind ``err``, if any.

    ``hydra.utils.instantiate`` wraps whatever a constructor raises in an ``InstantiationException``; the user's
    problem (and its one clear message) is the original error in the ``__cause__`` chain.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, MaddConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


class MissingDependencyError(MaddConfigError):
    """A package that one feature needs is not installed: the message names the package and how to install it."""
