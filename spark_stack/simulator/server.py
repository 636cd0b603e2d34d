"""Start, run and stop the simulated `vllm serve` (process edge: argv, env, stdout, signals)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from .app import SimApp
from .config import VLLM_VERSION, SimConfig, build_config
from .distributed import (
    DistFailure,
    World,
    assigned_line,
    form_world,
    global_rank,
    headless_line,
    init_line,
    peer_lost_lines,
)
from .flags import UsageError, find_flags_file, load_spec, parse_serve_args
from .httpserver import HttpProtocol
from .ray_world import RayWorld, place_ranks
from .vlog import (
    API,
    ENGINE,
    ENGINE_PID,
    failure_lines,
    log_line,
    serving_lines,
    startup_phases,
    uvicorn_lines,
)

TOP_USAGE = "usage: vllm [-h] [-v] {chat,complete,serve,bench,collect-env,run-batch} ..."


class _Log:
    """Writes vLLM log lines and flushes each one (container logs are read live)."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def line(self, prefix: str, level: str, where: str, message: str) -> None:
        self.out.write(log_line(level, where, message, prefix) + "\n")
        self.out.flush()

    def raw(self, text: str, error: bool = False) -> None:
        stream = self.err if error else self.out
        stream.write(text + "\n")
        stream.flush()


def config_from_argv(argv: Sequence[str], env: Mapping[str, str]) -> SimConfig:
    """Parse the arguments after `serve`; raise UsageError like vLLM's argparse."""
    flags_file = find_flags_file(argv) or env.get("VLLM_SIM_FLAGS_FILE")
    spec = load_spec(flags_file) if flags_file else None
    return build_config(parse_serve_args(argv, spec), env)


