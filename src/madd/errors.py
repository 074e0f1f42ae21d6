"""One exception type for bad user input, so every entry point can print a single clear message."""


class MaddConfigError(ValueError):
    """Bad input from the user (a path, a file, a config key). The message names the culprit and the fix."""


class DataError(MaddConfigError):
    """A dataset problem: missing folder, empty class, unreadable image, mask/image size mismatch, ..."""
