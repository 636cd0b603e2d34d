"""vLLM's native multi-node mode, for real over sockets: ``--nnodes N --node-rank R
--master-addr A --master-port P`` (the ranks above 0 with ``--headless``).

vLLM's ranks meet at torch.distributed's TCP store on the head (``tcp://A:P``); here rank 0
listens on ``A:P`` (torch listens on every address; the simulator only on ``A``, so a test
never opens a port elsewhere) and every rank, rank 0 included, connects to it as a client.
Rank 0 goes on (loads, then serves) only once all ``N`` ranks have joined; a rank that
cannot reach the store retries until the timeout and fails with torch's line. Each rank keeps
its connection open: when one closes (a rank died, or the head went away) the others fail
the way vLLM does when NCCL loses a peer.

Log lines (vLLM 0.28 / torch 2.x wording; ``A:P`` and ranks filled in):

- headless rank: ``INFO … [serve.py:216] Launching vLLM (v0.28.0) headless multiproc executor,
  with head node address A:P for torch.distributed process group.``
- every rank, before joining: ``(Worker pid=…) INFO … [parallel_state.py:1400] world_size=2
  rank=R local_rank=0 distributed_init_method=tcp://A:P backend=nccl``
- while a rank cannot connect (stderr, each retry): ``[W… socket.cpp:767] [c10d] The client
  socket has failed to connect to [A]:P (errno: 111 - Connection refused).``
- once all joined: ``(Worker pid=…) INFO … [parallel_state.py:1713] rank R in world size 2 is
  assigned as DP rank 0, PP rank 0, PCP rank 0, TP rank R, EP rank N/A, EPLB rank N/A``
- cannot reach the store in time (exit 1): ``torch.distributed.DistNetworkError: The client
  socket has timed out after 600000ms while trying to connect to (A, P).``
- rank 0, not everyone joined in time (exit 1): ``torch.distributed.DistStoreError: Timed out
  after 601 seconds waiting for clients. 1/2 clients joined.``
- rank 0, port taken (exit 1): ``torch.distributed.DistNetworkError: The server socket has
  failed to listen on any local network address. port: P, useIpv6: false, code: -98, name:
  EADDRINUSE, message: address already in use``
- a peer lost after the world formed (exit 1): ``RuntimeError: NCCL error: remote process
  exited or there was a network error``, on rank 0 followed by the API server's
  ``vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack
  trace (above) for the root cause.``

The timeout is torch's default, 600 s, or ``VLLM_SIM_DIST_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import SimConfig
from .vlog import API, ENGINE, log_line

WORKER_PID = 120
HELLO_LIMIT = 4096


def worker_prefix(config: SimConfig) -> str:
    return f"(Worker pid={WORKER_PID + config.node_rank}) "


def global_rank(config: SimConfig) -> int:
    """This node's first rank: the ranks are spread evenly over the nodes."""
    return config.node_rank * (config.world_size // config.nnodes)


def init_method(config: SimConfig) -> str:
    return f"tcp://{config.master_addr}:{config.master_port}"


def headless_line(config: SimConfig) -> str:
    return log_line(
        "INFO", "serve.py:216",
        f"Launching vLLM (v{config.version}) headless multiproc executor, with head node "
        f"address {config.master_addr}:{config.master_port} for torch.distributed process "
        "group.",
    )


def init_line(config: SimConfig) -> str:
    return log_line(
        "INFO", "parallel_state.py:1400",
        f"world_size={config.world_size} rank={global_rank(config)} local_rank=0 "
        f"distributed_init_method={init_method(config)} backend=nccl",
        worker_prefix(config),
    )


def assigned_line(config: SimConfig) -> str:
    rank = global_rank(config)
    tp = config.tensor_parallel_size
    ep = str(rank) if config.enable_expert_parallel else "N/A"
    return log_line(
        "INFO", "parallel_state.py:1713",
        f"rank {rank} in world size {config.world_size} is assigned as DP rank 0, "
        f"PP rank {rank // tp}, PCP rank 0, TP rank {rank % tp}, EP rank {ep}, EPLB rank N/A",
        worker_prefix(config),
    )


def _c10d_stamp(now: float) -> str:
    local = time.localtime(now)
    return f"{time.strftime('%m%d %H:%M:%S', local)}.{int(now % 1 * 1e9):09d}"


def retry_line(config: SimConfig, exc: OSError, now: float | None = None) -> str:
    code = exc.errno or errno.ETIMEDOUT
    return (
        f"[W{_c10d_stamp(time.time() if now is None else now)} socket.cpp:767] [c10d] The "
        f"client socket has failed to connect to [{config.master_addr}]:{config.master_port} "
        f"(errno: {code} - {os.strerror(code)})."
    )


def connect_timeout_lines(config: SimConfig) -> list[str]:
    prefix = worker_prefix(config)
    ms = int(config.dist_timeout * 1000)
    return [
        log_line("ERROR", "multiproc_executor.py:772", "WorkerProc failed to start.", prefix),
        f"{prefix}Traceback (most recent call last):",
        f'{prefix}  File "/usr/local/lib/python3.12/dist-packages/vllm/distributed/'
        'parallel_state.py", line 1412, in init_distributed_environment',
        f"{prefix}    torch.distributed.init_process_group(",
        f"{prefix}torch.distributed.DistNetworkError: The client socket has timed out after "
        f"{ms}ms while trying to connect to ({config.master_addr}, {config.master_port}).",
    ]


def store_timeout_lines(config: SimConfig, joined: int) -> list[str]:
    prefix = worker_prefix(config)
    return [
        log_line("ERROR", "multiproc_executor.py:772", "WorkerProc failed to start.", prefix),
        f"{prefix}torch.distributed.DistStoreError: Timed out after "
        f"{int(config.dist_timeout) + 1} seconds waiting for clients. "
        f"{joined}/{config.nnodes} clients joined.",
    ]


def listen_failure_lines(config: SimConfig, exc: OSError) -> list[str]:
    prefix = worker_prefix(config)
    code = exc.errno or 0
    name = errno.errorcode.get(code, "UNKNOWN")
    return [
        log_line("ERROR", "multiproc_executor.py:772", "WorkerProc failed to start.", prefix),
        f"{prefix}torch.distributed.DistNetworkError: The server socket has failed to listen "
        f"on any local network address. port: {config.master_port}, useIpv6: false, code: "
        f"-{code}, name: {name}, message: {os.strerror(code).lower()}",
    ]


def peer_lost_lines(config: SimConfig) -> list[str]:
    nccl = "RuntimeError: NCCL error: remote process exited or there was a network error"
    if config.node_rank > 0:
        prefix = f"(Worker_TP{global_rank(config) % config.tensor_parallel_size} " \
            f"pid={WORKER_PID + config.node_rank}) "
        return [log_line("ERROR", "multiproc_executor.py:839", "WorkerProc hit an exception.",
                         prefix), f"{prefix}{nccl}"]
    return [
        log_line("ERROR", "core.py:1010", "EngineCore encountered a fatal error.", ENGINE),
        f"{ENGINE}{nccl}",
        log_line("ERROR", "async_llm.py:546", "AsyncLLM output_handler failed.", API),
        f"{API}vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. "
        "See stack trace (above) for the root cause.",
    ]


class DistFailure(Exception):
    """The world could not form; ``lines`` are what vLLM prints before exiting 1."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[-1] if lines else "distributed init failed")
        self.lines = lines


@dataclass
class _Member:
    rank: int
    writer: asyncio.StreamWriter


class Store:
    """Rank 0's rendezvous point: counts the ranks, says "ready" once all are in, and
    notices when one of them goes away."""

    def __init__(self, nnodes: int) -> None:
        self.nnodes = nnodes
        self.members: dict[int, _Member] = {}
        self.all_joined = asyncio.Event()
        self.lost = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._closing = False

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._handle, host, port, reuse_address=True, limit=HELLO_LIMIT
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = json.loads(await reader.readline() or b"{}")
        except ValueError:
            hello = {}
        rank = hello.get("rank")
        ok = (
            isinstance(rank, int) and 0 <= rank < self.nnodes and rank not in self.members
            and hello.get("nnodes") == self.nnodes and not self.all_joined.is_set()
        )
        if not ok:
            writer.write(json.dumps({"error": f"rank {rank} refused"}).encode() + b"\n")
            writer.close()
            return
        assert isinstance(rank, int)
        self.members[rank] = _Member(rank, writer)
        if len(self.members) == self.nnodes:
            for member in self.members.values():
                member.writer.write(b'{"ready": true}\n')
            self.all_joined.set()
        with contextlib.suppress(OSError):
            await reader.read()  # b"" once the rank's connection closes
        if not self._closing:
            self.lost.set()

    async def close(self) -> None:
        self._closing = True
        for member in self.members.values():
            member.writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                await self._server.wait_closed()


class World:
    """This rank's place in a formed world: ``lost`` is set when a peer goes away."""

    def __init__(self, store: Store | None, writer: asyncio.StreamWriter,
                 reader: asyncio.StreamReader) -> None:
        self.store = store
        self._writer = writer
        self.lost = asyncio.Event()
        self._watch = asyncio.ensure_future(self._watch_peer(reader))

    async def _watch_peer(self, reader: asyncio.StreamReader) -> None:
        if self.store is not None:
            await self.store.lost.wait()
        else:
            with contextlib.suppress(OSError):
                await reader.read()
        self.lost.set()

    async def close(self) -> None:
        self._watch.cancel()
        self._writer.close()
        if self.store is not None:
            await self.store.close()


async def _connect(
    config: SimConfig, deadline: float, stop: asyncio.Event, warn: Callable[[str], None]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Connect to the store, retrying like torch until ``deadline``; None when stopped."""
    delay = 0.2
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            raise DistFailure(connect_timeout_lines(config))
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(config.master_addr, config.master_port),
                timeout=min(left, 5.0),
            )
        except TimeoutError:
            warn(retry_line(config, OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))))
        except OSError as exc:
            warn(retry_line(config, exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 2.0)
    return None


async def form_world(
    config: SimConfig, stop: asyncio.Event, warn: Callable[[str], None]
) -> World | None:
    """Join (and on rank 0, host) the world; None when stopped meanwhile.

    Raises :class:`DistFailure` with vLLM's lines when it cannot form in time.
    """
    deadline = time.monotonic() + config.dist_timeout
    store: Store | None = None
    if config.node_rank == 0:
        store = Store(config.nnodes)
        try:
            await store.start(config.master_addr, config.master_port)
        except OSError as exc:
            raise DistFailure(listen_failure_lines(config, exc)) from exc
    try:
        connected = await _connect(config, deadline, stop, warn)
        if connected is None:
            return None
        reader, writer = connected
        hello = {"rank": config.node_rank, "nnodes": config.nnodes,
                 "world_size": config.world_size}
        writer.write(json.dumps(hello).encode() + b"\n")
        ready = asyncio.ensure_future(reader.readline())
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait(
            {ready, stopped}, timeout=max(0.0, deadline - time.monotonic()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        stopped.cancel()
        if stopped in done:
            ready.cancel()
            writer.close()
            return None
        if ready not in done:
            ready.cancel()
            writer.close()
            joined = len(store.members) if store is not None else 1
            raise DistFailure(store_timeout_lines(config, joined))
        answer = ready.result()
        if b'"ready"' not in answer:
            writer.close()
            raise DistFailure(connect_timeout_lines(config))
        return World(store, writer, reader)
    except BaseException:
        if store is not None:
            await store.close()
        raise
