"""Errors a user can cause. The CLI, the recipes and the app print their message, never a traceback."""


class TuneLabError(Exception):
    """An error caused by input or settings; its message says what is wrong and how to fix it."""


class ConfigError(TuneLabError):
    """An unknown key, a wrong type or an invalid combination of arguments."""


class DataError(TuneLabError):
    """A data file that cannot be used: unreadable, malformed, missing columns, bad labels, empty."""


class TrainingError(TuneLabError):
    """Training cannot go on: non-finite loss, out of memory."""


class HubError(TuneLabError):
    """Pushing to the Hugging Face Hub failed: bad token, network, refused repository."""
