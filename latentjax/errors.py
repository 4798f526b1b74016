"""Errors a user can act on. The CLI prints them as one line instead of a traceback."""


class LatentjaxError(Exception):
    """Base class: a problem with the user's input, files or run directory."""


class ConfigError(LatentjaxError):
    """A config file or an override is wrong."""


class WorkdirError(LatentjaxError):
    """A run directory is missing, incomplete, or holds a different run."""


class NonFiniteError(LatentjaxError):
    """Training produced NaN or Inf."""
