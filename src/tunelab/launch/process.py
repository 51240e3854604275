"""Local processes of a run, known by more than their pid.

A pid is reused after a process ends, and after a restart (a container's pids start again at 1 while its
/data volume keeps the old status.json) a recorded pgid can name an unrelated process group. So a run's
process is recorded with its start time (``/proc/<pid>/stat``, clock ticks after boot), the boot id and
the host, and every process TuneLab launches carries ``TUNELAB_RUN_ID=<run id>`` in its environment:
a group member counts as the run's only if it carries that marker. Nothing here signals a process that
fails these checks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RUN_ID_ENV = "TUNELAB_RUN_ID"
_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessRef:
    """Who runs a run on this machine: a process (group) identified beyond its number."""

    pid: int
    pgid: int
    start: int | None  # /proc/<pid>/stat field 22; None where there is no /proc
    boot: str
    host: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ProcessRef | None:
        if not values or "pid" not in values:
            return None
        return cls(
            pid=int(values["pid"]),
            pgid=int(values.get("pgid") or values["pid"]),
            start=values.get("start"),
            boot=values.get("boot", ""),
            host=values.get("host", ""),
        )

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        return cls(pid=pid, pgid=os.getpgid(pid), start=start_time(pid), boot=boot_id(), host=hostname())

    def on_this_machine(self) -> bool:
        if not self.host and not self.boot:  # recorded by an older TuneLab, which only ran runs locally
            return True
        return self.host == hostname() and self.boot == boot_id()


def hostname() -> str:
    return socket.gethostname()


def boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks after boot; None when it is gone or a zombie."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of stat; fields here start at field 3 (the state)


def _carries_marker(pid: int, run_id: str) -> bool:
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{RUN_ID_ENV}={run_id}".encode() in environ.split(b"\0")


def group_members(pgid: int, run_id: str) -> list[int]:
    """Live processes of group ``pgid`` that carry the run's marker."""
    out = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if (
            fields
            and fields[0] not in ("Z", "X")
            and int(fields[2]) == pgid
            and _carries_marker(int(entry.name), run_id)
        ):
            out.append(int(entry.name))
    return out


def is_alive(ref: ProcessRef | None, run_id: str) -> bool | None:
    """True while the run's process or a marked member of its group lives; None when it runs on another
    machine (nothing here can tell)."""
    if ref is None:
        return False
    if not ref.on_this_machine():
        return None
    if not _PROC.is_dir():  # no /proc: the pid alone, as well as can be done
        try:
            os.kill(ref.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if ref.start is not None and start_time(ref.pid) == ref.start:
        return True
    return bool(group_members(ref.pgid, run_id))


def signal_run(ref: ProcessRef | None, run_id: str, sig: int) -> bool:
    """Send ``sig`` to the run's process group (or its one process) if it is still the run's; never to the
    caller's own group. True when a signal was sent."""
    if ref is None or not is_alive(ref, run_id):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if ref.pgid != os.getpgid(0) and (
            start_time(ref.pid) == ref.start or group_members(ref.pgid, run_id)
        ):
            os.killpg(ref.pgid, sig)
            return True
        if start_time(ref.pid) == ref.start:
            os.kill(ref.pid, sig)
            return True
    return False


def kill_run(ref: ProcessRef | None, run_id: str) -> bool:
    return signal_run(ref, run_id, signal.SIGKILL)
