"""A host's live facts for ``top``: unified memory from ``/proc/meminfo``, GPU load and
temperature from ``nvidia-smi`` — one small script over the same kind of SSH connection
``status`` uses.

The GB10's CPU and GPU share one memory, and ``nvidia-smi`` answers its memory queries with
N/A: ``MemAvailable`` is the figure that says whether another model (or a long prefill) fits.
A :class:`HostWatch` keeps one connection open in a thread of its own and re-reads every
interval, reconnecting after a drop, so a slow or dead host never stalls the view.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable

from ..errors import SparkStackError
from ..host_facts import GpuFacts, HostFacts
from ..stack import schema
from .connector import HostConnection

SEPARATOR = "--- nvidia-smi"
SCRIPT = (
    f"cat /proc/meminfo; echo '{SEPARATOR}'; "
    "command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi "
    "--query-gpu=index,name,utilization.gpu,temperature.gpu --format=csv,noheader,nounits"
)
CONNECTING = "connecting"  # a watch's error until the host first answers
LOCAL = "this machine"  # the host of a stack whose models all run here (simulators)

# Opens a connection to a stack host: (host, trust_host_key) → connection.
OpenConnection = Callable[[schema.HostConfig, bool], HostConnection]


def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    """``MemTotal`` and ``MemAvailable`` in bytes (the file says kB, meaning KiB)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key in ("MemTotal", "MemAvailable") and parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    return values.get("MemTotal"), values.get("MemAvailable")


def parse_gpus(text: str) -> tuple[GpuFacts, ...]:
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus.append(GpuFacts(parts[0], parts[1], _number(parts[2]), _number(parts[3])))
    return tuple(gpus)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def facts_from_output(name: str, address: str, output: str) -> HostFacts:
    meminfo, _, smi = output.partition(SEPARATOR)
    total, available = parse_meminfo(meminfo)
    return HostFacts(name, address, True, None, total, available, parse_gpus(smi))


def read_facts(conn: HostConnection, name: str, address: str) -> HostFacts:
    done = conn.run_script(SCRIPT, timeout=10)
    return facts_from_output(name, address, done.stdout)


def read_local_facts() -> HostFacts:
    """This machine's facts, by the same script (for stacks that run only here)."""
    try:
        done = subprocess.run(["sh", "-c", SCRIPT], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return HostFacts(LOCAL, "localhost", False, str(exc))
    return facts_from_output(LOCAL, "localhost", done.stdout)


def open_ssh(host: schema.HostConfig, trust_host_key: bool) -> HostConnection:
    """The real :data:`OpenConnection`: paramiko, as ``status`` connects."""
    from .session import target_for
    from .ssh import connect

    return connect(target_for(host), trust_host_key=trust_host_key)


class HostWatch:
    """One host, read every ``interval`` seconds on a thread of its own."""

    def __init__(self, name: str, host: schema.HostConfig, *, trust_host_key: bool = False,
                 interval: float = 1.0, retry: float = 5.0,
                 open_connection: OpenConnection = open_ssh) -> None:
        self.name = name
        self.host = host
        self._trust = trust_host_key
        self._interval = interval
        self._retry = retry
        self._open = open_connection
        self._latest = HostFacts(name, host.address, False, CONNECTING)
        self._first = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"host-{name}", daemon=True)

    def start(self) -> HostWatch:
        self._thread.start()
        return self

    def latest(self) -> HostFacts:
        return self._latest

    def wait_first(self, timeout: float) -> HostFacts:
        """The first answer (or failure), waiting up to ``timeout`` s for it."""
        self._first.wait(timeout)
        return self._latest

    def stop(self, timeout: float = 2.0) -> None:
        """Stop reading and close the connection (waiting up to ``timeout`` s for a read in
        progress; the thread is a daemon, so a hung host never holds the process)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        conn: HostConnection | None = None
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = self._open(self.host, self._trust)
                    self._latest = read_facts(conn, self.name, self.host.address)
                    pause = self._interval
                except (SparkStackError, OSError) as exc:
                    message = exc.message if isinstance(exc, SparkStackError) else str(exc)
                    self._latest = HostFacts(self.name, self.host.address, False, message)
                    if conn is not None:
                        conn.close()
                        conn = None
                    pause = self._retry
                self._first.set()
                self._stop.wait(pause)
        finally:
            if conn is not None:
                conn.close()
