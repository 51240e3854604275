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


class DiskFullError(TuneLabError):
    """A write ran out of space; the message says what, where, and how much to free."""


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC anywhere in the chain, or a library's own error saying so (safetensors raises
    ``SafetensorError: ... No space left on device``, not an OSError)."""
    import errno

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "no space left on device" in str(error).lower():
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_message(what: str, folder, need_bytes: int = 0) -> str:
    import math

    free = min(_free(folder), 1 << 50)
    need_mb = max(1, math.ceil((max(need_bytes, 1 << 20) - free) / 1e6) + 1)
    return f"disk full while writing {what} in {folder}: free {need_mb} MB and resume"


class writing:  # noqa: N801 - used as a context manager, like contextlib's
    """``with writing("checkpoint step-5", folder, need_bytes):`` turns a full disk during the block into
    one DiskFullError naming what was written where, and how much space it needs."""

    def __init__(self, what: str, folder, need_bytes: int = 0):
        self.what, self.folder, self.need_bytes = what, folder, need_bytes

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or isinstance(error, DiskFullError) or not isinstance(error, Exception):
            return False
        # torch.save says only "file write failed" (a RuntimeError): a write error with the disk all but
        # full counts as a full disk too.
        if is_disk_full(error) or (
            isinstance(error, OSError | RuntimeError) and _free(self.folder) < ALMOST_FULL
        ):
            raise DiskFullError(disk_full_message(self.what, self.folder, self.need_bytes)) from error
        return False


ALMOST_FULL = 16 << 20


def _free(folder) -> int:
    import shutil

    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62
