"""One exception type for bad user input, so every entry point can print a single clear message."""


class MaddConfigError(ValueError):
    """Bad input from the user (a path, a file, a config key). The message names the culprit and the fix."""


class DataError(MaddConfigError):
    """A dataset problem: missing folder, empty class, unreadable image, mask/image size mismatch, ..."""


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
