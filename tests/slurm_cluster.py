"""A real one-node Slurm cluster for the test suite (no mocks).

``SlurmCluster.start(workdir)`` writes a ``slurm.conf`` into a fresh folder, makes sure ``munged`` runs
(starting it, and creating the munge key, when needed), starts ``slurmctld`` and ``slurmd`` in the
foreground as child processes (pid files in the folder) and waits until ``sinfo`` reports the node idle.
Commands run against it with ``env={**os.environ, **cluster.env}`` (or ``cluster.run([...])``).
``stop()`` cancels the cluster's jobs and ends only the daemons this object started.

Facts this relies on (Slurm 22.05 as packaged by Debian, measured on the project's machines):

- No accounting database: ``sacct`` does not work; finished jobs are read from the jobcomp file
  (``JobCompType=jobcomp/filetxt``) once ``scontrol show job`` has forgotten them (``MinJobAge``).
- ``proctrack/linuxproc`` and ``task/none``: no cgroups needed. Job processes are tracked by parentage.
- The daemons run as root (``SlurmUser=root``), so ``start`` must run as root.

Usage in a test::

    cluster = SlurmCluster.start(tmp_path / "slurm")
    try:
        job_id = cluster.sbatch(["--wrap", "echo hi"])
        assert cluster.wait_for_state(job_id, {"COMPLETED", "FAILED"}) == "COMPLETED"
    finally:
        cluster.stop()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

INSTALL_HINT = "apt-get install -y slurm-wlm munge"
SLURM_BINARIES = ("slurmctld", "slurmd", "sinfo", "sbatch", "srun", "squeue", "scontrol", "scancel")
MUNGE_BINARIES = ("munged", "munge", "unmunge")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_DIRS = (Path("/etc/munge"), Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge"))
MUNGE_PID_FILE = Path("/run/munge/munged.pid")

#: States after which a job will not run again (unless requeued by hand).
FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)
# Unix socket paths are limited to 108 bytes; slurmd puts "<node>_<job>.<step>" sockets in its spool dir.
_MAX_SPOOL_PATH = 70


class SlurmNotInstalledError(RuntimeError):
    """Slurm or munge binaries are missing; the message says how to install them."""


def missing_binaries() -> list[str]:
    """The Slurm and munge programs that are not on PATH (or in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [name for name in SLURM_BINARIES + MUNGE_BINARIES if shutil.which(name, path=path) is None]


def _which(name: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(name, path=path)
    if found is None:
        raise SlurmNotInstalledError(f"{name} not found: install Slurm with `{INSTALL_HINT}`")
    return found


def _short_hostname() -> str:
    try:
        out = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True, timeout=10)
        name = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name or socket.gethostname().split(".")[0]


def _total_memory_mib() -> int:
    """MemTotal in MiB (what ``free -m`` shows as total)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("MemTotal missing from /proc/meminfo")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.1)
    return not _pid_alive(pid)


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _munge_works() -> bool:
    """True when a credential made by ``munge`` decodes with ``unmunge`` (i.e. munged is up)."""
    try:
        cred = subprocess.run([_which("munge"), "-n"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        check = subprocess.run([_which("unmunge")], input=cred.stdout, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return check.returncode == 0


def parse_scontrol_record(text: str) -> dict[str, str]:
    """``Key=Value`` pairs of one ``scontrol show ... -o`` (or jobcomp) line; values have no spaces
    except the last ones of the line (Command=, WorkDir= ... are taken to the next `` Key=``)."""
    fields: dict[str, str] = {}
    key = None
    for token in text.strip().split(" "):
        name, sep, value = token.partition("=")
        if sep and name and (name[0].isupper() or name[0].isdigit()) and " " not in name:
            key = name
            fields[key] = value
        elif key is not None:
            fields[key] += " " + token
    return fields


class SlurmCluster:
    """One ``slurmctld`` and one ``slurmd`` on this machine, with their files in ``workdir``.

    Attributes: ``workdir`` (the folder used, fresh for each start), ``conf`` (its slurm.conf),
    ``node`` (the node name), ``cpus``, ``memory_mib``, ``env`` (variables that point Slurm commands at
    this cluster), ``jobcomp`` (the jobcomp file), ``started_munged`` (whether this object started
    munged, and so stops it).
    """

    def __init__(
        self,
        workdir: Path,
        conf: Path,
        node: str,
        cpus: int,
        memory_mib: int,
        spool: Path,
        settings: Mapping[str, str],
    ) -> None:
        self.workdir = workdir
        self.conf = conf
        self.node = node
        self.cpus = cpus
        self.memory_mib = memory_mib
        self.spool = spool
        self.settings = dict(settings)
        self.jobcomp = workdir / "jobcomp.txt"
        self.ctld_pid_file = workdir / "slurmctld.pid"
        self.slurmd_pid_file = workdir / "slurmd.pid"
        self.ctld_log = workdir / "slurmctld.log"
        self.slurmd_log = workdir / "slurmd.log"
        self.marker = uuid.uuid4().hex
        self.env: dict[str, str] = {"SLURM_CONF": str(conf)}
        self.started_munged = False
        self._munged_pid: int | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._own_spool = False
        self._stopped = False

    # ----------------------------------------------------------------------------------------- start
    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        timeout: float = 30.0,
        cpus: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> SlurmCluster:
        """Write the config, start munged (if needed), slurmctld and slurmd; wait until the node is idle.

        ``workdir`` is created if missing; if it already holds files (a former cluster's), a fresh
        sub-folder is used instead, so stale state never leaks in. ``settings`` adds or overrides
        slurm.conf lines (``{"KillWait": "30"}``). Raises ``SlurmNotInstalledError`` (a RuntimeError
        naming ``apt-get install -y slurm-wlm munge``) when binaries are missing, RuntimeError when the
        cluster does not come up within ``timeout`` seconds; in both cases nothing is left running.
        """
        missing = missing_binaries()
        if missing:
            raise SlurmNotInstalledError(
                f"Slurm is not installed ({', '.join(missing)} missing): run `{INSTALL_HINT}`"
            )
        if os.geteuid() != 0:
            raise RuntimeError("the test Slurm cluster runs its daemons as root (SlurmUser=root)")

        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        if any(workdir.iterdir()):
            workdir = Path(tempfile.mkdtemp(prefix="cluster-", dir=workdir))
        spool = workdir / "spool"
        own_spool = False
        if len(str(spool)) > _MAX_SPOOL_PATH:
            spool = Path(tempfile.mkdtemp(prefix="slurmd-spool-"))
            own_spool = True
        (workdir / "state").mkdir()
        spool.mkdir(exist_ok=True)

        node = _short_hostname()
        ncpus = cpus or os.cpu_count() or 1
        memory = max(256, int(_total_memory_mib() * 0.9))
        merged = {**cls.default_settings(workdir, spool, node, ncpus, memory), **(settings or {})}
        conf = workdir / "slurm.conf"
        cluster = cls(workdir, conf, node, ncpus, memory, spool, merged)
        cluster._own_spool = own_spool
        conf.write_text(cluster.render_conf())
        try:
            cluster._ensure_munged()
            cluster._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(conf)], cluster.ctld_log)
            cluster._wait(
                lambda: cluster.run(["scontrol", "ping"], check=False).returncode == 0,
                timeout,
                "slurmctld to answer `scontrol ping`",
            )
            cluster._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(conf)], cluster.slurmd_log)
            cluster._wait(lambda: cluster.node_state() == "idle", timeout, "the node to be idle in sinfo")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @staticmethod
    def default_settings(workdir: Path, spool: Path, node: str, cpus: int, memory_mib: int) -> dict[str, str]:
        """The slurm.conf lines (key -> value), in order; NodeName and PartitionName last."""
        return {
            "ClusterName": "tunelab",
            "SlurmctldHost": node,
            "SlurmctldPort": str(_free_port()),
            "SlurmdPort": str(_free_port()),
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "StateSaveLocation": str(workdir / "state"),
            "SlurmdSpoolDir": str(spool),
            "SlurmctldLogFile": str(workdir / "slurmctld.log"),
            "SlurmdLogFile": str(workdir / "slurmd.log"),
            "SlurmctldPidFile": str(workdir / "slurmctld.pid"),
            "SlurmdPidFile": str(workdir / "slurmd.pid"),
            "SlurmctldDebug": "info",
            "SlurmdDebug": "info",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "MpiDefault": "none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/filetxt",
            "JobCompLoc": str(workdir / "jobcomp.txt"),
            "SchedulerType": "sched/backfill",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU",
            "SlurmdParameters": "config_overrides",
            "ReturnToService": "2",
            # Requeue: allowed by default for batch jobs; a requeued job starts again after its BeginTime.
            "JobRequeue": "1",
            # Seconds between SIGTERM and SIGKILL when a job is cancelled/requeued/times out.
            "KillWait": "10",
            # Finished jobs stay in `scontrol show job` this long (then only in the jobcomp file).
            "MinJobAge": "300",
            "InactiveLimit": "0",
            "MessageTimeout": "10",
            # A requeued job waits cred_expire + 1 s before it may start again (default 120 s); 5 is the
            # smallest value accepted (1 logs "AuthInfo=cred_expire=1 invalid" and keeps 120).
            "AuthInfo": "cred_expire=10",
            # Schedule at submit without the default 3 s batch delay; rerun the loops every second so a
            # requeued job starts as soon as its BeginTime passes (defaults: 60 s and 30 s).
            "SchedulerParameters": "batch_sched_delay=0,sched_interval=1,bf_interval=1",
            "MailProg": "/bin/true",
            "NodeName": f"{node} CPUs={cpus} RealMemory={memory_mib} State=UNKNOWN",
            "PartitionName": f"debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
        }

    def render_conf(self) -> str:
        lines = [f"# written by tests/slurm_cluster.py for {self.workdir}"]
        tail = ("NodeName", "PartitionName")
        lines += [f"{key}={value}" for key, value in self.settings.items() if key not in tail]
        lines += [f"{key}={self.settings[key]}" for key in tail if key in self.settings]
        return "\n".join(lines) + "\n"

    def _ensure_munged(self) -> None:
        if _munge_works():
            return
        if not MUNGE_KEY.exists():
            MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
            MUNGE_KEY.write_bytes(os.urandom(1024))
        for folder in MUNGE_DIRS:
            folder.mkdir(parents=True, exist_ok=True)
        # munged refuses keys and folders it does not own (owner munge, key mode 0400).
        subprocess.run(["chown", "-R", "munge:munge", *map(str, MUNGE_DIRS)], check=True, timeout=30)
        MUNGE_KEY.chmod(0o400)
        subprocess.run([_which("munged"), "--force"], check=True, capture_output=True, timeout=30)
        self.started_munged = True
        self._wait(_munge_works, 10, "munged to answer")
        self._munged_pid = _read_pid(MUNGE_PID_FILE)

    def _spawn(self, name: str, argv: list[str], log: Path) -> None:
        env = {**os.environ, **self.env, "TUNELAB_SLURM_CLUSTER": self.marker}
        with open(log.with_suffix(".out"), "ab") as out:
            self._procs[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode} while waiting for {what}\n{self.log_tail()}"
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the daemons' logs (for error messages)."""
        parts = []
        for log in (
            self.ctld_log,
            self.slurmd_log,
            self.ctld_log.with_suffix(".out"),
            self.slurmd_log.with_suffix(".out"),
        ):
            if log.exists():
                text = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # ------------------------------------------------------------------------------------- commands
    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (``["squeue", "-h"]``) against this cluster; text output captured."""
        env = {**os.environ, **self.env, **dict(kwargs.pop("env", {}) or {})}  # type: ignore[call-overload]
        return subprocess.run(
            list(argv), env=env, capture_output=True, text=True, check=check, timeout=timeout, **kwargs
        )  # type: ignore[call-overload]

    def sbatch(self, args: Sequence[str], **kwargs: object) -> int:
        """Submit with ``sbatch --parsable ARGS``; returns the job id."""
        out = self.run(["sbatch", "--parsable", *args], **kwargs)
        return int(out.stdout.strip().split(";")[0])

    def node_state(self) -> str:
        """The node's state as ``sinfo`` prints it (``idle``, ``alloc``, ``mix``, ``down*`` ...)."""
        out = self.run(["sinfo", "-h", "-N", "-n", self.node, "-o", "%t"], check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    def job_info(self, job_id: int | str) -> dict[str, str] | None:
        """``scontrol show job -o ID`` as a dict, or None once slurmctld has forgotten the job."""
        out = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        if out.returncode != 0 or not out.stdout.strip():
            return None
        return parse_scontrol_record(out.stdout.splitlines()[0])

    def jobcomp_records(self, job_id: int | str | None = None) -> list[dict[str, str]]:
        """Lines of the jobcomp file (one per time a job ended, requeues included), oldest first."""
        if not self.jobcomp.exists():
            return []
        records = [parse_scontrol_record(line) for line in self.jobcomp.read_text().splitlines() if line]
        if job_id is not None:
            records = [r for r in records if r.get("JobId") == str(job_id)]
        return records

    def job_state(self, job_id: int | str) -> str:
        """Slurm's state of the job (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT ...).

        From ``scontrol show job`` while slurmctld knows the job, else the job's last jobcomp line;
        ``"UNKNOWN"`` when neither has it.
        """
        info = self.job_info(job_id)
        if info is not None and "JobState" in info:
            return info["JobState"]
        records = self.jobcomp_records(job_id)
        if records:
            return records[-1].get("JobState", "UNKNOWN")
        return "UNKNOWN"

    def wait_for_state(
        self, job_id: int | str, states: Iterable[str], timeout: float = 60.0, poll: float = 0.2
    ) -> str:
        """Poll ``job_state`` until it is one of ``states``; returns it, or raises TimeoutError."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        state = self.job_state(job_id)
        while state not in wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} is {state}, not {sorted(wanted)}, after {timeout} s\n{self.log_tail()}"
                )
            time.sleep(poll)
            state = self.job_state(job_id)
        return state

    def job_ids(self) -> list[int]:
        """Ids of the jobs slurmctld holds that are not finished."""
        out = self.run(["squeue", "-h", "-o", "%A"], check=False)
        return [int(x) for x in out.stdout.split() if x.isdigit()] if out.returncode == 0 else []

    # ------------------------------------------------------------------------------------------ stop
    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the cluster's jobs, then end the daemons this object started (by their pid files'
        pids, never by name) and wait for them to exit. Safe to call twice and after a failed start."""
        if self._stopped:
            return
        self._stopped = True
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None and "slurmd" in self._procs:
            with contextlib.suppress(Exception):
                jobs = self.job_ids()
                if jobs:
                    self.run(["scancel", *map(str, jobs)], check=False)
                    deadline = time.monotonic() + int(self.settings.get("KillWait", "30")) + 10
                    while self.job_ids() and time.monotonic() < deadline:
                        time.sleep(0.2)
        for name, pid_file in (("slurmd", self.slurmd_pid_file), ("slurmctld", self.ctld_pid_file)):
            proc = self._procs.get(name)
            if proc is None:
                continue
            pid = _read_pid(pid_file)
            if pid != proc.pid:  # the pid file is written after start-up: fall back to our child's pid
                pid = proc.pid
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    proc.wait(10)
        self._kill_leftovers()
        if self.started_munged and self._munged_pid is not None and _pid_alive(self._munged_pid):
            os.kill(self._munged_pid, signal.SIGTERM)
            _wait_pid_gone(self._munged_pid, timeout)
        if self._own_spool:
            shutil.rmtree(self.spool, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """SIGKILL what survived the cancel: slurmstepd processes (they carry our marker from slurmd's
        environment) and job processes (SLURM_JOB_ID set and SLURM_CONF = our conf)."""
        me = os.getpid()
        ours = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            marked = f"TUNELAB_SLURM_CLUSTER={self.marker}".encode() in environ
            in_job = f"SLURM_CONF={self.conf}".encode() in environ and any(
                item.startswith(b"SLURM_JOB_ID=") for item in environ
            )
            if marked or in_job:
                ours.append(int(entry.name))
        for pid in ours:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in ours:
            _wait_pid_gone(pid, 5)

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