async def serve(
    config: SimConfig,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    ready: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the server until `stop` is set (or SIGTERM/SIGINT); return the exit code."""
    log = _Log(out or sys.stdout, err or sys.stderr)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread: the caller stops us through `stop`
    if await _download(config, stop):
        return 0
    phases = startup_phases(config)
    shown, failure = failure_lines(config)
    if failure:
        phases = phases[:shown]
    world: World | None = None
    placed: RayWorld | None = None
    headless = config.multi_node and config.node_rank > 0
    try:
        for phase in phases:
            if await _wait(stop, phase.weight * config.startup_seconds):
                return 0
            for prefix, level, where, message in phase.lines:
                if config.multi_node and world is None and message.startswith(LOAD_START):
                    world = await _form_world(config, log, stop)
                    if world is None:
                        return 0 if stop.is_set() else 1
                if config.ray_world and placed is None and message.startswith(LOAD_START):
                    placed = await _place_ranks(config, log, stop)
                    if placed is None:
                        return 0 if stop.is_set() else 1
                if headless and prefix == API:
                    continue
                log.line(_rank_prefix(config, prefix), level, where, message)
                if headless and message.startswith(PLATFORM_LINE):
                    log.raw(headless_line(config))
            if config.fail == "hang":
                await stop.wait()
                return 0
        if failure:
            for text in failure:
                log.raw(text, error=True)
            return 1
        if headless and world is not None:
            return await _run_headless(config, log, stop, world)
        return await _listen(config, log, stop, ready, world)
    finally:
        if world is not None:
            await world.close()
        if placed is not None:
            placed.close()


LOAD_START = "Starting to load model"
PLATFORM_LINE = "Automatically detected platform"


def _rank_prefix(config: SimConfig, prefix: str) -> str:
    """A headless rank's engine lines come from its worker process."""
    if config.multi_node and config.node_rank > 0 and prefix == ENGINE:
        rank = global_rank(config)
        return f"(Worker_TP{rank % config.tensor_parallel_size} pid={ENGINE_PID + rank}) "
    return prefix


async def _form_world(config: SimConfig, log: _Log, stop: asyncio.Event) -> World | None:
    """Meet the other ranks; None when stopped or failed (the failure lines are printed)."""
    log.raw(init_line(config))
    try:
        world = await form_world(config, stop, lambda text: log.raw(text, error=True))
    except DistFailure as failure:
        for text in failure.lines:
            log.raw(text, error=True)
        return None
    if world is not None:
        log.raw(assigned_line(config))
    return world


async def _place_ranks(config: SimConfig, log: _Log, stop: asyncio.Event) -> RayWorld | None:
    """Place the ranks on the Ray cluster; None when stopped or failed (lines printed)."""
    try:
        return await place_ranks(config, stop, log.raw)
    except DistFailure as failure:
        for text in failure.lines:
            log.raw(text, error=True)
        return None


async def _run_headless(config: SimConfig, log: _Log, stop: asyncio.Event, world: World) -> int:
    """A rank above 0 serves no API: it lives until stopped or a peer is lost."""
    if await _stopped_or_lost(stop, world):
        return 0
    for text in peer_lost_lines(config):
        log.raw(text, error=True)
    return 1


async def _stopped_or_lost(stop: asyncio.Event, world: World | None) -> bool:
    """Wait for a stop (True) or, in a multi-node world, a lost peer (False)."""
    if world is None:
        await stop.wait()
        return True
    stopped = asyncio.ensure_future(stop.wait())
    lost = asyncio.ensure_future(world.lost.wait())
    await asyncio.wait({stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    lost.cancel()
    return stop.is_set()


def hf_cache_dir(model: str, env: Mapping[str, str]) -> str:
    """Where huggingface_hub keeps ``model``'s files (``$HF_HOME/hub/models--org--name``)."""
    home = env.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub", "models--" + model.replace("/", "--"))


async def _download(config: SimConfig, stop: asyncio.Event) -> bool:
    """Grow the model's file in the HF cache as a first download does (nothing when it is
    already whole); True when stopped meanwhile."""
    if config.download_bytes <= 0:
        return False
    path = os.path.join(hf_cache_dir(config.model, os.environ), "blobs", "sim-weights")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    have = os.path.getsize(path) if os.path.exists(path) else 0
    steps = max(1, int(config.download_seconds * 10))
    step = max(1, (config.download_bytes - have + steps - 1) // steps)
    with open(path, "ab") as blob:
        while have < config.download_bytes:
            size = min(step, config.download_bytes - have)
            blob.write(b"\0" * size)
            blob.flush()
            have += size
            if await _wait(stop, config.download_seconds / steps):
                return True
    return False


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early if stopped; True when stopped."""
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _listen(
    config: SimConfig,
    log: _Log,
    stop: asyncio.Event,
    ready: Callable[[int], None] | None,
    world: World | None = None,
) -> int:
    app = SimApp(config)
    connections: set[HttpProtocol] = set()

    def on_error(exc: BaseException) -> None:
        log.raw(f"{API}ERROR Exception in ASGI application: {exc!r}", error=True)

    def factory() -> HttpProtocol:
        protocol = HttpProtocol(app, on_error)
        connections.add(protocol)
        return protocol

    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            factory, config.host or None, config.port, reuse_address=True, backlog=1024
        )
    except OSError as exc:
        log.raw(f"{API}ERROR:    {exc}", error=True)
        log.raw(f"{API}OSError: [Errno {exc.errno}] {os.strerror(exc.errno or 0)}", error=True)
        return 1
    port = server.sockets[0].getsockname()[1]
    for prefix, level, where, message in serving_lines(config, port):
        log.line(prefix, level, where, message)
    for text in uvicorn_lines():
        log.raw(text)
    if ready is not None:
        ready(port)
    stopped = True
    try:
        stopped = await _stopped_or_lost(stop, world)
        if not stopped:
            for text in peer_lost_lines(config):
                log.raw(text, error=True)
    finally:
        log.line(API, "INFO", "launcher.py:99", "Shutting down FastAPI HTTP server.")
        server.close()
        for protocol in list(connections):
            protocol.abort()
        await server.wait_closed()
    return 0 if stopped else 1


class SimHandle:
    """A simulator running on a thread of this process."""

    def __init__(self, config: SimConfig, out: TextIO) -> None:
        self.config = config
        self.log = out
        self.port = 0
        self.exit_code: int | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="vllm-simulator", daemon=True)

    @property
    def url(self) -> str:
        host = self.config.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._stop = asyncio.Event()
            self.exit_code = loop.run_until_complete(
                serve(
                    self.config, out=self.log, err=self.log, ready=self._on_ready, stop=self._stop
                )
            )
        finally:
            loop.close()
            self._ready.set()

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def start(self, timeout: float) -> SimHandle:
        self._thread.start()
        if not self._ready.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError(
                f"vLLM simulator did not start:\n{self.log.getvalue()}"
                if isinstance(self.log, io.StringIO)
                else "vLLM simulator did not start"
            )
        return self

    def stop(self, timeout: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # the loop closed in between: already stopped
        self._thread.join(timeout)

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    timeout: float = 10.0,
) -> SimHandle:
    """Start a simulator from `vllm serve` arguments; return once its port is open.

    `env` replaces os.environ for the simulator's variables; logs go to `out`
    (default: an in-memory buffer at `handle.log`).
    """
    config = config_from_argv(argv, os.environ if env is None else env)
    return SimHandle(config, out or io.StringIO()).start(timeout)


def _install_uvloop() -> None:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    uvloop.install()


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """`python -m <package> serve MODEL [flags]`: exit 2 on a bad command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    if args and args[0] in ("-v", "--version"):
        print(VLLM_VERSION)
        return 0
    if not args or args[0] != "serve":
        sys.stderr.write(
            f"{TOP_USAGE}\nvllm: error: the following arguments are required: subparser\n"
            if not args
            else f"{TOP_USAGE}\nvllm: error: argument subparser: invalid choice: '{args[0]}'\n"
        )
        return 2
    try:
        config = config_from_argv(args[1:], env)
    except UsageError as exc:
        sys.stderr.write(exc.render())
        sys.stderr.flush()
        return 2
    _install_uvloop()
    return asyncio.run(serve(config))
