"""Typed errors a user can act on.

Every error that comes from bad input derives from :class:`MicroforgeError`; the CLI prints its
message on one line without a traceback and exits with code 2.
"""


class MicroforgeError(Exception):
    """Base class of errors caused by bad input or an unusable environment."""

    exit_code = 2


class ConfigError(MicroforgeError, ValueError):
    """A configuration value, file or preset is invalid."""


class DatasetError(MicroforgeError):
    """A dataset directory cannot be created, resumed or read."""
