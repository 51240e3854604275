"""How a running recipe learns that it should stop: SIGTERM, or the run's stop file.

Both become one flag. Every rank polls the run folder's ``stop.json`` from a small thread (the app, the
CLI or a sweep write it; it is never lost to a status write) and turns it into a
SIGTERM to itself. Before the training loop has begun, SIGTERM ends the recipe at once (``StopRequested``:
there is nothing to save yet); inside the loop it only sets the flag, and the loop checks it after every
optimizer step and between evaluation batches, on every rank at once (``accelerator.set_trigger`` /
``check_trigger``), saves a checkpoint and returns. The process exits 0.

A signal handler belongs to the whole process, so there is one ``StopControl`` per process
(``StopControl.install``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from .runs import STOP_FILE

POLL_S = 0.5
ATTEMPT_ENV = "TUNELAB_ATTEMPT_START"  # set by tunelab.launch: stop files older than this are stale


class StopRequested(BaseException):  # noqa: N818 - not an error: a request, like KeyboardInterrupt
    """A stop arrived before training began; the recipe ends "stopped" with nothing to save."""


class StopControl:
    """The stop flag of this process, fed by SIGTERM and by the run's stop file."""

    _current: ClassVar[StopControl | None] = None

    def __init__(self, run_dir: Path | None):
        self.requested = False
        self.in_loop = False
        self.reason = "stopped by request (SIGTERM)"
        self.run_dir = run_dir
        self.since = float(os.environ.get(ATTEMPT_ENV) or time.time())
        self._done = threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)
        if run_dir is not None:
            threading.Thread(target=self._watch, name="tunelab-stop-file", daemon=True).start()

    @classmethod
    def install(cls, run_dir: Path | None) -> StopControl:
        """The process's StopControl, created at the first call (later calls return the same one)."""
        if cls._current is None or (run_dir is not None and cls._current.run_dir != run_dir):
            if cls._current is not None:
                cls._current.close()
            cls._current = cls(run_dir)
        return cls._current

    def close(self) -> None:
        self._done.set()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.requested = True
        if not self.in_loop:
            raise StopRequested()

    def stop_file_request(self) -> dict[str, Any] | None:
        """The run's stop request, if it was made during this attempt."""
        import json

        if self.run_dir is None:
            return None
        path = self.run_dir / STOP_FILE
        try:
            request = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return request if float(request.get("time", 0)) >= self.since - 1.0 else None

    def _watch(self) -> None:
        while not self._done.wait(POLL_S):
            request = self.stop_file_request()
            if request is not None and not self.requested:
                self.reason = str(request.get("reason") or "stopped by request")
                if self.in_loop:
                    self.requested = True
                else:  # the main thread may be deep in data loading: the handler interrupts it there
                    os.kill(os.getpid(), signal.SIGTERM)
                return

    def check(self, accelerator) -> bool:
        """True on every rank once any rank was asked to stop (a collective when there are several)."""
        if accelerator.num_processes == 1:
            return self.requested
        if self.requested:
            accelerator.set_trigger()
        return accelerator.check_trigger()
